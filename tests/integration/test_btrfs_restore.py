"""Restore of a machine that mounts btrfs subvolumes, with real btrfs and dirvish on loop disks.

The machine of test_btrfs_subvolumes (@ at /, @home at /home, nested @/var/lib/machines
with a vault of its own, two snapshots, nocow folders) is backed up, detached (the
disaster), and restored with `rescue restore --yes` onto a new loop disk: the subvolumes
are there (not the snapshots), the default is as captured, the nocow folders carry C,
each vault's files are in their subvolume, fstab is untouched, UUID and label kept.
A second confirmed restore onto the same disk starts over and gives the same.
"""

from __future__ import annotations

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
