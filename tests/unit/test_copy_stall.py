"""A copy that is stuck is stopped with a clear error; a slow one that keeps working is not.

The stuck copy is a stand-in: the real one (rsync -aH waiting on itself with an
unreadable hard-linked file half-written at the target) cannot be forced on demand,
and rescue now avoids it. A process that sleeps is a copy doing nothing at all: no
byte lands on the target, nothing is printed, no read or write call is made. The
busy stand-in writes to /dev/null: read and write calls, nothing on the target.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from rescue.engine import copy as copy_mod
from rescue.run import run, spawn


class StandIn:
    """The gateway, except that cp is replaced by `script` (a shell line)."""

    def __init__(self, script: str) -> None:
        self.script = script
        self.procs: list = []

    def run(self, argv, **kw):
        return run(argv, **kw)

    def spawn(self, argv, **kw):
        assert argv[0] == "cp", argv
        proc = spawn(["sh", "-c", self.script], **kw)
        self.procs.append(proc)
        return proc

    def child_done(self, proc) -> None:
        pass

    def cancelled(self) -> bool:
        return False


@pytest.fixture()
def quick_watch(monkeypatch):
    monkeypatch.setattr(copy_mod, "WORKERS", 1)  # one cp: the stand-in replaces it whole
    monkeypatch.setattr(copy_mod, "POLL_SECONDS", 0.1)
    monkeypatch.setattr(copy_mod, "STALL_SECONDS", 2)
    monkeypatch.setattr(copy_mod, "WRITE_BEHIND_BYTES", 0)  # the machine's writeback stays as it is


def _tree(tmp_path: Path) -> tuple[Path, Path]:
    source, dest = tmp_path / "source", tmp_path / "dest"
    source.mkdir()
    (source / "file").write_text("data\n")
    dest.mkdir()
    return source, dest


def test_a_copy_that_does_nothing_is_stopped_with_words_that_say_so(tmp_path: Path, quick_watch) -> None:
    source, dest = _tree(tmp_path)
    runner = StandIn("exec sleep 600")
    t0 = time.monotonic()
    with pytest.raises(copy_mod.CopyStalled) as caught:
        copy_mod.copy_tree(runner, source, dest, resume=False)
    assert time.monotonic() - t0 < 120, "the watchdog never fired"
    err = caught.value
    assert "no progress" in str(err) and "rerun the same command" in err.fix
    proc = runner.procs[0]
    assert proc.poll() is not None, "the stuck copy was left running"
    assert proc.returncode == -signal.SIGTERM


def test_a_slow_copy_that_keeps_reading_and_writing_is_left_alone(tmp_path: Path, quick_watch) -> None:
    source, dest = _tree(tmp_path)
    # 5 s of work with a 2 s watch: a write call every 0.3 s (to /dev/null), nothing on the target
    runner = StandIn("for i in $(seq 16); do sleep 0.3; echo busy > /dev/null; done")
    result = copy_mod.copy_tree(runner, source, dest, resume=False)
    assert result.method == "cp"
    assert runner.procs[0].returncode == 0


def test_group_io_counts_the_read_and_write_calls_of_a_process_group() -> None:
    proc = spawn(["sh", "-c", "read line; head -c 4096 /dev/zero > /dev/null; read line"],
                 stdin=-1, stdout=None, stderr=None)
    try:
        time.sleep(0.3)
        before = copy_mod.group_io(proc.pid)
        assert before > 0  # the shell has read its first line
        assert copy_mod.group_io(os.getpid() + 10**7) == 0  # no such group
        proc.stdin.write(b"go\n")
        proc.stdin.flush()
        time.sleep(0.5)
        assert copy_mod.group_io(proc.pid) != before
    finally:
        proc.kill()
        proc.wait()


def test_an_error_from_cp_stops_the_read_ahead_while_the_copy_goes_on(tmp_path: Path, quick_watch,
                                                                      monkeypatch) -> None:
    from rescue.engine import readahead

    source, dest = _tree(tmp_path)
    runner = StandIn("echo \"cp: error reading '/backup/bank/x': Input/output error\" >&2; sleep 1")
    copying: list[bool] = []  # at each halt: was the copy still running?
    real = readahead.ReadAhead.halt

    def halt(self) -> None:
        copying.append(runner.procs[0].poll() is None)
        real(self)

    monkeypatch.setattr(readahead.ReadAhead, "halt", halt)
    copy_mod.copy_tree(runner, source, dest, resume=False)
    assert copying[0] is True, "the read-ahead went on after cp's error (a failing disk read twice)"
