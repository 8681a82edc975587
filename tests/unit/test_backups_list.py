"""`rescue list`: readable on an 80-column console, stable JSON, clear errors."""

from __future__ import annotations

import json

from rescue.cli import main
from rescue.errors import Exit

from test_backups_dirvish import make_image  # noqa: E402  (tests/unit is on sys.path)


def bank_with_everything(tmp_path):
    bank = tmp_path / "bank"
    make_image(bank, "root", "2026-1125-0300", tree="/", layout=True)
    make_image(bank, "root", "2026-1126-0300", tree="/", layout=True, status="error (23) -- partial transfer")
    make_image(bank, "home", "2026-1126-0300", tree="/home", legacy=True)
    make_image(bank, "home", "2026-1127-0300", tree="/home", status=None, log=False)
    make_image(bank, "web-a-rather-long-vault-name-for-the-www-root", "2026-1126-0300", client="web", tree="/")
    return bank


def test_text_output(tmp_path, capsys):
    bank = bank_with_everything(tmp_path)
    assert main(["list", "--bank", str(bank)]) == Exit.OK
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "Machine vm: 2 vaults"
    row = next(line for line in lines if "2026-1125-0300" in line)
    assert row.split() == ["*", "2026-1125-0300", "2026-11-25", "03:00", "success", "5", "B", "yes"]
    failed = next(line for line in lines if "2026-1126-0300" in line and "FAILED" in line)
    assert not failed.lstrip().startswith("*")
    assert "error (23) -- partial transfer" in out
    incomplete = next(line for line in lines if "2026-1127-0300" in line)
    assert "INCOMPLETE" in incomplete and incomplete.split()[-2:] == ["-", "no"]
    legacy = next(line for line in lines if "2026-1126-0300" in line and "legacy" in line)
    assert legacy.lstrip().startswith("*")
    assert "Machine web: 1 vault" in out
    assert f"  from dirvish {bank}" in lines
    assert all(len(line) <= 80 for line in lines if not line.startswith("  from "))


def test_image_date_moves_the_mark(tmp_path, capsys):
    bank = bank_with_everything(tmp_path)
    assert main(["list", "--bank", str(bank), "--image", "2026-11-25"]) == Exit.OK
    out = capsys.readouterr().out
    assert "no usable image at or before 2026-11-25" in out  # home has nothing that old
    assert main(["list", "--bank", str(bank), "--image", "yesterday"]) == Exit.ERROR
    assert "cannot read the date" in capsys.readouterr().err


def test_json_is_stable(tmp_path, capsys):
    bank = bank_with_everything(tmp_path)
    assert main(["list", "--bank", str(bank), "--json"]) == Exit.OK
    data = json.loads(capsys.readouterr().out)
    assert data["version"] == 1 and data["notes"] == []
    vm = data["machines"][0]
    assert vm["client"] == "vm"
    vaults = {v["name"]: v for v in vm["vaults"]}
    assert vaults["root"]["chosen"] == "2026-1125-0300"
    assert vaults["home"]["chosen"] == "2026-1126-0300"
    assert vaults["root"]["source"] == "/" and vaults["root"]["kind"] == "dirvish"
    img = vaults["root"]["images"][1]
    assert img["status"] == "failed" and img["status_text"] == "error (23) -- partial transfer"
    assert img["layout"] is True and img["size"] == 5
    assert set(img) >= {"name", "path", "tree", "client", "source", "status", "created", "size", "layout",
                        "layout_dir", "reference", "excludes", "flags"}
    assert vaults["home"]["images"][1]["size"] is None


def test_sizes_walks_only_trees_without_statistics(tmp_path, capsys):
    bank = tmp_path / "bank"
    d = make_image(bank, "root", "2026-1126-0300", tree="/", log=False)
    (d / "tree" / "big").write_bytes(b"x" * 3000)
    (d / "tree" / "twin").hardlink_to(d / "tree" / "big")  # counted once
    assert main(["list", "--bank", str(bank), "--json"]) == Exit.OK
    assert json.loads(capsys.readouterr().out)["machines"][0]["vaults"][0]["images"][0]["size"] is None
    assert main(["list", "--bank", str(bank), "--json", "--sizes"]) == Exit.OK
    size = json.loads(capsys.readouterr().out)["machines"][0]["vaults"][0]["images"][0]["size"]
    assert size == 3000 + len("data\n")


def test_errors_are_not_tracebacks(tmp_path, capsys):
    assert main(["list", "--bank", str(tmp_path / "nope")]) == Exit.ERROR
    err = capsys.readouterr().err
    assert err.startswith("rescue list: bank ") and "what to do:" in err and "Traceback" not in err
    assert main(["list", "--config", str(tmp_path / "master.conf")]) == Exit.ERROR


def test_empty_bank(tmp_path, capsys):
    (tmp_path / "bank").mkdir()
    assert main(["list", "--bank", str(tmp_path / "bank")]) == Exit.OK
    assert capsys.readouterr().out == "No vaults found.\n"


def test_default_is_the_dirvish_master_conf(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RESCUE_DIRVISH_MASTER", str(tmp_path / "master.conf"))
    assert main(["list"]) == Exit.ERROR
    err = capsys.readouterr().err
    assert "no backups given" in err and "--bank DIR" in err
    bank = bank_with_everything(tmp_path)
    (tmp_path / "master.conf").write_text(f"bank:\n\t{bank}\n")
    assert main(["list"]) == Exit.OK
    assert "Machine vm: 2 vaults" in capsys.readouterr().out


def test_rsnapshot_and_tree_in_one_listing(tmp_path, capsys):
    (tmp_path / "snap" / "daily.0" / "alpha" / "etc").mkdir(parents=True)
    (tmp_path / "copy" / "etc").mkdir(parents=True)
    assert main(["list", "--rsnapshot", str(tmp_path / "snap"), "--tree", str(tmp_path / "copy"),
                 "--client", "beta"]) == Exit.OK
    out = capsys.readouterr().out
    assert "Machine alpha: 1 vault" in out and "Machine beta: 1 vault" in out
    assert f"from rsnapshot {tmp_path / 'snap'}" in out and "from plain " in out
    assert "* daily.0" in out
