"""The copy engine: one image tree onto one freshly made filesystem.

Why two tools:
- A fresh copy is `cp -a --sparse=auto` (GNU coreutils). It keeps content,
  numeric owners, modes with setuid/setgid/sticky, times of files, links and
  folders, hard links within the tree, device nodes, fifos, xattrs and ACLs,
  and the holes of sparse files (found with SEEK_HOLE). It is as fast as a
  copy can be from user space (the kernel copies file data itself where it
  can) and its memory stays small (it remembers only multiply-linked inodes).
  --sparse=always (zero runs become holes) was measured 30-100% slower on
  large files (bench/bench_copy.py), so it is not used: a file stored
  fully allocated in the backup is restored fully allocated.
- A resumed copy (the journal says an earlier run started it) is finished by
  `rsync -aHAX --numeric-ids --sparse --delete`: files already complete (same
  size and time; cp sets the time last) are not copied again, a half-written
  file is redone, and anything the earlier run left over goes away.

Progress: cp prints nothing while it works, so the target filesystem's used
blocks and inodes (statvfs) are polled against the expected totals; rsync
reports its own progress with --info=progress2.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from rescue.errors import Aborted
from rescue.run import CommandError

# xfs shows a file's ACL to root a second time, as trusted.SGI_ACL_FILE/_DEFAULT xattrs; a
# bank made from xfs holds them, one copied with cp -a does not (libattr's xattr.conf skips
# them, as cp does when restoring). They are the ACL itself, which -A copies and compares:
# left out, a resumed copy equals a fresh cp one, and verify does not call them a difference.
XFS_ACL_FILTER = "--filter=-x trusted.SGI_ACL_*"

# rsync: 23 = some files could not be transferred, 24 = source files vanished.
RSYNC_PARTIAL = (23, 24)
POLL_SECONDS = 1.0


class Runner(Protocol):
    def run(self, argv: Sequence[Any], **kwargs: Any) -> Any: ...

    def spawn(self, argv: Sequence[Any], **kwargs: Any) -> Any: ...

    def child_done(self, proc: Any) -> None: ...

    def cancelled(self) -> bool: ...


ProgressFn = Callable[[int, int, int, int, "float | None"], None]


@dataclass(frozen=True)
class CopyResult:
    method: str  # "cp" (fresh) or "rsync" (resumed or finishing)
    seconds: float
    bytes: int  # bytes the target filesystem grew by (approximate for rsync)
    files: int  # inodes the target filesystem grew by (0 where not counted, e.g. btrfs)
    unreadable: tuple[str, ...] = ()  # what could not be read from the backup


def cp_argv(source: Path, dest: Path, *, xattrs: bool = True, acls: bool = True) -> list[str]:
    argv = ["cp", "-a", "--sparse=auto"]
    if not xattrs and not acls:
        argv.append("--no-preserve=xattr")
    return argv + ["--", f"{source}/.", f"{dest}/"]


def rsync_argv(source: Path, dest: Path, *, xattrs: bool = True, acls: bool = True,
               progress: bool = True) -> list[str]:
    argv = ["rsync", "-aH", "--numeric-ids", "--sparse", "--delete"]
    if acls:
        argv.append("-A")
    if xattrs:
        argv += ["-X", XFS_ACL_FILTER]
    if progress:
        argv += ["--info=progress2", "--no-human-readable"]
    return argv + ["--", f"{source}/", f"{dest}/"]


@dataclass(frozen=True)
class FsUsage:
    bytes: int
    inodes: int

    @classmethod
    def of(cls, path: Path) -> FsUsage:
        st = os.statvfs(path)
        return cls((st.f_blocks - st.f_bfree) * st.f_frsize, max(st.f_files - st.f_ffree, 0))


class _Eta:
    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def __call__(self, done: int, total: int) -> float | None:
        elapsed = time.monotonic() - self.t0
        if done <= 0 or total <= 0 or elapsed < 2:
            return None
        return max(total - done, 0) * elapsed / done


def _drain(stream: Any, sink: Callable[[str], None]) -> threading.Thread:
    """Read a child's output in a thread, splitting on newlines and rsync's carriage returns."""

    def pump() -> None:
        buf = b""
        while True:
            chunk = stream.read1(65536) if hasattr(stream, "read1") else stream.read(65536)
            if not chunk:
                break
            buf += chunk
            parts = re.split(rb"[\r\n]", buf)
            buf = parts.pop()
            for p in parts:
                if p.strip():
                    sink(p.decode("utf-8", "replace"))
        if buf.strip():
            sink(buf.decode("utf-8", "replace"))

    t = threading.Thread(target=pump, daemon=True)
    t.start()
    return t


def _stop(proc: Any) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        os.killpg(proc.pid, signal.SIGCONT)  # a stopped copy must see the TERM too
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=10)
    except Exception:  # noqa: BLE001 - a child that ignores TERM gets KILL
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


_PROGRESS2 = re.compile(r"^\s*(\d[\d,]*)\s+(\d+)%")


def copy_tree(
    ctx: Runner,
    source: Path,
    dest: Path,
    *,
    resume: bool,
    xattrs: bool = True,
    acls: bool = True,
    total_bytes: int = 0,
    total_files: int = 0,
    progress: ProgressFn | None = None,
) -> CopyResult:
    """Copy `source`'s contents onto `dest` (an existing, mounted folder)."""
    t0 = time.monotonic()
    before = FsUsage.of(dest)
    totals = {"bytes": total_bytes, "files": total_files}
    if not total_bytes:
        # Only the byte total drives the ETA; counting files would walk the
        # whole tree again beside the copy, so files stay "n copied" unless the plan knows.
        def count() -> None:
            try:
                totals["bytes"] = int(ctx.run(["du", "-s", "-B1", "--", str(source)]).stdout.split()[0])
            except (CommandError, ValueError, IndexError):
                pass
        threading.Thread(target=count, daemon=True).start()

    unreadable: list[str] = []
    method = "rsync" if resume else "cp"
    if not resume:
        rc, errors = _run_watched(ctx, cp_argv(source, dest, xattrs=xattrs, acls=acls), dest, before,
                                  totals, progress, rsync=False)
        if rc != 0:
            # cp could not copy everything (unreadable files, odd names on odd
            # filesystems): let rsync finish and say exactly what is missing.
            unreadable.extend(errors[:50])
            method = "cp+rsync"
            resume = True
    if resume:
        argv = rsync_argv(source, dest, xattrs=xattrs, acls=acls)
        rc, errors = _run_watched(ctx, argv, dest, before, totals, progress, rsync=True)
        if rc in RSYNC_PARTIAL:
            unreadable = [e for e in errors if not e.startswith("rsync error:")][:50] or unreadable
        elif rc != 0:
            raise CommandError(argv, rc, "\n".join(errors[-20:]))
        else:
            unreadable = []
    after = FsUsage.of(dest)
    done_b = max(after.bytes - before.bytes, 0)
    done_n = max(after.inodes - before.inodes, 0)
    if progress:
        progress(max(done_b, totals["bytes"]), max(totals["bytes"], done_b),
                 max(done_n, totals["files"]), max(totals["files"], done_n), 0.0)
    return CopyResult(method, time.monotonic() - t0, done_b, done_n, tuple(unreadable))


def _run_watched(
    ctx: Runner,
    argv: list[str],
    dest: Path,
    before: FsUsage,
    totals: dict[str, int],
    progress: ProgressFn | None,
    *,
    rsync: bool,
) -> tuple[int, list[str]]:
    proc = ctx.spawn(argv)
    errors: list[str] = []
    reported = {"bytes": -1}

    def on_err(line: str) -> None:
        if len(errors) < 2000:
            errors.append(line)

    def on_out(line: str) -> None:
        m = _PROGRESS2.match(line)
        if m:
            reported["bytes"] = int(m.group(1).replace(",", ""))

    threads = [_drain(proc.stderr, on_err), _drain(proc.stdout, on_out)]
    eta = _Eta()
    last = 0.0
    try:
        while proc.poll() is None:
            if ctx.cancelled():
                _stop(proc)
                raise Aborted("the copy was cancelled", fix="rerun the same command to resume")
            try:
                proc.wait(timeout=0.2)  # returns at once when the command ends
            except subprocess.TimeoutExpired:
                pass
            if not progress or time.monotonic() - last < POLL_SECONDS:
                continue
            last = time.monotonic()
            try:
                now = FsUsage.of(dest)
            except OSError:
                continue
            done_b = max(now.bytes - before.bytes, 0)
            if rsync and reported["bytes"] >= 0:
                done_b = reported["bytes"]
            done_n = max(now.inodes - before.inodes, 0)
            tb, tn = totals["bytes"], totals["files"]
            progress(min(done_b, tb) if tb else done_b, tb, min(done_n, tn) if tn else done_n, tn,
                     eta(done_b, tb))
    finally:
        if proc.poll() is None:
            _stop(proc)
        for t in threads:
            t.join(timeout=5)
        ctx.child_done(proc)
    return proc.returncode, errors
