"""Dirvish banks read as data: summaries, statuses, layouts, choosing images.

The summaries and log are real: made by dirvish on this machine (see
tests/integration/test_backups_real.py, which does it again each run) and
kept in tests/unit/fixtures/dirvish/ with the paths renamed to /backup/demo.
Synthetic banks are written by the tests from those real files.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from rescue.backups import ImageStatus, choose_images, find_backups
from rescue.backups.dirvish import banks_from_master, parse_config, parse_date, rsync_stats, scan_bank
from rescue.errors import BackupError

FIX = Path(__file__).parent / "fixtures" / "dirvish"


def summary(client="vm", tree="/home", image="2026-1126-0300", now=None, status="success",
            reference="2026-1125-0300") -> str:
    """A real dirvish summary with its values replaced."""
    text = (FIX / "summary.success").read_text()
    if now is None:
        d = parse_date(image)
        now = d[0].strftime("%Y-%m-%d %H:%M:%S") if d else "2026-11-26 03:00:00"
    for key, value in (("client", client), ("tree", tree), ("Image", image),
                       ("Image-now", now), ("Reference", reference)):
        text = re.sub(rf"^{key}: .*$", lambda _m, k=key, v=value: f"{k}: {v}", text, flags=re.M)
    if status is None:
        text = re.sub(r"^(Backup-complete|Status): .*\n", "", text, flags=re.M)
    else:
        text = re.sub(r"^Status: .*$", lambda _m: f"Status: {status}", text, flags=re.M)
    return text


def make_image(bank: Path, vault: str, image: str, *, layout=False, legacy=False, log=True,
               write_summary=True, with_tree=True, **kw) -> Path:
    d = bank / vault / image
    d.mkdir(parents=True)
    if with_tree:
        (d / "tree").mkdir()
        (d / "tree" / "file").write_text("data\n")
    if write_summary:
        (d / "summary").write_text(summary(image=image, **kw))
    if log:
        (d / "log").write_text((FIX / "log.success").read_text())
    if layout:
        (d / "rescue").mkdir()
        (d / "rescue" / "layout.json").write_text("{}")
    if legacy:
        (d / "df.hda").write_text("Filesystem 1K-blocks Used Available Use% Mounted on\n")
    return d


def test_real_summary_is_parsed():
    data = parse_config((FIX / "summary.success").read_text())
    assert data["client"] == "vm"
    assert data["Image"] == "2026-1126-0300"
    assert data["Reference"] == "2026-1125-0300"
    assert data["exclude"] == ["lost+found/", "*~"]
    assert "xdev" in data["SET"] and "sparse" in data["UNSET"]
    assert data["Status"] == "success"
    assert data["ACTION"].startswith("rsync -vrltH")


def test_real_failed_summary_is_failed(tmp_path):
    d = tmp_path / "bank" / "gone" / "2026-1126-0300"
    (d / "tree").mkdir(parents=True)
    (d / "summary").write_text((FIX / "summary.failed").read_text())
    [vault] = scan_bank(tmp_path / "bank")
    [image] = vault.images
    assert image.status is ImageStatus.FAILED
    assert image.status_text == "error (23) -- partial transfer"
    assert image.source == "/backup/demo/nosuch"


def test_rsync_stats_from_real_log():
    assert rsync_stats((FIX / "log.success").read_text()) == (5, 4)
    assert rsync_stats("Number of files: 1,234,567 (reg: 1)\nTotal file size: 9,876,543,210 bytes\n") == (
        9876543210, 1234567)
    assert rsync_stats("garbage") == (None, None)


def test_images_vaults_machines(tmp_path):
    bank = tmp_path / "bank"
    make_image(bank, "root", "2026-1125-0300", tree="/", layout=True)
    make_image(bank, "root", "2026-1126-0300", tree="/", legacy=True)
    make_image(bank, "home", "2026-1126-0300", tree="/home")
    make_image(bank, "web-root", "2026-1126-0300", client="web", tree="/")
    (bank / "lost+found").mkdir()
    found = find_backups([bank])
    assert [m.client for m in found.machines] == ["vm", "web"]
    vm = found.machine("vm")
    assert [v.name for v in vm.vaults] == ["home", "root"]
    root = vm.vaults[1]
    assert [i.name for i in root.images] == ["2026-1125-0300", "2026-1126-0300"]
    old, new = root.images
    assert old.layout_dir == old.path / "rescue"
    assert new.layout_dir == new.path  # legacy df.N files
    assert vm.vaults[0].images[0].layout_dir is None
    assert old.source == "/" and old.client == "vm" and old.size == 5 and old.files == 4
    assert old.created == "2026-11-25T03:00:00"
    assert old.tree == old.path / "tree"
    assert "xdev" in old.flags and old.excludes == ("lost+found/", "*~")
    with pytest.raises(BackupError, match="no backups of a machine named nosuch"):
        found.machine("nosuch")


def test_incomplete_and_failed(tmp_path):
    bank = tmp_path / "bank"
    make_image(bank, "root", "2026-1124-0300")
    make_image(bank, "root", "2026-1125-0300", status="error (23) -- partial transfer")
    make_image(bank, "root", "2026-1126-0300", status=None)  # still running: no Status yet
    make_image(bank, "root", "2026-1127-0300", write_summary=False)  # died before the summary
    make_image(bank, "root", "2026-1128-0300", with_tree=False)  # success but tree/ gone
    images = {i.name: i for i in scan_bank(bank)[0].images}
    assert images["2026-1124-0300"].status is ImageStatus.SUCCESS
    assert images["2026-1125-0300"].status is ImageStatus.FAILED
    assert images["2026-1126-0300"].status is ImageStatus.INCOMPLETE
    assert images["2026-1127-0300"].status is ImageStatus.INCOMPLETE
    assert images["2026-1128-0300"].status is ImageStatus.FAILED
    assert "no tree" in images["2026-1128-0300"].status_text


def test_vault_without_images_takes_client_from_default_conf(tmp_path):
    bank = tmp_path / "bank"
    (bank / "fresh" / "dirvish").mkdir(parents=True)
    (bank / "fresh" / "dirvish" / "default.conf").write_text("client: newbox\ntree: /srv # data\n")
    found = find_backups([bank])
    [vault] = found.vaults
    assert vault.client == "newbox" and vault.configured_source == "/srv"
    with pytest.raises(BackupError, match="vault fresh .* has no usable image"):
        choose_images(found.machine("newbox"))


def test_master_conf_banks(tmp_path):
    bank1, bank2 = tmp_path / "b1", tmp_path / "b2"
    make_image(bank1, "root", "2026-1126-0300")
    make_image(bank2, "home", "2026-1126-0300", tree="/home")
    conf = tmp_path / "master.conf"
    conf.write_text(f"bank:\n\t{bank1}\n\t{bank2}\nexclude:\n\tcore\nRunall:\n\troot\t22:00\n")
    assert banks_from_master(conf) == (bank1, bank2)
    found = find_backups(config=conf)
    assert [v.name for v in found.machine("vm").vaults] == ["root", "home"]
    empty = tmp_path / "empty.conf"
    empty.write_text("exclude:\n\tcore\n")
    with pytest.raises(BackupError, match="names no bank"):
        banks_from_master(empty)
    with pytest.raises(BackupError, match="cannot read the dirvish configuration"):
        banks_from_master(tmp_path / "nope.conf")


def test_missing_bank_is_a_clear_error(tmp_path):
    with pytest.raises(BackupError, match="does not exist") as e:
        find_backups([tmp_path / "nope"])
    assert "--bank" in e.value.fix


# --------------------------------------------------------------------------- choose_images


@pytest.fixture
def two_vaults(tmp_path):
    bank = tmp_path / "bank"
    for name in ("2026-1124-0300", "2026-1125-0300", "2026-1126-0300"):
        make_image(bank, "root", name, tree="/")
    make_image(bank, "home", "2026-1124-0300", tree="/home")
    make_image(bank, "home", "2026-1125-0300", tree="/home", status="fatal error (12) -- protocol")
    make_image(bank, "home", "2026-1126-0300", tree="/home", status=None)
    return find_backups([bank]).machine("vm")


def names(images):
    return {i.vault: i.name for i in images}


def test_choose_newest_success_skipping_failed_and_incomplete(two_vaults):
    assert names(choose_images(two_vaults)) == {"root": "2026-1126-0300", "home": "2026-1124-0300"}


@pytest.mark.parametrize("at", ["2026-1125-0300", "2026-11-25", "2026-11-25T03:00", "2026-11-25 12:00",
                                "20261125"])
def test_choose_at_or_before(two_vaults, at):
    assert names(choose_images(two_vaults, at)) == {"root": "2026-1125-0300", "home": "2026-1124-0300"}


def test_choose_before_any_image_names_the_vault(two_vaults):
    with pytest.raises(BackupError) as e:
        choose_images(two_vaults, "2026-11-23")
    assert "vault home" in e.value.what and "at or before 2026-11-23" in e.value.what
    assert "later --image" in e.value.fix


def test_exact_name_that_is_not_a_date(tmp_path):
    bank = tmp_path / "bank"
    make_image(bank, "root", "weekly-a", now="2026-11-20 03:00:00")
    make_image(bank, "root", "weekly-b", now="2026-11-27 03:00:00", status="error (23) -- partial transfer")
    vm = find_backups([bank]).machine("vm")
    assert names(choose_images(vm, "weekly-a")) == {"root": "weekly-a"}
    assert names(choose_images(vm)) == {"root": "weekly-a"}
    with pytest.raises(BackupError, match="weekly-b of vault root is not usable"):
        choose_images(vm, "weekly-b")


def test_bad_date_is_a_clear_error(two_vaults):
    with pytest.raises(BackupError, match="cannot read the date") as e:
        choose_images(two_vaults, "last tuesday")
    assert "2026-1126-0300" in e.value.fix


def test_only_failed_images_says_which_vault_and_what(tmp_path):
    bank = tmp_path / "bank"
    make_image(bank, "gone", "2026-1126-0300", status="error (23) -- partial transfer")
    with pytest.raises(BackupError) as e:
        choose_images(find_backups([bank]).machine("vm"))
    assert "vault gone" in e.value.what
    assert "error (23) -- partial transfer" in e.value.why
    assert "dirvish --vault gone" in e.value.fix


def test_vanished_files_warning_is_usable_and_chosen(tmp_path):
    """dirvish writes 'warning (24)' when files vanished while rsync ran (any live system)."""
    bank = tmp_path / "bank"
    make_image(bank, "root", "2026-1124-0300")
    make_image(bank, "root", "2026-1125-0300", status="warning (24) -- file vanished on sender")
    make_image(bank, "root", "2026-1126-0300", status="error (23) -- partial transfer")
    vault = scan_bank(bank)[0]
    images = {i.name: i for i in vault.images}
    assert images["2026-1125-0300"].status is ImageStatus.WARNING
    assert images["2026-1125-0300"].usable
    assert not images["2026-1126-0300"].usable
    machine = find_backups(banks=[bank]).machine("vm")
    assert [i.name for i in choose_images(machine, None)] == ["2026-1125-0300"]
