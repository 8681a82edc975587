"""One restore per disk: the Executor's disk lock (no root, no disks).

A second face (another console's wizard, rescue restore, the unattended
entry) asking to restore onto a disk that is being restored is refused
before the journal, the log or an earlier run's leftovers are touched, with
the REFUSED exit code and the holder's pid and face. The lock is the
kernel's: it goes away with its holder, so a killed restore never blocks
the next one.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap

import pytest

from rescue.engine import Executor
from rescue.engine.lock import DiskBusy, DiskLock, Holder, lock_name
from rescue.errors import Exit
from test_engine_executor import CALLS, PLAN


@pytest.fixture(autouse=True)
def _clean():
    CALLS.clear()
    yield
    CALLS.clear()


def executor(tmp_path, face="rescue restore") -> Executor:
    return Executor(target="/dev/fake0", state_dir=tmp_path / "state", mount_dir=tmp_path / "mnt",
                    log_path=tmp_path / "log.txt", recheck=lambda: None, face=face)


def test_a_second_restore_onto_the_same_disk_is_refused_with_nothing_touched(tmp_path):
    holder = executor(tmp_path, face="rescue wizard")
    other = executor(tmp_path, face="rescue restore")
    with holder.locked():
        with pytest.raises(DiskBusy) as refused:
            other.run(PLAN)
        with pytest.raises(DiskBusy):
            other.release_leftovers()
    e = refused.value
    assert e.exit_code == Exit.REFUSED
    assert "another restore onto /dev/fake0 is under way" in e.what
    assert f"rescue wizard, pid {os.getpid()}" in e.what
    assert "wrote nothing" in (e.why or "") and e.fix
    assert CALLS == []  # no step ran
    assert not (tmp_path / "state").exists()  # no journal
    assert not (tmp_path / "log.txt").exists()  # no log
    other.run(PLAN)  # once the holder is done, the disk is free
    assert [name for name, _ in CALLS] == ["wipe", "mkfs", "root", "copy", "verify"]


def test_the_lock_is_reentrant_and_released_after_a_run(tmp_path):
    ex = executor(tmp_path)
    with ex.locked():
        ex.release_leftovers()  # takes it again inside: no refusal from itself
        ex.run(PLAN)
        assert ex.disk_locks[0].held
    assert not ex.disk_locks[0].held
    with DiskLock("/dev/fake0", "test", tmp_path / "mnt" / "locks"):
        pass  # free again


def test_a_lock_held_by_another_process_names_its_pid_and_goes_away_with_it(tmp_path):
    """A real second process (as on another console): its pid is named; when it dies the disk is free."""
    locks = tmp_path / "locks"
    code = textwrap.dedent(f"""
        import sys, time
        from rescue.engine.lock import DiskLock
        lock = DiskLock("/dev/fake0", "rescue wizard", {str(locks)!r})
        lock.acquire()
        print("held", flush=True)
        time.sleep(60)
    """)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        with pytest.raises(DiskBusy) as refused:
            DiskLock("/dev/fake0", "rescue restore", locks).acquire()
        assert f"rescue wizard, pid {child.pid}" in refused.value.what
    finally:
        child.kill()
        child.wait()
    with DiskLock("/dev/fake0", "rescue restore", locks) as lock:  # the kernel dropped the dead one's lock
        assert lock.held


def test_one_disk_under_two_names_is_one_lock(tmp_path):
    """/dev/sdb and a /dev/disk/by-id link to it are one block device: one lock file."""
    disks = sorted(f"/dev/{n}" for n in os.listdir("/sys/class/block"))
    disk = next((d for d in disks if os.path.exists(d) and stat.S_ISBLK(os.stat(d).st_mode)), None)
    assert disk is not None, "this machine shows no block device to name a lock after"
    rdev = os.stat(disk).st_rdev
    link = tmp_path / "by-id-name"
    link.symlink_to(disk)
    assert lock_name(disk) == lock_name(str(link)) == f"disk-{os.major(rdev)}-{os.minor(rdev)}.lock"
    # a name that is no block device (a unit test's /dev/fake0) is named by its path
    assert lock_name("/dev/fake0") == "dev_fake0.lock"


def test_holder_text_half_written_or_foreign_names_nobody():
    assert Holder.read("").describe() == "another rescue process"
    assert Holder.read("not json").describe() == "another rescue process"
    assert Holder.read('{"pid": true, "face": "x"}').pid is None
    h = Holder.read('{"pid": 812, "face": "rescue wizard", "tty": "/dev/ttyS0", "since": "14:02:11"}')
    assert h.describe() == "rescue wizard, pid 812, on /dev/ttyS0, since 14:02:11"


def test_a_restore_onto_two_disks_holds_both_and_is_refused_when_either_is_busy(tmp_path):
    """Every target is locked, always in sorted order; a busy second disk releases the first again."""
    two = Executor(target="/dev/fake1", more_targets=("/dev/fake0",), state_dir=tmp_path / "state",
                   mount_dir=tmp_path / "mnt", log_path=tmp_path / "log.txt", recheck=lambda: None)
    assert [lock.target for lock in two.disk_locks] == ["/dev/fake0", "/dev/fake1"]
    with two.locked():
        assert all(lock.held for lock in two.disk_locks)
        with pytest.raises(DiskBusy):
            executor(tmp_path).run(PLAN)  # /dev/fake0 alone: busy
    with DiskLock("/dev/fake1", "rescue wizard", tmp_path / "mnt" / "locks"):
        with pytest.raises(DiskBusy) as refused:
            two.run(PLAN)
        assert "/dev/fake1" in refused.value.what
        assert not two.disk_locks[0].held  # the first lock was let go again
    assert CALLS == []
    two.run(PLAN)
    assert not any(lock.held for lock in two.disk_locks)
