"""Restore the demo machine (real dirvish bank with the capture hook) onto loop disks.

Equal, bigger and smaller targets; every restored tree is compared with its
image tree (content, modes, owners, times, links, devices, xattrs, ACLs,
sparseness, hard links); UUIDs, labels, PARTUUIDs and the disk label-id are
kept. Then the restore is killed with SIGKILL in the middle of the copy and
in the middle of mkfs, rerun with the same command, and compared again.

The bootloader step cannot run here: the demo machine has no grub (its plan
has no bootloader step), and grub-install onto a loop device fails on this
build machine; a separate test shows the step says so instead of skipping
silently. The qemu drill proves booting.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rescue.backups import choose_images, find_backups
from rescue.cli import main
from rescue.demo import DemoMachine, diff_trees, make_bank
from rescue.devices import loop_disk
from rescue.engine.journal import Journal
from rescue.errors import Exit
from rescue.layout.legacy import load_layout
from rescue.run import run
from rescue.layout.sfdisk import parse_sfdisk

MiB = 1 << 20
GiB = 1 << 30
BULK_FILES = 300  # 300 x 256 KiB of random data in /home: a copy long enough to be killed in


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The machine, backed up twice by dirvish, then detached (the disaster)."""
    tmp = tmp_path_factory.mktemp("demo")
    with DemoMachine(tmp / "machine") as m:
        bulk = m.dir_of("/home") / "bulk"
        bulk.mkdir()
        for i in range(BULK_FILES):
            (bulk / f"f{i:04}").write_bytes(os.urandom(256 * 1024))
        bank = make_bank(m, tmp / "bank")
        parts = {p.mountpoint or "swap": p for p in m.partitions}
        table = m.table
        m.detach_keep_image()
        images = choose_images(find_backups(banks=[bank.bank]).machine(bank.client))
        yield {"bank": bank, "parts": parts, "table": table, "images": images,
               "layout": load_layout(images[0].path), "tmp": tmp}


def restore_argv(demo, dev: str, state: Path, *extra: str) -> list[str]:
    return ["restore", "--bank", str(demo["bank"].bank), "--client", demo["bank"].client,
            "--target", dev, "--state-dir", str(state), *extra]


def restored_mounts(demo) -> list[tuple[str, str]]:
    """(mount point, vault) of each restored filesystem, / first."""
    return [(p.mountpoint, p.vault) for p in sorted(
        (p for p in demo["parts"].values() if p.mountpoint), key=lambda p: len(p.mountpoint))]


def compare_disk(demo, dev: str, where: Path) -> list[str]:
    """Every restored filesystem against its image tree; empty when equal."""
    problems: list[str] = []
    where.mkdir(exist_ok=True)
    for mp, vault in restored_mounts(demo):
        p = demo["parts"][mp]
        node = f"{dev}p{p.number}"
        tree = demo["bank"].image_dir(vault) / "tree"
        opts = "ro,nouuid" if p.fstype == "xfs" else "ro"
        run(["mount", "-t", p.fstype, "-o", opts, node, str(where)])
        try:
            exclude = ["lost+found"] if p.fstype.startswith("ext") else []
            if mp == "/":
                exclude += ["proc", "sys", "dev", "run", "tmp", "var"]  # made by Fixups (checked below)
            diffs = diff_trees(tree, where, times=True, sparse=True, top=True, exclude=exclude)
            problems += [f"{mp}: {d}" for d in diffs]
            if mp == "/":
                for name, mode in (("proc", 0o555), ("sys", 0o555), ("dev", 0o755), ("run", 0o755),
                                   ("var/tmp", 0o1777)):
                    st = os.lstat(where / name)
                    if st.st_mode & 0o7777 != mode:
                        problems.append(f"/{name}: mode {st.st_mode & 0o7777:o}, not {mode:o}")
        finally:
            run(["umount", str(where)])
    return problems


def blkid(node: str) -> dict[str, str]:
    out = run(["blkid", "-p", "-o", "export", node]).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def check_identity(demo, dev: str) -> None:
    """UUIDs, labels, PARTUUIDs and the table's label-id are what the machine had."""
    for key, p in demo["parts"].items():
        found = blkid(f"{dev}p{p.number}")
        assert found["TYPE"] == p.fstype, key
        assert found["UUID"] == p.uuid, key
        assert found.get("LABEL") == p.label, key
        assert found["PART_ENTRY_UUID"].lower() == p.partuuid.lower(), key
    table = parse_sfdisk(run(["sfdisk", "--dump", dev]).stdout)
    assert table.label_id.lower() == demo["table"].label_id.lower()


def test_restore_onto_equal_disk_matches_every_tree(demo, tmp_path, capsys):
    with loop_disk(tmp_path / "t.img", GiB) as dev:
        code = main(restore_argv(demo, dev, tmp_path / "state", "--yes", "--log", str(tmp_path / "r.log")))
        out = capsys.readouterr().out
        assert code == Exit.OK, out
        assert compare_disk(demo, dev, tmp_path / "mnt") == []
        check_identity(demo, dev)
        table = parse_sfdisk(run(["sfdisk", "--dump", dev]).stdout)
        assert [(p.start, p.size) for p in table.partitions] == \
            [(p.start, p.size) for p in demo["table"].partitions]
        # ext4 was copied onto with noinit_itable (the zeroing of unused inode tables is left
        # to the restored system's first boot): the filesystem is consistent without it
        ext4 = [p for p in demo["parts"].values() if p.fstype == "ext4"]
        assert ext4
        for p in ext4:
            fsck = run(["e2fsck", "-fn", f"{dev}p{p.number}"], check=False)
            assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    assert "[10/15] copy vault" in out and "result:   OK" in out
    log = (tmp_path / "r.log").read_text()
    assert "+ sfdisk --wipe always" in log and "cp -a --sparse=auto" in log  # alone, or one per core under xargs
    assert "+ mount -t ext4 -o noinit_itable" in log
    assert "rsync -n -aH --numeric-ids --delete --itemize-changes" in log
    reports = list((tmp_path / "state").glob("*/restore-*.txt"))
    assert len(reports) == 1 and "tree /home: equal to vault home" in reports[0].read_text()


@pytest.mark.parametrize(("size", "grows"), [(2 * GiB, True), (800 * MiB, False)], ids=["bigger", "smaller"])
def test_restore_onto_other_sizes(demo, tmp_path, size, grows):
    with loop_disk(tmp_path / "t.img", size) as dev:
        assert main(restore_argv(demo, dev, tmp_path / "state", "--yes")) == Exit.OK
        assert compare_disk(demo, dev, tmp_path / "mnt") == []
        check_identity(demo, dev)
        table = parse_sfdisk(run(["sfdisk", "--dump", dev]).stdout)
        last = max(table.partitions, key=lambda p: p.start)
        old_last = max(demo["table"].partitions, key=lambda p: p.start)
        assert (last.size > old_last.size) == grows
        assert last.end <= size // 512


# A restore run in a child process that kills itself with SIGKILL at a chosen moment:
# inside mkfs of /home (mkfs is running), or in the copy of /home once cp has written
# part of it (cp is run in 10 ms slices with SIGSTOP/SIGCONT so the moment is certain).
KILLER = r"""
import os, signal, sys, time
import rescue.engine.context as context
import rescue.steps.mkfs as mkfs
from rescue.cli import main

when = sys.argv[1]
if when == "mkfs":
    real = mkfs.MakeFilesystem.run
    def run(self, ctx):
        if self.mountpoint == "/home":
            ctx.spawn(mkfs.mkfs_argv(self.fstype, self.device, self.uuid, self.label))
            os.kill(os.getpid(), signal.SIGKILL)   # mkfs is writing when the restore dies
        return real(self, ctx)
    mkfs.MakeFilesystem.run = run
else:
    real_spawn = context.EngineContext.spawn
    def spawn(self, argv, **kw):
        proc = real_spawn(self, argv, **kw)
        if argv[0] in ("cp", "xargs") and self.key == "copy:home":
            # the whole process group: xargs and the cp runs it started (one per core)
            os.killpg(proc.pid, signal.SIGSTOP)
            dest = argv[-1] if argv[0] == "cp" else str(self.work / "home")
            def used():
                st = os.statvfs(dest)
                return (st.f_blocks - st.f_bfree) * st.f_frsize
            start = used()
            while proc.poll() is None:
                os.killpg(proc.pid, signal.SIGCONT)
                time.sleep(0.01)
                os.killpg(proc.pid, signal.SIGSTOP)
                if used() - start > 16 * 1024 * 1024:
                    if when == "term":   # a shutdown asks the restore to stop, cp half way
                        import threading
                        threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM)).start()
                        break
                    os.kill(os.getpid(), signal.SIGKILL)   # cp is half way (and left stopped)
        return proc
    context.EngineContext.spawn = spawn
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize("when", ["copy", "mkfs"])
def test_killed_restore_resumes_and_matches(demo, tmp_path, when):
    state = tmp_path / "state"
    with loop_disk(tmp_path / "t.img", GiB) as dev:
        argv = restore_argv(demo, dev, state, "--yes")
        proc = subprocess.run([sys.executable, "-c", KILLER, when, *argv], capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr
        journal = Journal.load(next(state.glob("*/journal.json")))
        key = "copy:home" if when == "copy" else f"mkfs:{dev}p{demo['parts']['/home'].number}"
        assert journal.was_started(key), journal.steps
        if when == "copy":
            assert journal.is_done("copy:root") and not journal.is_done("copy:home")
            assert journal.mount_base and any(Path(journal.mount_base).iterdir())  # its mounts were left
        rerun = subprocess.run([sys.executable, "-m", "rescue", *argv], capture_output=True, text=True,
                               timeout=300)
        assert rerun.returncode == Exit.OK, rerun.stdout + rerun.stderr
        assert "resuming an earlier run" in rerun.stdout
        assert "done already: write gpt partition table" in rerun.stdout
        if when == "copy":
            assert "done already: copy vault root" in rerun.stdout
            assert "finishing it with rsync" in rerun.stdout
            data = Journal.load(journal.path).steps["copy:home"]["data"]
            assert data["method"] == "rsync"
            # the part copied before the kill was not copied again
            assert data["copied_bytes"] < BULK_FILES * 256 * 1024
        assert compare_disk(demo, dev, tmp_path / "mnt") == []
        check_identity(demo, dev)
        assert not [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
                    if str(tmp_path) in line or (journal.mount_base or "//") in line]


def test_terminated_restore_stops_cleanly_and_resumes(demo, tmp_path):
    """SIGTERM in the middle of the copy: the copy is ended, everything unmounted, exit ABORTED."""
    state = tmp_path / "state"
    with loop_disk(tmp_path / "t.img", GiB) as dev:
        argv = restore_argv(demo, dev, state, "--yes")
        proc = subprocess.run([sys.executable, "-c", KILLER, "term", *argv], capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == Exit.ABORTED, proc.stdout + proc.stderr
        assert "interrupted" in proc.stderr
        journal = Journal.load(next(state.glob("*/journal.json")))
        assert journal.was_started("copy:home") and "child" not in journal.steps["copy:home"].get("data", {})
        assert not Path(journal.mount_base).exists()  # unmounted and removed at once
        assert f"{dev}p" not in Path("/proc/self/mountinfo").read_text()
        rerun = subprocess.run([sys.executable, "-m", "rescue", *argv], capture_output=True, text=True,
                               timeout=300)
        assert rerun.returncode == Exit.OK, rerun.stdout + rerun.stderr
        assert "finishing it with rsync" in rerun.stdout
        assert compare_disk(demo, dev, tmp_path / "mnt") == []


def test_a_second_confirmed_restore_onto_the_same_disk_starts_over(demo, tmp_path, capsys):
    """Issue 14, point 4: a finished restore is never resumed. A file planted on the restored
    root is gone after a new confirmed restore, and its verification passes."""
    with loop_disk(tmp_path / "t.img", GiB) as dev:
        argv = restore_argv(demo, dev, tmp_path / "state", "--yes")
        assert main(argv) == Exit.OK
        root = f"{dev}p{demo['parts']['/'].number}"
        where = tmp_path / "plant"
        where.mkdir()
        run(["mount", root, str(where)])
        try:
            (where / "planted-after-the-restore").write_text("a new restore must not keep this\n")
        finally:
            run(["umount", str(where)])
        capsys.readouterr()
        assert main(argv) == Exit.OK
        out = capsys.readouterr().out
        assert "an earlier restore onto this disk finished on" in out and "every step runs again" in out, out
        assert "done already" not in out and "resuming an earlier run" not in out
        assert "[1/15] erase old signatures" in out and "[2/15] write gpt partition table" in out
        assert "result:   OK" in out
        run(["mount", "-o", "ro", root, str(where)])
        try:
            assert not (where / "planted-after-the-restore").exists()
        finally:
            run(["umount", str(where)])
        assert compare_disk(demo, dev, tmp_path / "mnt") == []
        check_identity(demo, dev)


def swap_for_blank(dev: str, image: Path, size: int) -> None:
    """The disk behind `dev` is replaced by a blank one that the kernel calls by the same name.

    losetup -d is lazy while a process still holds the disk (the mkfs a killed restore left
    running), so the new file is attached as soon as the name is free again."""
    from rescue.devices import detach, make_image_file, rescan
    from rescue.run import CommandError

    detach(dev)
    make_image_file(image, size)
    deadline = time.monotonic() + 60
    while True:
        try:
            run(["losetup", "--partscan", dev, str(image)])
            break
        except CommandError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    assert str(image) in run(["losetup", "--list", "--noheadings", "-O", "BACK-FILE", dev]).stdout
    rescan(dev)


@pytest.mark.parametrize("earlier", ["finished", "killed"])
def test_a_blank_disk_under_the_same_name_gets_every_step(demo, tmp_path, earlier):
    """Issue 14, point 4: the journal is keyed by the device name for a loop disk, so a
    new disk later called the same /dev/loopN finds the old disk's journal. A finished one
    is never resumed; an unfinished one (killed in the mkfs of /home) is checked against the
    disk (its table id is not there) and the restore starts over, saying why."""
    state = tmp_path / "state"
    with loop_disk(tmp_path / "t.img", GiB) as dev:
        argv = restore_argv(demo, dev, state, "--yes")
        if earlier == "finished":
            assert main(argv) == Exit.OK
        else:
            proc = subprocess.run([sys.executable, "-c", KILLER, "mkfs", *argv], capture_output=True,
                                  text=True, timeout=300)
            assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr
        journal = Journal.load(next(state.glob("*/journal.json")))
        assert journal.is_done(f"partition:{dev}")
        swap_for_blank(dev, tmp_path / "blank.img", GiB)
        rerun = subprocess.run([sys.executable, "-m", "rescue", *argv], capture_output=True, text=True,
                               timeout=300)
        assert rerun.returncode == Exit.OK, rerun.stdout + rerun.stderr
        if earlier == "finished":
            assert "an earlier restore onto this disk finished on" in rerun.stdout, rerun.stdout
        else:
            assert ("the journal of an earlier restore does not match this disk (partition table id differs"
                    in rerun.stdout), rerun.stdout
        assert "done already" not in rerun.stdout and "resuming an earlier run" not in rerun.stdout
        assert "[1/15] erase old signatures" in rerun.stdout
        again = Journal.load(journal.path)
        assert again.runs == 1 and again.finished is not None
        assert compare_disk(demo, dev, tmp_path / "mnt") == []
        check_identity(demo, dev)


def test_plan_for_a_loop_disk_reports_the_bootloader_as_not_attempted(demo, tmp_path):
    """With a layout that has grub, the step runs and says clearly it did not install on a loop device."""
    import dataclasses

    from rescue.engine import Executor
    from rescue.layout.model import Boot, BootMode
    from rescue.plan import build_plan
    from rescue.probe import probe_disk

    layout = dataclasses.replace(demo["layout"], boot=Boot(mode=BootMode.BIOS, has_grub=True))
    with loop_disk(tmp_path / "t.img", GiB) as dev:
        plan = build_plan(layout, demo["images"], probe_disk(dev, backup_sources=[demo["bank"].bank]))
        assert any(s.kind == "bootloader" for s in plan.steps)
        events = []
        outcome = Executor(target=dev, state_dir=tmp_path / "state", mount_dir=tmp_path / "mnt").run(
            plan, events.append)
        assert outcome.ok
        assert "bootloader NOT installed on" in outcome.summary
        assert "not attempted on a loop device" in outcome.summary
        assert "boot code: not checked, bootloader not installed" in outcome.summary
        journal = json.loads(Path(outcome.journal).read_text())
        assert journal["steps"]["bootloader"]["data"]["attempted"] is False


def test_restore_with_the_old_disk_still_attached(tmp_path):
    """The failing disk is still plugged in and mounted, with the same UUIDs (DESIGN.md).

    Every mount is proven by device numbers, so the restore lands on the new
    disk; btrfs refuses the old /home UUID while the old one is mounted, so
    /home gets a new UUID and the restored fstab is rewritten, and the report
    says so. The old disk's trees are left as they were.
    """
    with DemoMachine(tmp_path / "machine", home_fs="btrfs") as m:
        bank = make_bank(m, tmp_path / "bank")
        old_home = m.partition("/home").uuid
        with loop_disk(tmp_path / "t.img", GiB) as dev:
            state = tmp_path / "state"
            code = main(["restore", "--bank", str(bank.bank), "--client", bank.client, "--target", dev,
                         "--state-dir", str(state), "--yes"])
            assert code == Exit.OK
            report = next(state.glob("*/restore-*.txt")).read_text()
            assert f"UUID changed from {old_home} to" in report
            assert "rewrote /etc/fstab" in report
            new_home = blkid(f"{dev}p{m.partition('/home').number}")["UUID"]
            assert new_home != old_home
            assert blkid(f"{dev}p1")["UUID"] == m.partition("/").uuid  # ext4 keeps its twin UUID
            mnt = tmp_path / "mnt"
            mnt.mkdir()
            run(["mount", "-o", "ro", f"{dev}p1", str(mnt)])
            try:
                fstab = (mnt / "etc" / "fstab").read_text()
            finally:
                run(["umount", str(mnt)])
            assert f"UUID={new_home} /home btrfs" in fstab and old_home not in fstab
        for mp, vault in (("/", "root"), ("/home", "home")):
            exclude = ["lost+found"] if mp == "/" else []
            assert diff_trees(bank.image_dir(vault) / "tree", m.dir_of(mp), top=False,
                              exclude=exclude + (["home", "tmp"] if mp == "/" else [])) == []


def test_restore_of_a_dos_disk_with_logical_partitions(tmp_path):
    """An msdos table with an extended partition (swap and /tmp as logicals 5 and 6), ext4 /home."""
    with DemoMachine(tmp_path / "machine", label="dos", logical=True, home_fs="ext4") as m:
        bank = make_bank(m, tmp_path / "bank")
        parts = {p.mountpoint or "swap": p for p in m.partitions}
        table = m.table
        m.detach_keep_image()
    demo = {"bank": bank, "parts": parts, "table": table}
    with loop_disk(tmp_path / "t.img", GiB + 256 * MiB) as dev:
        assert main(restore_argv(demo, dev, tmp_path / "state", "--yes")) == Exit.OK
        assert compare_disk(demo, dev, tmp_path / "mnt") == []
        check_identity_dos(demo, dev)


def check_identity_dos(demo, dev: str) -> None:
    table = parse_sfdisk(run(["sfdisk", "--dump", dev]).stdout)
    assert table.label == "dos" and table.label_id.lower() == demo["table"].label_id.lower()
    assert sorted(p.number for p in table.partitions) == sorted(p.number for p in demo["table"].partitions)
    for key, p in demo["parts"].items():
        found = blkid(f"{dev}p{p.number}")
        assert (found["TYPE"], found["UUID"], found.get("LABEL")) == (p.fstype, p.uuid, p.label), key


def test_restore_with_fstype_makes_the_type_asked_for_and_keeps_the_tree(demo, tmp_path, capsys):
    """--fstype (an old bank whose types were not recorded, or a change of mind): the same tree, another type."""
    home = demo["parts"]["/home"]
    other = "ext4" if home.fstype == "xfs" else "xfs"
    with loop_disk(tmp_path / "t.img", GiB) as dev:
        code = main(restore_argv(demo, dev, tmp_path / "state", "--yes", "--fstype", f"/home={other}"))
        out = capsys.readouterr().out
        assert code == Exit.OK, out
        node = f"{dev}p{home.number}"
        found = blkid(node)
        assert found["TYPE"] == other and found.get("LABEL") == home.label
        where = tmp_path / "mnt"
        where.mkdir()
        run(["mount", "-o", "ro", node, str(where)])
        try:
            tree = demo["bank"].image_dir(home.vault) / "tree"
            assert diff_trees(tree, where, times=True, sparse=True, top=True, exclude=["lost+found"]) == []
        finally:
            run(["umount", str(where)])
    assert other in out


def test_restore_refuses_a_bad_fstype_before_writing_anything(demo, tmp_path, capsys):
    with loop_disk(tmp_path / "t.img", GiB) as dev:
        before = run(["sha256sum", dev]).stdout.split()[0]
        code = main(restore_argv(demo, dev, tmp_path / "state", "--yes", "--fstype", "ext4"))
        assert code == Exit.ERROR
        assert "--fstype 'ext4' is not MOUNTPOINT=TYPE" in capsys.readouterr().err
        assert run(["sha256sum", dev]).stdout.split()[0] == before
    assert not (tmp_path / "state").exists()
