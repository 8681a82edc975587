"""Read-ahead of the backup's files, in the order the copy's cp runs will read them.

Why: a cp run copies one file at a time. For a small file it opens it, waits for
the backup disk to deliver its few blocks, then writes it; while it waits it makes
nothing. A dirvish image is mostly small files, so the cp runs spent about a third of
their time waiting (bench/bench_copy.py, a dirvish-like tree: 4 cp runs busy 67 % of
two cores). One thread here walks the same folders in the same order (cp -a reads a
folder's entries sorted by inode, depth first) and asks the kernel for each file's
blocks (posix_fadvise WILLNEED, which returns at once). The disk then has many reads
queued, which it serves in its own best order, and a cp run finds its file in memory.

It only reads, never writes, and changes no time on the backup (O_NOATIME; the
backup is mounted read-only anyway). It stays at most `window` bytes ahead of what
has landed on the target, so on a small rescue machine what it reads is still in
memory when cp gets there; files larger than SMALL get their first SMALL bytes asked
for (the kernel's own read-ahead follows cp through the rest). Whatever goes wrong
here (an unreadable folder, a file gone) is left for cp to report: read-ahead only
ever helps, and the copy is the same without it. Once cp reports an error it stops:
the kernel would read a failing disk's bad blocks twice, once ahead and once for cp,
and on a dying disk each such read may take its retries' time.
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

SMALL = 1 << 20  # bytes of a file asked for at once; beyond them, the kernel's read-ahead
MAX_ENTRIES = 100_000  # a folder's entries held for sorting; a bigger folder is read ahead in part
NOATIME = getattr(os, "O_NOATIME", 0)


class ReadAhead:
    """The thread that reads `units` (paths below `source`, b"" for all of it) ahead of the copy.

    `landed()`: bytes on the target so far. The walk pauses while it is more than `window`
    bytes (in blocks used, as landed counts them) ahead of it."""

    def __init__(self, source: Path, units: Sequence[bytes], landed: Callable[[], int], window: int) -> None:
        self.top = os.fsencode(os.path.abspath(source))
        self.units = units
        self.landed = landed
        self.window = window
        self.ahead = 0  # blocks used by the files walked so far, in bytes
        self.files = 0  # files asked for
        self._allowed = window
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="read-ahead", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def halt(self) -> None:
        """Ask for nothing more (the copy met an error); returns at once."""
        self._stop.set()

    def stop(self) -> None:
        self.halt()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        with contextlib.suppress(Exception):  # only a help: cp reads what this could not
            for unit in self.units:
                if self._stop.is_set():
                    return
                self._walk(os.path.join(self.top, unit) if unit else self.top)

    def _walk(self, path: bytes) -> None:
        """`path` and all below it, depth first, each folder's entries in inode order."""
        try:
            st = os.lstat(path)
        except OSError:
            return
        if stat.S_ISREG(st.st_mode):
            self._file(path)
            return
        if not stat.S_ISDIR(st.st_mode):
            return
        stack: list[Iterator[tuple[int, bytes, bool]]] = [_entries(path)]
        while stack and not self._stop.is_set():
            entry = next(stack[-1], None)
            if entry is None:
                stack.pop()
            elif entry[2]:
                stack.append(_entries(entry[1]))
            else:
                self._file(entry[1])

    def _file(self, path: bytes) -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | NOATIME)
        except PermissionError:  # O_NOATIME needs the file's owner or root
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            except OSError:
                return
        except OSError:
            return
        try:
            st = os.fstat(fd)
            if st.st_size:
                os.posix_fadvise(fd, 0, min(st.st_size, SMALL), os.POSIX_FADV_WILLNEED)
        except OSError:
            return
        finally:
            os.close(fd)
        self.files += 1
        self.ahead += st.st_blocks * 512
        while self.ahead > self._allowed and not self._stop.is_set():
            self._allowed = self.landed() + self.window
            if self.ahead > self._allowed:
                self._stop.wait(0.05)


def _entries(folder: bytes) -> Iterator[tuple[int, bytes, bool]]:
    """(inode, path, is a folder) of the folder's folders and regular files, in inode order."""
    try:
        with os.scandir(folder) as it:
            found = []
            for e in it:
                folder = e.is_dir(follow_symlinks=False)
                if folder or e.is_file(follow_symlinks=False):
                    found.append((e.inode(), e.path, folder))
                    if len(found) >= MAX_ENTRIES:
                        break
    except OSError:
        return iter(())
    found.sort()
    return iter(found)


@contextlib.contextmanager
def read_ahead(source: Path, units: Sequence[bytes], landed: Callable[[], int], window: int) -> Iterator[ReadAhead | None]:
    """A ReadAhead running while the block runs (none when `window` is 0)."""
    if window <= 0:
        yield None
        return
    ra = ReadAhead(source, units, landed, window)
    ra.start()
    try:
        yield ra
    finally:
        ra.stop()
