"""Restore of a machine that mounts btrfs subvolumes, with real btrfs and dirvish on loop disks.

The machine of test_btrfs_subvolumes (@ at /, @home at /home, nested @/var/lib/machines
with a vault of its own, two snapshots, nocow folders) is backed up, detached (the
disaster), and restored with `rescue restore --yes` onto a new loop disk: the subvolumes
are there (not the snapshots), the default is as captured, the nocow folders carry C,
each vault's files are in their subvolume, fstab is untouched, UUID and label kept.
A second confirmed restore onto the same disk starts over and gives the same.

The same machine backed up by a vault of / with `xdev: 0` (its tree holds the read-only
snapshot /.snapshots/1): with --btrfs-snapshots restore the snapshot comes back as a
read-only subvolume holding the same files; by default it is left out, listed, and its
folder in @ is empty (not a plain copy of its files).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from test_btrfs_subvolumes import IMAGES, _bank, _night, btrfs_machine

from rescue.cli import main
from rescue.demo import diff_trees
from rescue.devices import loop_disk
from rescue.errors import Exit
from rescue.run import run

GiB = 1 << 30


def _check(dev: str, bank: Path, uuid: str, where: Path) -> None:
    part = dev + "p1"
    found = dict(line.split("=", 1) for line in run(["blkid", "-p", "-o", "export", part]).stdout.splitlines()
                 if "=" in line)
    assert (found["TYPE"], found["UUID"], found.get("LABEL")) == ("btrfs", uuid, "machine")
    where.mkdir(exist_ok=True)
    run(["mount", "-t", "btrfs", "-o", "ro,subvolid=5", part, where])
    try:
        listed = run(["btrfs", "subvolume", "list", where]).stdout
        paths = sorted(line.split(" path ", 1)[1] for line in listed.splitlines())
        assert paths == ["@", "@/var/lib/machines", "@home"], listed
        assert "ID 5 (FS_TREE)" in run(["btrfs", "subvolume", "get-default", where]).stdout
        for nocow in ("@/srv/vm", "@/var/lib/machines/images"):
            flags = run(["lsattr", "-d", where / nocow]).stdout.split()[0]
            assert "C" in flags, (nocow, flags)
        assert "C" in run(["lsattr", where / "@" / "srv" / "vm" / "disk.qcow2"]).stdout.split()[0]
        tree = {v: bank / v / IMAGES[0] / "tree" for v in ("root", "home", "var-lib-machines")}
        problems = diff_trees(tree["root"], where / "@", times=True, top=False,
                              exclude=["proc", "sys", "dev", "run", "tmp", "var", "home", "mnt"])
        problems += diff_trees(tree["root"] / "var" / "lib", where / "@" / "var" / "lib", times=True, top=False,
                               exclude=["machines"])
        problems += diff_trees(tree["home"], where / "@home", times=True, top=False)
        problems += diff_trees(tree["var-lib-machines"], where / "@" / "var" / "lib" / "machines", times=True,
                               top=False)
        assert problems == []
        assert (where / "@" / "etc" / "fstab").read_bytes() == (tree["root"] / "etc" / "fstab").read_bytes()
        assert not (where / "@" / ".snapshots" / "1" / "etc").exists()
    finally:
        run(["umount", where])


def test_restore_makes_the_subvolumes_and_fills_each_from_its_vault(tmp_path, capsys):
    vaults: dict[str, Path] = {}
    try:
        with btrfs_machine(tmp_path / "m") as (disk, root, uuid):
            vaults.update({"root": root, "home": root / "home", "var-lib-machines": root / "var" / "lib" / "machines"})
            bank, conf, _ = _bank(tmp_path, disk, root, vaults)
            _night(conf, vaults, IMAGES[0], init=True)
        # the disaster: the machine's disk is gone
        run(["btrfs", "device", "scan", "--forget"], check=False)
        with loop_disk(tmp_path / "target.img", GiB) as dev:
            argv = ["restore", "--bank", str(bank), "--client", "localhost", "--target", dev,
                    "--state-dir", str(tmp_path / "state"), "--yes"]
            assert main(["plan", *argv[1:-3]]) == Exit.OK
            out = capsys.readouterr().out
            assert "make btrfs subvolumes @, @home, @/var/lib/machines" in out, out
            assert "subvol=@home" in out and "snapshots" in out and "@/.snapshots/1" in out
            assert main(argv) == Exit.OK, capsys.readouterr().out[-3000:]
            assert "result:   OK" in capsys.readouterr().out
            _check(dev, bank, uuid, tmp_path / "mnt")
            # a second confirmed restore starts over and gives the same
            assert main(argv) == Exit.OK, capsys.readouterr().out[-3000:]
            out = capsys.readouterr().out
            assert "every step runs again" in out and "result:   OK" in out, out
            _check(dev, bank, uuid, tmp_path / "mnt")
    finally:
        run(["umount", tmp_path / "backup"], check=False)


def _crossing_bank(tmp_path: Path) -> tuple[Path, str]:
    """The machine backed up by a vault of / with `xdev: 0` (rsync crosses into subvolumes, so its
    tree holds the read-only snapshot /.snapshots/1 and /var/lib/machines) and one of /home;
    then the machine's disk is gone. (bank, filesystem uuid)"""
    with btrfs_machine(tmp_path / "m") as (disk, root, uuid):
        vaults = {"root": root, "home": root / "home"}
        bank, conf, _ = _bank(tmp_path, disk, root, vaults)
        rconf = bank / "root" / "dirvish" / "default.conf"
        rconf.write_text(rconf.read_text().replace("xdev: 1\n", "xdev: 0\n"))
        _night(conf, vaults, IMAGES[0], init=True)
    run(["btrfs", "device", "scan", "--forget"], check=False)
    snap = bank / "root" / IMAGES[0] / "tree" / ".snapshots" / "1"
    assert (snap / "etc" / "hostname").read_text() == "subvols\n"  # the vault holds the snapshot's files
    return bank, uuid


@contextlib.contextmanager
def _top_level(dev: str, tmp_path: Path) -> Iterator[Path]:
    """The restored btrfs's top level (subvolid=5), mounted read-only for the checks."""
    where = tmp_path / "mnt"
    where.mkdir()
    run(["mount", "-t", "btrfs", "-o", "ro,subvolid=5", dev + "p1", where])
    try:
        yield where
    finally:
        run(["umount", where])


def _listed(where: Path) -> dict[str, str]:
    """path -> the line of `btrfs subvolume list` that names it."""
    listed = run(["btrfs", "subvolume", "list", where]).stdout
    return {line.split(" path ", 1)[1]: line for line in listed.splitlines()}


def test_a_read_only_snapshot_whose_files_a_vault_holds_is_restored_when_chosen(tmp_path, capsys):
    try:
        bank, uuid = _crossing_bank(tmp_path)
        tree = bank / "root" / IMAGES[0] / "tree"
        with loop_disk(tmp_path / "target.img", GiB) as dev:
            argv = ["restore", "--bank", str(bank), "--client", "localhost", "--target", dev,
                    "--btrfs-snapshots", "restore", "--state-dir", str(tmp_path / "state"), "--yes"]
            assert main(["plan", *argv[1:-3], "--script", str(tmp_path / "restore.sh")]) == Exit.OK
            out = " ".join(capsys.readouterr().out.split())  # the review wraps long lines
            assert "restored as subvolumes holding their data: @/.snapshots/1 (read-only)" in out, out
            assert "make btrfs snapshots read-only again" in out
            assert "btrfs property set -ts" in (tmp_path / "restore.sh").read_text()
            assert main(argv) == Exit.OK, capsys.readouterr().out[-3000:]
            assert "result:   OK" in capsys.readouterr().out
            with _top_level(dev, tmp_path) as where:
                listed = _listed(where)
                assert sorted(listed) == ["@", "@/.snapshots/1", "@/var/lib/machines", "@home"], listed
                snap = where / "@" / ".snapshots" / "1"
                assert "ro=true" in run(["btrfs", "property", "get", "-ts", snap, "ro"]).stdout
                assert diff_trees(tree / ".snapshots" / "1", snap, times=True, top=False) == []
                assert (snap / "etc" / "hostname").read_text() == "subvols\n"
                assert (where / "@" / "var" / "lib" / "machines" / "web" / "os-release").read_text() == "ID=debian\n"
    finally:
        run(["umount", tmp_path / "backup"], check=False)


def test_by_default_the_snapshot_is_left_out_listed_and_not_copied_into_its_parent(tmp_path, capsys):
    try:
        bank, uuid = _crossing_bank(tmp_path)
        with loop_disk(tmp_path / "target.img", GiB) as dev:
            argv = ["restore", "--bank", str(bank), "--client", "localhost", "--target", dev,
                    "--state-dir", str(tmp_path / "state"), "--yes"]
            assert main(["plan", *argv[1:-3]]) == Exit.OK
            out = " ".join(capsys.readouterr().out.split())
            assert "left out (as chosen): @/.snapshots/1, @home-2026-1201" in out, out
            assert main(argv) == Exit.OK, capsys.readouterr().out[-3000:]
            assert "result:   OK" in capsys.readouterr().out
            with _top_level(dev, tmp_path) as where:
                assert sorted(_listed(where)) == ["@", "@/var/lib/machines", "@home"]
                snap = where / "@" / ".snapshots" / "1"
                assert snap.is_dir() and not any(snap.iterdir())  # its folder, empty: not a plain copy in @
                assert (where / "@" / "etc" / "hostname").read_text() == "subvols\n"
    finally:
        run(["umount", tmp_path / "backup"], check=False)
