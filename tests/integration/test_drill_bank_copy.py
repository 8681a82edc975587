"""`rescue drill --bank` copies the chosen images of a real bank; the source is only read."""

from __future__ import annotations

from pathlib import Path

from rescue.backups.discover import choose_images, find_backups
from rescue.demo import DemoMachine, diff_trees, make_bank, snapshot
from rescue.drill.bank import copy_images


def test_the_chosen_images_are_copied_whole_and_the_bank_is_not_touched(tmp_path: Path) -> None:
    with DemoMachine(tmp_path / "m", label="gpt", home_fs="xfs") as m:
        bank = make_bank(m, tmp_path / "bank")
    before = snapshot(tmp_path / "bank", one_filesystem=False)

    machine = find_backups([bank.bank]).machine(bank.client)
    chosen = choose_images(machine)
    assert {i.name for i in chosen} == {bank.images[-1]}
    copied = copy_images(chosen, tmp_path / "copy")
    assert copied > 0

    # the copy is a bank the restore can read: same machine, same newest images, layouts included
    again = find_backups([tmp_path / "copy"]).machine(bank.client)
    assert {(v.name, tuple(i.name for i in v.images)) for v in again.vaults} == {
        (v, (bank.images[-1],)) for v, _ in bank.vaults}
    for vault, _ in bank.vaults:
        src, dst = bank.image_dir(vault), tmp_path / "copy" / vault / bank.images[-1]
        assert diff_trees(src / "tree", dst / "tree", times=True) == []
        assert (dst / "rescue" / "layout.json").read_bytes() == (src / "rescue" / "layout.json").read_bytes()
        assert (dst / "summary").is_file()
    # only the newest image was copied, and the source bank is exactly as it was
    assert not any((tmp_path / "copy" / v / bank.images[0]).exists() for v, _ in bank.vaults)
    assert snapshot(tmp_path / "bank", one_filesystem=False) == before
