"""A hostile bank: odd names, `$(...)` in summaries, links out of the bank.

Nothing may be executed, nothing outside the bank followed, and every odd
name printed escaped on one line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from rescue.backups import ImageStatus, choose_images, find_backups
from rescue.backups.dirvish import printable, shown
from rescue.cli import main

FIX = Path(__file__).parent / "fixtures" / "dirvish"


def hostile_summary(canary: Path) -> str:
    text = (FIX / "summary.success").read_text()
    return (text.replace("client: vm", f"client: vm$(touch {canary})")
                .replace("tree: /backup/demo/src", f"tree: /home`touch {canary}`;rm -rf /"))


def image(d: Path, summary: str) -> None:
    (d / "tree").mkdir(parents=True)
    (d / "summary").write_text(summary)


def test_shown_escapes_and_quotes():
    assert shown("2026-1126-0300") == "2026-1126-0300"
    assert shown("a\nb") == "'a\\nb'"
    assert shown("$(rm -rf /)") == "'$(rm -rf /)'"
    assert shown("it's") == "'it'\\''s'"
    assert shown("caf\udce9") == "'caf\\xe9'"  # a Latin-1 byte that is not UTF-8
    assert shown("tab\there") == "'tab\\there'"
    assert "\n" not in printable("x\ny\rz\x1b[31m")


def test_hostile_names_and_values_are_data(tmp_path, capsys):
    canary = tmp_path / "EXECUTED"
    bank = tmp_path / "bank"
    odd = ["new\nline", "$(touch EXECUTED)", "semi;colon&amp|pipe", "`back`", "..dots..", "sp ace"]
    for name in odd:
        image(bank / name / "2026-1126-0300", hostile_summary(canary))
    image(bank / "root" / "img\n$(reboot)", hostile_summary(canary))
    found = find_backups([bank])
    assert not canary.exists()
    [machine] = found.machines
    assert machine.client == f"vm$(touch {canary})"
    assert sorted(v.name for v in machine.vaults) == sorted(odd + ["root"])
    for v in machine.vaults:
        assert v.images[0].source == f"/home`touch {canary}`;rm -rf /"
        assert v.images[0].status is ImageStatus.SUCCESS
    assert len(choose_images(machine)) == len(odd) + 1

    assert main(["list", "--bank", str(bank)]) == 0
    out = capsys.readouterr().out
    assert not canary.exists()
    assert "'new\\nline'" in out and "'img\\n$(reboot)'" in out
    for line in out.splitlines():  # no name broke a line or carries a raw control character
        assert line.isprintable()
    assert main(["list", "--bank", str(bank), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {v["name"] for v in data["machines"][0]["vaults"]} == set(odd + ["root"])


def test_links_out_of_the_bank_are_not_followed(tmp_path, capsys):
    outside = tmp_path / "outside"
    (outside / "vault" / "2026-1126-0300" / "tree").mkdir(parents=True)
    (outside / "vault" / "2026-1126-0300" / "summary").write_text((FIX / "summary.success").read_text())
    (outside / "secret").write_text("Status: success\nclient: stolen\n")
    (outside / "layout").mkdir()
    (outside / "layout" / "layout.json").write_text("{}")
    bank = tmp_path / "bank"
    bank.mkdir()
    os.symlink(outside / "vault", bank / "evil-vault")  # a vault that is a link out
    d = bank / "root" / "2026-1126-0300"
    d.mkdir(parents=True)
    os.symlink(outside / "secret", d / "summary")  # a summary that is a link out
    os.symlink(outside / "vault" / "2026-1126-0300" / "tree", d / "tree")
    os.symlink(outside / "layout", d / "rescue")
    os.symlink(outside / "vault" / "2026-1126-0300", bank / "root" / "2026-1127-0300")  # image link out
    inner = bank / "root" / "2026-1125-0300"
    image(inner, (FIX / "summary.init").read_text())
    os.symlink(outside, inner / "tree" / "escape")  # links inside a tree are data, never walked

    found = find_backups([bank])
    assert [v.name for v in found.vaults] == ["root"]
    imgs = {i.name: i for i in found.vaults[0].images}
    assert set(imgs) == {"2026-1125-0300", "2026-1126-0300"}
    bad = imgs["2026-1126-0300"]
    assert bad.client == "" and bad.status is ImageStatus.INCOMPLETE  # the outside summary was not read
    assert bad.layout_dir is None
    assert all(outside not in Path(i.tree).parents for i in imgs.values())
    notes = "\n".join(found.notes)
    assert "evil-vault: a link in the bank, not followed" in notes
    assert "summary: a link out of the bank, not followed" in notes
    assert "2026-1127-0300: a link out of the bank, not followed" in notes

    assert main(["list", "--bank", str(bank), "--sizes"]) == 0
    out = capsys.readouterr().out
    assert "stolen" not in out and "note: " in out


def test_a_bank_that_is_a_link_is_fine(tmp_path):
    """/backup -> /mnt/disk/backup is common: the bank itself may be a link."""
    real = tmp_path / "real"
    image(real / "root" / "2026-1126-0300", (FIX / "summary.success").read_text())
    os.symlink(real, tmp_path / "bank")
    found = find_backups([tmp_path / "bank"])
    assert found.vaults[0].images[0].status is ImageStatus.SUCCESS
    assert not found.notes


def test_huge_summary_is_read_only_in_part(tmp_path):
    d = tmp_path / "bank" / "root" / "2026-1126-0300"
    (d / "tree").mkdir(parents=True)
    with open(d / "summary", "w") as f:
        f.write("client: vm\n")
        f.write("exclude:\n" + "\tx\n" * 600_000)  # 1.8 MB: past the 1 MiB read limit
        f.write("Status: success\n")
    [vault] = find_backups([tmp_path / "bank"]).vaults
    assert vault.images[0].status is ImageStatus.INCOMPLETE  # the Status line was never reached
