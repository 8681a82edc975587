"""btrfs subvolumes: what capture records, and the vault that xdev leaves empty.

A real machine on a loop disk: one gpt partition with btrfs, subvolumes `@`
(mounted at / with subvol=@,compress=zstd,noatime), `@home` (at /home), a
nested `@/var/lib/machines` that is not mounted of its own (seen inside `@`),
a read-only snapshot of `@` inside it at /.snapshots/1 (snapper's way), a
writable snapshot of `@home` at the top level (seen nowhere), and a nocow
folder /srv/vm (chattr +C) and one inside the nested subvolume. The unmodified dirvish backs it up with `xdev: 1`
(rsync -x), one vault per mount point, with `rescue capture` as its hook:
the image of / holds /var/lib/machines as an empty folder. capture must
record all of it, doctor and `rescue list` must name /var/lib/machines, and a
vault for it must make the finding go away.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import rescue
from rescue.cli import main
from rescue.commands.doctor import FINDINGS
from rescue.commands.list import CHECK_PROBLEMS
from rescue.devices import attach, detach
from rescue.demo.dirvish import hook_line, rescue_command, run_dirvish, write_master_conf, write_vault_conf
from rescue.errors import Exit
from rescue.layout import Layout
from rescue.run import run

IMAGES = ("2026-1203-0300", "2026-1204-0300")


@contextmanager
def btrfs_machine(work: Path) -> Iterator[tuple[str, Path, str]]:
    """(disk, root, filesystem uuid): the machine's subvolumes mounted under root."""
    work.mkdir(parents=True)
    img, top, root = work / "disk.img", work / "top", work / "root"
    top.mkdir()
    root.mkdir()
    run(["truncate", "-s", "400M", img])
    run(["sfdisk", "-q", img], input="label: gpt\n,,L\n")
    disk = attach(img)
    try:
        part = disk + "p1"
        run(["mkfs.btrfs", "-q", "-f", "-L", "machine", part])
        uuid = run(["blkid", "-p", "-s", "UUID", "-o", "value", part]).stdout.strip()
        run(["mount", "-t", "btrfs", part, top])
        try:
            for sub in ("@", "@home"):
                run(["btrfs", "subvolume", "create", top / sub])
            (top / "@" / "var" / "lib").mkdir(parents=True)
            run(["btrfs", "subvolume", "create", top / "@" / "var" / "lib" / "machines"])
            (top / "@" / "var" / "lib" / "machines" / "web").mkdir()
            (top / "@" / "var" / "lib" / "machines" / "web" / "os-release").write_text("ID=debian\n")
            (top / "@" / "var" / "lib" / "machines" / "images").mkdir()  # nocow inside the nested subvolume
            run(["chattr", "+C", top / "@" / "var" / "lib" / "machines" / "images"])
            (top / "@" / "srv" / "vm").mkdir(parents=True)
            run(["chattr", "+C", top / "@" / "srv" / "vm"])
            (top / "@" / "srv" / "vm" / "disk.qcow2").write_bytes(b"q" * 4096)
            (top / "@" / "etc").mkdir()
            (top / "@" / "home").mkdir()
            (top / "@" / "etc" / "hostname").write_text("subvols\n")
            (top / "@" / "etc" / "fstab").write_text(
                f"UUID={uuid} / btrfs subvol=@,compress=zstd,noatime 0 0\n"
                f"UUID={uuid} /home btrfs subvol=@home,compress=zstd 0 0\n"
                f"UUID={uuid} /mnt/pool btrfs subvolid=5,noauto 0 0\n")
            (top / "@home" / "alice").mkdir()
            (top / "@home" / "alice" / "notes").write_text("home\n")
            (top / "@" / ".snapshots").mkdir()
            run(["btrfs", "subvolume", "snapshot", "-r", top / "@", top / "@" / ".snapshots" / "1"])
            run(["btrfs", "subvolume", "snapshot", top / "@home", top / "@home-2026-1201"])
        finally:
            run(["umount", top])
        # the top level is not mounted: the first mount's options (compress) are the filesystem's
        run(["mount", "-t", "btrfs", "-o", "subvol=@,compress=zstd,noatime", part, root])
        run(["mount", "-t", "btrfs", "-o", "subvol=@home,compress=zstd", part, root / "home"])
        yield disk, root, uuid
    finally:
        run(["umount", "-R", root], check=False)
        detach(disk)


@pytest.fixture
def machine(tmp_path: Path) -> Iterator[tuple[str, Path, str]]:
    with btrfs_machine(tmp_path / "m") as m:
        yield m


def test_capture_records_subvolumes_snapshots_mounts_nocow(machine, tmp_path, capsys):
    disk, root, uuid = machine
    out = tmp_path / "cap"
    assert main(["capture", "--disk", disk, "--root", str(root), "--out", str(out)]) == Exit.OK
    assert "(1 disk(s), 1 filesystem(s), 0 swap, 5 btrfs subvolume(s))" in capsys.readouterr().out
    lay = Layout.loads((out / "layout.json").read_text())
    [vol] = lay.btrfs
    assert (vol.device, vol.uuid, vol.label, vol.default_id) == (disk + "p1", uuid, "machine", 5)
    subs = {s.path: s for s in vol.subvolumes}
    assert set(subs) == {"@", "@home", "@/var/lib/machines", "@/.snapshots/1", "@home-2026-1201"}
    root_sv, home, machines, snap, home_snap = (subs[p] for p in
                                                ("@", "@home", "@/var/lib/machines", "@/.snapshots/1",
                                                 "@home-2026-1201"))
    assert (root_sv.seen_at, root_sv.mounted, root_sv.snapshot, root_sv.parent_id) == ("/", True, False, 5)
    assert (home.seen_at, home.mounted) == ("/home", True)
    assert (machines.seen_at, machines.mounted, machines.snapshot, machines.parent_id) == \
        ("/var/lib/machines", False, False, root_sv.id)
    assert (snap.snapshot, snap.readonly, snap.snapshot_of, snap.parent_uuid, snap.seen_at) == \
        (True, True, "@", root_sv.uuid, "/.snapshots/1")
    assert (home_snap.snapshot, home_snap.readonly, home_snap.snapshot_of, home_snap.seen_at) == \
        (True, False, "@home", None)
    assert len({s.uuid for s in vol.subvolumes}) == 5 and not any(s.received_uuid for s in vol.subvolumes)
    mounts = {m.target: m for m in vol.mounts}
    assert set(mounts) == {"/", "/home", "/mnt/pool"}
    assert (mounts["/"].subvol, mounts["/"].subvolid, mounts["/"].compress) == ("/@", root_sv.id, "zstd")
    assert "noatime" in mounts["/"].options and mounts["/"].fstab_options == "subvol=@,compress=zstd,noatime"
    assert (mounts["/home"].subvol, mounts["/home"].fstab_options) == ("/@home", "subvol=@home,compress=zstd")
    pool = mounts["/mnt/pool"]  # only in fstab (noauto): the top level, by id
    assert (pool.mounted, pool.subvolid, pool.subvol, pool.options) == (False, 5, None, "")
    assert vol.nocow == ("/srv/vm", "/var/lib/machines/images")
    assert vol.quota is False and vol.qgroups == ()
    for name in ("subvolumes", "readonly", "default", "nocow"):
        assert (out / f"btrfs-{disk[5:]}p1-{name}.txt").is_file(), name
    assert not (out / f"btrfs-{disk[5:]}p1-qgroups.txt").exists()

    # quotas on: each subvolume's qgroup is recorded with its sizes
    run(["btrfs", "quota", "enable", root])
    run(["btrfs", "quota", "rescan", "-w", root])
    assert main(["capture", "--disk", disk, "--root", str(root), "--out", str(out)]) == Exit.OK
    [vol] = Layout.loads((out / "layout.json").read_text()).btrfs
    assert vol.quota is True
    groups = {g.qgroupid: g for g in vol.qgroups}
    assert {f"0/{s.id}" for s in vol.subvolumes} <= set(groups)
    assert groups[f"0/{home.id}"].referenced > 0 and groups[f"0/{home.id}"].max_referenced is None
    capsys.readouterr()


def _bank(tmp_path: Path, disk: str, root: Path, vaults: dict[str, Path]) -> tuple[Path, Path, str]:
    """A bank on a backup filesystem of its own (tmpfs, with its DISKLABEL), master.conf with an
    expiry rule, each vault with xdev, xattrs, ACLs and the capture hook: nothing else for doctor."""
    backup = tmp_path / "backup"
    backup.mkdir()
    run(["mount", "-t", "tmpfs", "-o", "size=64m", "rescue-test-backup", backup])
    (backup / "DISKLABEL").write_text("BACKUP-1\n")
    bank, conf = backup / "bank", tmp_path / "etc-dirvish"
    bank.mkdir(mode=0o700)
    master = write_master_conf(conf, bank, list(vaults))
    master.write_text(master.read_text() + "expire-default: +30 days\n")
    hook = hook_line(["env", f"PYTHONPATH={Path(rescue.__file__).parents[1]}", *rescue_command(),
                      "capture", "--disk", disk, "--root", str(root)])
    for name, tree in vaults.items():
        write_vault_conf(bank, name, client="localhost", tree=tree, hook=hook, rsync_options=("--acls", "--xattrs"))
    return bank, conf, hook


def _night(conf: Path, vaults, image: str, init: bool) -> None:
    for name in vaults:
        run_dirvish(conf, ["dirvish", "--vault", name, "--image", image, *(["--init"] if init else [])])


def test_xdev_vault_misses_the_nested_subvolume_until_it_has_its_own(machine, tmp_path, capsys):
    disk, root, _ = machine
    vaults = {"root": root, "home": root / "home"}
    bank, conf, hook = _bank(tmp_path, disk, root, vaults)
    try:
        _night(conf, vaults, IMAGES[0], init=True)
        tree = bank / "root" / IMAGES[0] / "tree"
        # what dirvish's rsync -x did: the subvolume's folder is there, empty; the snapshot's too
        assert (tree / "var" / "lib" / "machines").is_dir() and not any((tree / "var" / "lib" / "machines").iterdir())
        assert (tree / "srv" / "vm" / "disk.qcow2").is_file()
        log = (bank / "root" / IMAGES[0] / "log").read_text()
        assert "INCOMPLETE backup of localhost: btrfs subvolume(s) in no vault: /var/lib/machines" in log, log

        args = ["doctor", "--root", str(root), "--bank", str(bank), "--config", str(conf / "master.conf")]
        assert main([*args, "--json"]) == FINDINGS
        found = {f["code"]: f for f in json.loads(capsys.readouterr().out)["findings"]}
        assert set(found) == {"subvolume-not-backed-up"}, found
        f = found["subvolume-not-backed-up"]
        assert "machine localhost: 1 btrfs subvolume(s)" in f["what"]
        assert f"/var/lib/machines (inside vault root, tree /, xdev on)" in f["evidence"]
        assert "/.snapshots/1" not in f["evidence"] and "@home-2026-1201" not in f["evidence"]
        assert f"'tree: {root}/var/lib/machines' and 'xdev: 1'" in f["fix"]

        assert main(["list", "--bank", str(bank), "--health", "--json"]) == Exit.OK
        [m] = json.loads(capsys.readouterr().out)["machines"]
        assert (m["unheld_subvolumes"], m["unheld"], m["complete"]) == (["/var/lib/machines"], [], False)
        assert main(["list", "--bank", str(bank), "--health"]) == Exit.OK
        assert "INCOMPLETE: btrfs subvolumes no vault holds: /var/lib/machines" in capsys.readouterr().out
        assert main(["list", "--bank", str(bank)]) == Exit.OK
        assert "INCOMPLETE: btrfs subvolumes no vault holds: /var/lib/machines" in capsys.readouterr().out
        assert main(["list", "--bank", str(bank), "--json"]) == Exit.OK
        [m] = json.loads(capsys.readouterr().out)["machines"]
        assert m["complete"] is False and m["unheld_subvolumes"] == ["/var/lib/machines"]
        assert main(["list", "--bank", str(bank), "--check", "--max-used", "100%"]) == CHECK_PROBLEMS
        assert "backup incomplete: btrfs subvolume(s) in no vault: /var/lib/machines" in capsys.readouterr().out

        # / and /home are mounted by subvolume (subvol=@, @home): the plan makes them
        # (test_btrfs_restore.py restores such a machine)
        from rescue.devices import loop_disk

        with loop_disk(tmp_path / "target.img", 1 << 30) as target:
            assert main(["plan", "--bank", str(bank), "--client", "localhost", "--target", target]) == Exit.OK
            assert "subvol=@home" in capsys.readouterr().out

        # the fix doctor shows: a vault of its own for the subvolume
        vaults["var-lib-machines"] = root / "var" / "lib" / "machines"
        write_vault_conf(bank, "var-lib-machines", client="localhost", tree=vaults["var-lib-machines"],
                         hook=hook, rsync_options=("--acls", "--xattrs"))
        run_dirvish(conf, ["dirvish", "--vault", "var-lib-machines", "--image", IMAGES[0], "--init"])
        _night(conf, vaults, IMAGES[1], init=False)
        held = bank / "var-lib-machines" / IMAGES[1] / "tree" / "web" / "os-release"
        assert held.read_text() == "ID=debian\n"
        assert "INCOMPLETE" not in (bank / "root" / IMAGES[1] / "log").read_text()

        assert main(args) == Exit.OK
        assert capsys.readouterr().out.splitlines()[-1].startswith("no findings")
        assert main(["list", "--bank", str(bank), "--health", "--json"]) == Exit.OK
        [m] = json.loads(capsys.readouterr().out)["machines"]
        assert (m["unheld_subvolumes"], m["complete"]) == ([], True)
        assert main(["list", "--bank", str(bank)]) == Exit.OK
        assert "INCOMPLETE" not in capsys.readouterr().out
    finally:
        run(["umount", tmp_path / "backup"], check=False)
