"""One restore per disk, whichever face starts it.

The rescue console runs a wizard on tty1 and another on the serial line, a
person may type `rescue restore` on a third console, and the unattended boot
entry runs one too. Two restores onto one disk destroy each other's work (and
the second would "release the leftovers" of the first: kill its copy and
unmount its filesystems), so the Executor takes this lock before it touches
anything and holds it until the restore ends.

The lock is flock(2) on a file in the engine's runtime folder (/run/rescue),
named after the disk's device number: the same disk under any name
(/dev/sdb, a /dev/disk/by-id link) is one lock, and the kernel drops the lock
when its holder dies, so a power cut or a killed process never leaves a stale
one. The file says who holds it (pid, face, terminal, since when), for the
refusal the other face shows.
"""

from __future__ import annotations

import fcntl
import json
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from rescue.engine.journal import identity_name
from rescue.errors import PlanRefused

DEFAULT_LOCK_DIR = Path("/run/rescue/locks")


class DiskBusy(PlanRefused):
    """Another restore onto the same disk is under way; this one wrote nothing."""


@dataclass(frozen=True)
class Holder:
    """Who holds a disk's lock, as the holder wrote it."""

    pid: int | None = None
    face: str = ""
    tty: str | None = None
    since: str = ""

    def describe(self) -> str:
        """'rescue wizard, pid 812, on /dev/ttyS0, since 14:02:11'"""
        parts = [self.face or "another rescue process"]
        if self.pid:
            parts.append(f"pid {self.pid}")
        if self.tty:
            parts.append(f"on {self.tty}")
        if self.since:
            parts.append(f"since {self.since}")
        return ", ".join(parts)

    @classmethod
    def read(cls, text: str) -> Holder:
        """What the lock file says; a half-written or foreign file names nobody."""
        try:
            data = json.loads(text)
            pid = data.get("pid")
            return cls(pid=pid if isinstance(pid, int) and not isinstance(pid, bool) else None,
                       face=str(data.get("face") or ""), tty=data.get("tty") or None,
                       since=str(data.get("since") or ""))
        except (ValueError, AttributeError):
            return cls()


def lock_name(target: str) -> str:
    """The lock file's name: the disk's device number, else (no such block device) its path."""
    try:
        st = os.stat(target)
        if stat.S_ISBLK(st.st_mode):
            return f"disk-{os.major(st.st_rdev)}-{os.minor(st.st_rdev)}.lock"
    except OSError:
        pass
    return f"{identity_name(os.path.realpath(target))}.lock"


def own_tty() -> str | None:
    """The terminal this process runs on (/dev/tty1, /dev/ttyS0), if any."""
    for fd in (0, 1, 2):
        try:
            if os.isatty(fd):
                return os.ttyname(fd)
        except OSError:
            continue
    return None


class DiskLock:
    """`with DiskLock(target, face):` holds the target's lock, or raises DiskBusy naming the holder."""

    def __init__(self, target: str, face: str, lock_dir: Path = DEFAULT_LOCK_DIR) -> None:
        self.target = target
        self.face = face
        self.path = Path(lock_dir) / lock_name(target)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = Holder.read(os.pread(fd, 4096, 0).decode(errors="replace"))
            os.close(fd)
            raise DiskBusy(
                f"another restore onto {self.target} is under way: {holder.describe()}",
                why="two restores onto one disk would destroy each other's work; this one wrote nothing",
                fix="let it finish, or stop it where it runs (c in the wizard, Ctrl-C in rescue restore); "
                    "then start again here",
            ) from None
        except BaseException:
            os.close(fd)
            raise
        me = {"pid": os.getpid(), "face": self.face, "tty": own_tty(),
              "since": time.strftime("%H:%M:%S"), "target": self.target}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Give the disk free. The file stays: removing it would let two later runs lock two files."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # closing drops the flock

    def __enter__(self) -> DiskLock:
        self.acquire()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()
