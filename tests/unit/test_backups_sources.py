"""rsnapshot roots and plain folders on the same vault/image/machine model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rescue.backups import ImageStatus, SourceKind, choose_images, find_backups
from rescue.errors import BackupError


def snap(root: Path, interval: str, host: str, mtime: float, layout=False) -> None:
    d = root / interval / host
    (d / "etc").mkdir(parents=True)
    (d / "etc" / "hostname").write_text(host + "\n")
    (d / "home" / "ann").mkdir(parents=True)
    if layout:
        (root / interval / ".rescue" / host).mkdir(parents=True)
        (root / interval / ".rescue" / host / "layout.json").write_text("{}")
    os.utime(root / interval, (mtime, mtime))


def test_rsnapshot_root(tmp_path):
    root = tmp_path / "snapshots"
    base = 1_790_000_000.0
    snap(root, "daily.0", "alpha", base, layout=True)
    snap(root, "daily.1", "alpha", base - 86400)
    snap(root, "weekly.0", "alpha", base - 7 * 86400)
    snap(root, "daily.0", "beta", base)
    snap(root, ".sync", "alpha", base + 3600)
    (root / "notes.txt").write_text("not an interval")
    found = find_backups(rsnapshot_roots=[root])
    assert [m.client for m in found.machines] == ["alpha", "beta"]
    [vault] = found.machine("alpha").vaults
    assert vault.kind is SourceKind.RSNAPSHOT and vault.name == "alpha"
    assert [i.name for i in vault.images] == ["weekly.0", "daily.1", "daily.0", ".sync"]
    newest = vault.images[2]
    assert newest.tree == root.resolve() / "daily.0" / "alpha"
    assert newest.source == "/" and newest.status is ImageStatus.SUCCESS
    assert newest.layout_dir == root.resolve() / "daily.0" / ".rescue" / "alpha"
    assert vault.images[1].layout_dir is None
    assert vault.images[3].status is ImageStatus.INCOMPLETE  # a run in progress
    assert [i.name for i in choose_images(found.machine("alpha"))] == ["daily.0"]
    assert [i.name for i in choose_images(found.machine("alpha"), "daily.1")] == ["daily.1"]
    with pytest.raises(BackupError, match="not usable"):
        choose_images(found.machine("alpha"), ".sync")


def test_rsnapshot_missing_root(tmp_path):
    with pytest.raises(BackupError, match="rsnapshot root .* does not exist"):
        find_backups(rsnapshot_roots=[tmp_path / "nope"])


def test_plain_folder(tmp_path):
    tree = tmp_path / "copy-of-box"
    (tree / "etc").mkdir(parents=True)
    found = find_backups(trees=[tree], client="box")
    [machine] = found.machines
    assert machine.client == "box"
    [image] = choose_images(machine)
    assert image.kind is SourceKind.PLAIN and image.tree == tree.resolve() and image.source == "/"
    assert image.layout_dir is None
    assert find_backups(trees=[tree]).machines[0].client == "copy-of-box"


def test_plain_folder_that_is_a_dirvish_tree_finds_its_layout(tmp_path):
    image_dir = tmp_path / "bank" / "root" / "2026-1126-0300"
    (image_dir / "tree").mkdir(parents=True)
    (image_dir / "rescue").mkdir()
    (image_dir / "rescue" / "layout.json").write_text("{}")
    [vault] = find_backups(trees=[image_dir / "tree"]).vaults
    assert vault.name == "2026-1126-0300"
    assert vault.images[0].layout_dir == image_dir.resolve() / "rescue"


def test_plain_folder_errors(tmp_path):
    with pytest.raises(BackupError, match="does not exist"):
        find_backups(trees=[tmp_path / "nope"])
    (tmp_path / "file").write_text("x")
    with pytest.raises(BackupError, match="is not a folder"):
        find_backups(trees=[tmp_path / "file"])


def test_rsnapshot_order_decides_not_folder_times(tmp_path, capsys):
    """Runs in the same second leave equal folder times: rsnapshot's own order decides.

    The tie used to go to the name, so daily.1 was marked as the image a restore would use.
    """
    from rescue.cli import main

    root = tmp_path / "snapshots"
    same = 1_790_000_000.0
    for name in ("daily.1", "daily.0", "hourly.2", "hourly.1", "hourly.0", "weekly.0"):
        snap(root, name, "alpha", same)
    [vault] = find_backups(rsnapshot_roots=[root]).machine("alpha").vaults
    assert [i.name for i in vault.images] == ["weekly.0", "daily.1", "daily.0", "hourly.2", "hourly.1", "hourly.0"]
    assert [i.name for i in choose_images(find_backups(rsnapshot_roots=[root]).machine("alpha"))] == ["hourly.0"]
    assert main(["list", "--rsnapshot", str(root)]) == 0
    starred = [ln for ln in capsys.readouterr().out.splitlines() if ln.lstrip().startswith("* ") and "=" not in ln]
    assert len(starred) == 1 and "hourly.0" in starred[0], starred

    only_daily = tmp_path / "daily-only"
    snap(only_daily, "daily.1", "beta", same)
    snap(only_daily, "daily.0", "beta", same)
    assert [i.name for i in choose_images(find_backups(rsnapshot_roots=[only_daily]).machine("beta"))] == ["daily.0"]


def test_rsnapshot_intervals_with_other_names_rank_by_their_newest_snapshot(tmp_path):
    root = tmp_path / "snapshots"
    base = 1_790_000_000.0
    snap(root, "often.0", "alpha", base)
    snap(root, "often.1", "alpha", base - 600)
    snap(root, "rarely.0", "alpha", base - 86400)
    [vault] = find_backups(rsnapshot_roots=[root]).machine("alpha").vaults
    assert [i.name for i in vault.images] == ["rarely.0", "often.1", "often.0"]


def test_a_snapshot_of_part_of_a_machine_is_named_when_chosen(tmp_path):
    from rescue.backups.source import ImageSource

    root = tmp_path / "snapshots"
    (root / "daily.0" / "web1" / "home" / "ann").mkdir(parents=True)
    (root / "daily.0" / "web1" / "etc").mkdir()
    picked = ImageSource(rsnapshot_roots=(root,)).select("web1")
    assert [i.name for i in picked.images] == ["daily.0"] and picked.layout is None
    assert any("has no usr folder" in n and "one_fs 0" in n for n in picked.notes), picked.notes
    (root / "daily.0" / "web1" / "usr").mkdir()
    assert not any("has no" in n for n in ImageSource(rsnapshot_roots=(root,)).select("web1").notes)


def test_a_host_folder_of_a_snapshot_given_as_a_tree_finds_its_layout(tmp_path):
    from rescue.backups.plain import plain_vault

    snap = tmp_path / "daily.0"
    (snap / "web1" / "etc").mkdir(parents=True)
    (snap / ".rescue" / "web1").mkdir(parents=True)
    (snap / ".rescue" / "web1" / "layout.json").write_text("{}")
    vault = plain_vault(snap / "web1")
    assert vault.images[0].layout_dir == (snap / ".rescue" / "web1").resolve()
