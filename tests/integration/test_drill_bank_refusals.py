"""`rescue drill --bank` reads the bank first: bad input is refused before anything is made.

A real dirvish bank (two nightly images, rescue capture as hook) of a demo
machine. A missing bank, an unknown client, a date before every image and a
copy of the bank without captured layouts each end in the error a person can
act on and a non-zero exit, with no work folder made and the bank unchanged.
A good --image DATE picks the older image and the layout captured with it.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from rescue.cli import main
from rescue.demo import DemoBank, DemoMachine, make_bank
from rescue.drill.bank import BankOptions, choose
from rescue.errors import Exit
from rescue.qemu import Firmware
from rescue.demo.trees import tree_digest as bank_digest
from rescue.run import run




@pytest.fixture(scope="module")
def demo_bank(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoBank]:
    top = tmp_path_factory.mktemp("drill-bank")
    with DemoMachine(top / "m", label="dos", home_fs="xfs") as m:
        bank = make_bank(m, top / "bank")
    yield bank


@pytest.fixture(scope="module")
def bank_without_layouts(demo_bank: DemoBank) -> Path:
    """The same images as if dirvish had run without the capture hook."""
    copy = demo_bank.bank.parent / "bank-no-layout"
    run(["cp", "-a", str(demo_bank.bank), str(copy)])
    for layout_dir in copy.glob("*/*/rescue"):
        shutil.rmtree(layout_dir)
    return copy


def drill(argv: list[str], work: Path) -> int:
    return main(["drill", *argv, "--workdir", str(work)])


@pytest.mark.parametrize("case", ["missing bank", "unknown client", "date before every image", "no layout"])
def test_bad_input_is_refused_with_the_reason_and_nothing_is_written(
        case: str, demo_bank: DemoBank, bank_without_layouts: Path, tmp_path: Path, capsys) -> None:
    bank, client = demo_bank.bank, demo_bank.client
    argv, code, said = {
        "missing bank": (["--bank", str(tmp_path / "no-such-bank"), "--client", client],
                         Exit.ERROR, "does not exist"),
        "unknown client": (["--bank", str(bank), "--client", "web9"], Exit.ERROR,
                           "no backups of a machine named web9"),
        "date before every image": (["--bank", str(bank), "--client", client, "--image", "2001-0101"],
                                    Exit.ERROR, "has no usable image at or before 2001-0101"),
        "no layout": (["--bank", str(bank_without_layouts), "--client", client], Exit.REFUSED,
                      "no disk layout was captured"),
    }[case]
    digests = {b: bank_digest(b) for b in (bank, bank_without_layouts)}
    var_tmp = set(Path("/var/tmp").glob("rescue-drill-*"))
    work = tmp_path / "work"

    got = drill(argv, work)

    out, err = capsys.readouterr()
    assert got == int(code), err
    assert "working in" not in out, "the drill started before it read the bank"
    assert said in err
    assert "what to do:" in err and "Traceback" not in err
    assert not work.exists(), "the work folder was made for a refused drill"
    assert set(Path("/var/tmp").glob("rescue-drill-*")) == var_tmp
    assert {b: bank_digest(b) for b in digests} == digests


def test_an_image_date_picks_the_older_image_and_its_layout(demo_bank: DemoBank, tmp_path: Path) -> None:
    older, newer = demo_bank.images
    before = bank_digest(demo_bank.bank)
    work = tmp_path / "work"

    newest = choose(BankOptions(bank=demo_bank.bank, client=demo_bank.client, workdir=work))
    chosen = choose(BankOptions(bank=demo_bank.bank, client=demo_bank.client, image=older, workdir=work))

    assert {i.name for i in newest.images} == {newer}
    assert {i.name for i in chosen.images} == {older}
    assert {i.vault for i in chosen.images} == {v for v, _ in demo_bank.vaults}
    assert chosen.firmware is Firmware.BIOS  # captured from a dos disk with no ESP
    assert chosen.layout.filesystem_at("/") is not None
    assert chosen.disk_size == 1 << 30 and chosen.need > 0
    assert not work.exists()
    assert bank_digest(demo_bank.bank) == before
