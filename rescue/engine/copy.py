"""The copy engine: one image tree onto one freshly made filesystem.

Why these tools:
- A fresh copy is `cp -a --sparse=auto` (GNU coreutils). It keeps content,
  numeric owners, modes with setuid/setgid/sticky, times of files, links and
  folders, hard links within one cp run, device nodes, fifos, xattrs and ACLs,
  and the holes of sparse files (found with SEEK_HOLE). Its memory stays
  small (it remembers only multiply-linked inodes). --sparse=always (zero
  runs become holes) was measured 30-100% slower on large files
  (bench/bench_copy.py), so a file stored fully allocated in the backup is
  restored fully allocated.
- One cp is one thread, and most of a copy's CPU time is the kernel making
  inodes and moving pages on cp's behalf; much of the rest a cp spends
  waiting for the disks. So the tree is shared among `xargs -P WORKERS` cp
  runs, two per core on a machine of several (one process group, so cancel and
  a rerun's clean-up end them all; on one core a single cp copies it all):
  folders holding more than their share are split into their
  entries (down to SPLIT_DEPTH), each unit is copied whole by one cp
  (`cp -a --target-directory=DEST/PARENT SOURCE/UNIT`), largest first.
  Folders that were split are made first and get their owner, mode, xattrs,
  ACLs and times last, deepest first. A file linked from two units would be
  copied twice, so the one pass over the tree that measures it for the split
  (find runs, scan_tree) also lists the inode and name of every multiply-linked
  file; sorted beside the copy (sort | uniq, no Python memory per file: in a
  dirvish image nearly every file has links into other images, only links seen
  twice inside this tree count), it gives those inodes, and the copies are
  replaced with hard links afterwards. (A second pass for the links cost
  0.2 s wall and CPU taken from the cp runs on a dirvish-like tree.)
- A cp run reading a small file waits for the backup disk and copies nothing
  meanwhile: on a dirvish-like tree the cp runs kept two cores only two thirds
  busy. A read-ahead thread (rescue.engine.readahead) walks the units in the
  order xargs hands them out and asks the kernel for each file's blocks, at most
  READ_AHEAD_BYTES ahead of what has landed on the target; the cp runs then find
  their files in memory (measured: the dirvish-like tree 5.44 s against 6.42 s
  without it, the default corpus 2.22 s against 2.65 s, same run, best of 3).
- While the copy runs, the kernel starts writing to the disks once 64 MiB
  are dirty instead of a tenth of memory (vm.dirty_background_bytes, put back
  afterwards; write-behind): the disk writes overlap the copying instead of
  all waiting for the sync at the end, the dirty page cache stays small, and
  the progress (used blocks) is at most that far ahead of the disk. It is
  ordinary background writeback: nothing here weakens what a power cut can
  lose. The old value is noted in /run, so the next copy puts it back when
  a restore is killed. An earlier write-behind synced the target every second; each syncfs
  ends with a disk cache flush that every cp run then waited for (measured:
  copy + final sync 5.9-7.4 s with it, 4.6-6.0 s with this).
- Measured (bench/bench_copy.py, 2 cores shared with other work, load 3-6,
  ext4 loop disks, source mounted read-only, best of 3, the order of the
  methods rotated each round or the restore not first; wall time including
  the final sync).
  30,000 small files + 3 x 256 MiB, four runs (one with the copy's tests
  running beside it): restore 2.2-7.7 s; tar pipe (tar --xattrs --acls
  --numeric-owner -c | tar ... -xp) 5.1-8.3 s, with the write-behind
  4.2-6.3 s; cp -a with it 8.3-10.3 s; rsync -aHAX with it 4.3-9.1 s:
  restore / fastest peer 0.82, 0.99, 0.35, 1.72 (the last with the load
  at 4-5, tar+wb at 4.5 s): what else the machine runs decides more than
  the method, and the 0.9 goal is met in two of four runs. A dirvish-like tree
  (100,000 files each linked from another image), two runs: restore
  7.0-7.9 s, tar+wb 7.6-9.4 s, cp+wb 9.1-9.7 s, tar 11.1-11.6 s, rsync+wb
  10.4-17.3 s (0.84 and 0.92 of the fastest, tar+wb both times).
  The first copy of a bench round runs up to 2-3x slower whatever the
  method (the figures of issue 19, restore 1.29x a tar pipe, and the 5-14 %
  once measured for four cp runs over two, were most likely taken in a fixed
  order with the restore first); with the order rotated two cp runs and four were each
  ahead in some runs (2.6-3.8 s against 2.2-4.3 s), but behind four on
  the dirvish-like tree in both (8.6-8.7 s against 7.0-7.9 s), so four
  stay. Without the write-behind the restore took 5.4-7.1 s (this host
  has 24 GiB, so nothing was written before the final sync). Large files
  at 0.87-1.02 of a direct-I/O dd when the machine is quiet. A million
  files each linked from another image (empty files): 57 s, peak RSS of
  the process and its commands alive at once 103 MiB (python 27 MiB, the
  largest command 66 MiB; bench_copy --rss). The cp runs cost more CPU
  than one cp or a tar pipe (ext4's locks under several writers, the du
  and link scans: 7.2-7.9 s against 5.4-6.7 s on the dirvish-like tree), so
  on a machine busy with other work the parallel copy can be slower than
  one cp; a restore has the machine to itself.
  With the one pass over the tree (scan_tree; load 2.6-6, qemu VMs beside it):
  the dirvish-like tree 7.1-9.5 s, 0.82, 0.93 and 0.71 of the fastest peer
  in three runs; the default corpus 3.0-5.2 s, 0.58 and 0.68; a million
  linked files 44.6 s, peak RSS 115 MiB (python 40 MiB, largest command
  66 MiB). Measured and dropped: handing one cp up to 16 units of one folder
  (fewer cp runs; CPU and wall time within the noise), write-behind from 32
  or 256 MiB instead of 64 (0.99 and 0.91 of the 64 MiB copy's time).
- A resumed copy (the journal says an earlier run started it) is finished by
  `rsync -aHAX --numeric-ids --sparse --delete`: files already complete (same
  size and time; cp sets the time last) are not copied again, a half-written
  file is redone, hard links are made whole again, and anything the earlier
  run left over goes away. A fresh copy whose cp reported errors is finished
  the same way.

Progress: cp prints nothing while it works, so the target filesystem's used
blocks and inodes (statvfs) are polled against the expected totals; rsync
reports its own progress with --info=progress2.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from rescue.engine.copyerrors import classify, drop_partial_copies, rsync_unescape
from rescue.engine.readahead import read_ahead
from rescue.errors import Aborted, RescueError
from rescue.run import CommandError
from rescue.run import run as gateway_run
from rescue.run import spawn as gateway_spawn

# xfs shows a file's ACL to root a second time, as trusted.SGI_ACL_FILE/_DEFAULT xattrs; a
# bank made from xfs holds them, one copied with cp -a does not (libattr's xattr.conf skips
# them, as cp does when restoring). They are the ACL itself, which -A copies and compares:
# left out, a resumed copy equals a fresh cp one, and verify does not call them a difference.
XFS_ACL_FILTER = "--filter=-x trusted.SGI_ACL_*"

# rsync: 23 = some files could not be transferred, 24 = source files vanished.
RSYNC_PARTIAL = (23, 24)
POLL_SECONDS = 1.0
# A copy that does nothing at all for this long is stuck, not slow: no byte or file lands on
# the target, no line is printed, and none of its processes makes a read or write call (a
# dying backup disk's retries hold one read for minutes at most). rsync's --timeout does not
# fire for a local copy waiting on itself (rsync -aH has deadlocked so, see copy_tree).
STALL_SECONDS = 15 * 60
READ_AHEAD_BYTES = 64 << 20  # how far the read-ahead of a fresh copy may be ahead of the target (0: none)
WRITE_BEHIND_BYTES = 64 << 20  # dirty bytes from which the kernel writes back during a copy (0: the machine's own)
VM = Path("/proc/sys/vm")
WRITE_BEHIND_STATE = Path("/run/rescue-write-behind")  # "pid bytes ratio limit" of a copy that lowered it
# Parallel cp runs for a fresh copy: two per core, at most 4. A cp spends much of its time
# waiting (a cold inode from the backup disk, a journal commit), and a
# second cp per core copies meanwhile; beyond a few the disks are the limit (6 and 8 measured
# no faster than 4 on 2 cores), and more readers of one spinning backup disk only make it
# seek more. Measured with bench/bench_copy.py --methods restore-2,restore-4,restore-6.
# One core: one cp, no split. In the drill's rescue VM (one CPU) the demo's 510 MiB copied in
# 20.7 s with one cp, 27.7-35.5 s with two and 40.5 s with four (rescue drill --compare-tar):
# there the scan before the split and the cp runs' switching cost more than the waits they fill.
def workers_for(cpus: int) -> int:
    """cp runs for a machine of `cpus` cores (see above)."""
    return min(2 * cpus, 4) if cpus > 1 else 1


WORKERS = workers_for(len(os.sched_getaffinity(0)))
SPLIT_DEPTH = 3  # folders deeper than this are never split among workers
SCRATCH_PREFIX = "rescue-copy-"  # + pid: the scratch folder of a parallel copy, in /tmp
MAX_LOOSE = 64  # a folder with more files (not folders) than this is copied whole


class Runner(Protocol):
    def run(self, argv: Sequence[Any], **kwargs: Any) -> Any: ...

    def spawn(self, argv: Sequence[Any], **kwargs: Any) -> Any: ...

    def child_done(self, proc: Any) -> None: ...

    def cancelled(self) -> bool: ...


class Unjournalled:
    """The gateway alone, nothing journalled or logged: the copy outside a restore (bench, tests)."""

    def run(self, argv: Sequence[Any], **kwargs: Any) -> Any:
        return gateway_run(argv, **kwargs)

    def spawn(self, argv: Sequence[Any], **kwargs: Any) -> Any:
        return gateway_spawn(argv, **kwargs)

    def child_done(self, proc: Any) -> None:
        pass

    def cancelled(self) -> bool:
        return False


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


def skip_filters(skip: Sequence[str]) -> list[str]:
    """rsync rules that copy the folders `skip` names (mount points) but nothing inside them.

    A whole-machine image (rsnapshot, a plain folder) holds /home's files under home/;
    they belong on the /home filesystem, which its own copy fills."""
    return [f"--exclude=/{rel.strip('/')}/*" for rel in skip]


def rsync_argv(source: Path, dest: Path, *, xattrs: bool = True, acls: bool = True,
               progress: bool = True, protect: Sequence[str] = (), skip: Sequence[str] = ()) -> list[str]:
    # --timeout: an rsync whose other half falls silent for 10 minutes (a wedged disk) ends
    # with an error (the step fails, a rerun resumes) instead of waiting forever.
    argv = ["rsync", "-aH", "--numeric-ids", "--sparse", "--delete", "--timeout=600"]
    # Mount points of the filesystems below this one (a separate /tmp): a backup that left
    # the folder out would have --delete try to remove it, and rmdir of a mount point is EBUSY.
    argv += [f"--filter=P /{rel.strip('/')}/" for rel in protect]
    argv += skip_filters(skip)
    if acls:
        argv.append("-A")
    if xattrs:
        argv += ["-X", XFS_ACL_FILTER]
    if progress:
        argv += ["--info=progress2", "--no-human-readable"]
    return argv + ["--", f"{source}/", f"{dest}/"]


def _sysctl(vm: Path, name: str) -> int:
    return int((vm / name).read_text())


def writeback_setting(vm: Path = VM) -> tuple[int, int]:
    """The machine's (dirty_background_bytes, dirty_background_ratio): one of them is 0."""
    return _sysctl(vm, "dirty_background_bytes"), _sysctl(vm, "dirty_background_ratio")


def _set_sysctl(vm: Path, name: str, value: int) -> None:
    # In the kernel, setting one of dirty_background_bytes/_ratio sets the other to 0.
    (vm / name).write_text(str(value))


@contextlib.contextmanager
def write_behind(limit: int = WRITE_BEHIND_BYTES, vm: Path = VM, state: Path = WRITE_BEHIND_STATE) -> Iterator[None]:
    """Background writeback from `limit` dirty bytes on while the block runs (see the
    module docstring). The old setting is noted in `state` and put back afterwards, or
    by the next copy when this process is killed. Left alone where it is as low already
    (a small machine, another copy running) or cannot be changed (not root, a container)."""
    put_back_writeback(vm, state)  # a killed copy's
    try:
        old = writeback_setting(vm)
        with open("/proc/meminfo") as f:
            memory = int(f.readline().split()[1]) * 1024  # MemTotal: the kernel's base is a bit less
        changed = (old[0] or memory * old[1] // 100) > limit
        if changed:
            state.write_text(f"{os.getpid()} {old[0]} {old[1]} {limit}\n")  # first: a kill may come
            try:
                _set_sysctl(vm, "dirty_background_bytes", limit)
            except OSError:
                state.unlink(missing_ok=True)
                raise
    except (OSError, ValueError, IndexError):
        changed = False
    try:
        yield
    finally:
        if changed:
            put_back_writeback(vm, state, pid=os.getpid())


def put_back_writeback(vm: Path = VM, state: Path = WRITE_BEHIND_STATE, pid: int | None = None) -> bool:
    """Put back the writeback setting a copy lowered: that of process `pid`, or, without
    one, that of a copy whose process is gone. Not where someone changed it since.
    True when the note was taken care of."""
    try:
        owner, old_bytes, old_ratio, limit = (int(x) for x in state.read_text().split())
    except (OSError, ValueError):
        return False
    ours = owner == pid if pid is not None else not os.path.exists(f"/proc/{owner}")
    if not ours:
        return False
    with contextlib.suppress(OSError, ValueError):
        if _sysctl(vm, "dirty_background_bytes") == limit:
            if old_bytes:
                _set_sysctl(vm, "dirty_background_bytes", old_bytes)
            else:
                _set_sysctl(vm, "dirty_background_ratio", old_ratio)
    state.unlink(missing_ok=True)
    return True


@dataclass(frozen=True)
class Split:
    """How a fresh copy is shared among parallel cp runs (paths relative to the source, as bytes)."""

    units: tuple[bytes, ...]  # each copied whole by one cp, largest first
    shells: tuple[bytes, ...]  # folders split into units: made first, metadata set last; b"" is the top

    def unit_of(self, rel: bytes) -> bytes:
        """The unit whose cp copies `rel` (hard links are kept only inside one cp)."""
        parts = rel.split(b"/")
        for i in range(1, len(parts)):
            head = b"/".join(parts[:i])
            if head not in self.shells:
                return head
        return rel


def _join(rel: bytes, name: bytes) -> bytes:
    return rel + b"/" + name if rel else name


def _used(entry: os.DirEntry[bytes]) -> int:
    """Bytes a directory entry uses; 0 when it cannot be looked at (cp will say why)."""
    try:
        return entry.stat(follow_symlinks=False).st_blocks * 512
    except OSError:
        return 0


@dataclass(frozen=True)
class TreeScan:
    """One pass over the source: what splits the tree and what relinks it.

    sizes: bytes used under each path down to SPLIT_DEPTH (b"" is the whole tree).
    links: files of `%20i /abs/path\\0` records, one per name of every multiply-linked
    non-folder, for cross_links to sort; None when not asked for, or when a scan command
    failed (a list that may miss a name must not be trusted: rsync -H makes the links whole).
    """

    sizes: dict[bytes, int]
    links: tuple[Path, ...] | None = None


def _records(path: Path) -> Iterator[bytes]:
    """The NUL-ended records of a file, read in pieces (a million files' list is not held at once)."""
    with open(path, "rb") as f:
        rest = b""
        while block := f.read(1 << 22):
            parts = (rest + block).split(b"\0")
            rest = parts.pop()
            yield from parts


def folder_sizes(ctx: Runner, source: Path, workers: int) -> dict[bytes, int]:
    """Bytes used under each path of the tree down to SPLIT_DEPTH (see scan_tree)."""
    return scan_tree(ctx, source, workers).sizes


def scan_tree(ctx: Runner, source: Path, workers: int, links_to: Path | None = None) -> TreeScan:
    """The sizes that split the tree and, with `links_to` (a scratch folder), its multiply-linked
    names, from one pass over the source.

    Reading every inode of a cold backup disk is a chain of waits (a dirvish-like tree of
    100,000 files: 0.7 s), and before this the tree was read twice: du for the sizes before
    the copy, a find for the links beside it (0.2-0.5 s of CPU taken from the cp runs).
    So one find per share of the tree gives both: each entry's blocks, and the inode and
    name of each multiply-linked non-folder into a list of its own. The folders two levels
    down are measured by `workers` find runs at once; the two levels above are summed from
    them and the files beside them (a folder with more than MAX_LOOSE files is copied whole
    and measured whole by find, not a stat per file here). A file hard-linked from two
    places counts in both: the sizes only share out the work.
    """
    top = os.fsencode(os.path.abspath(source))
    sizes: dict[bytes, int] = {}
    deep: list[bytes] = []  # folders for find: at depth 2, or higher up with many files
    children: dict[bytes, list[bytes]] = {}
    linked: list[bytes] = []  # multiply-linked files beside the scanned folders

    def scan(rel: bytes, depth: int) -> None:
        try:
            with os.scandir(os.path.join(top, rel)) as it:
                entries = list(it)
            itself = os.lstat(os.path.join(top, rel)).st_blocks * 512
        except OSError:
            sizes[rel] = 0  # unreadable (a damaged backup): its cp says so, rsync lists it
            return
        loose = [e for e in entries if not e.is_dir(follow_symlinks=False)]
        if len(loose) > MAX_LOOSE:
            deep.append(rel)
            return
        sizes[rel] = itself
        children[rel] = [_join(rel, e.name) for e in entries]
        for e in loose:
            sizes[_join(rel, e.name)] = _used(e)
            with contextlib.suppress(OSError):
                st = e.stat(follow_symlinks=False)
                if st.st_nlink > 1:
                    linked.append(b"%20d %s" % (st.st_ino, os.path.join(top, _join(rel, e.name))))
        for e in entries:
            if not e.is_dir(follow_symlinks=False):
                continue
            if depth < 1:
                scan(_join(rel, e.name), depth + 1)
            else:
                deep.append(_join(rel, e.name))

    scan(b"", 0)
    chunks = [deep[i::4 * workers] for i in range(4 * workers) if deep[i::4 * workers]]
    with tempfile.TemporaryDirectory(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-") as tmp:

        def find(i: int) -> int:
            # the blocks and type of every entry with the start point it was found from (%H), each name its
            # own NUL-ended field; into a file, read back in pieces (a million names do not fit at once)
            listed = ["-fprintf", os.path.join(tmp, f"sizes.{i}"), "%b %y %H\\0%P\\0"]
            if links_to is not None:
                listed = ["!", "-type", "d", "-links", "+1", "-fprintf", str(links_to / f"links.{i}"),
                          "%20i %p\\0", ",", *listed]
            argv = ["find", *(os.fsdecode(os.path.join(top, r) if r else top) for r in chunks[i]), *listed]
            return ctx.run(argv, check=False).returncode

        with ThreadPoolExecutor(max_workers=max(workers, 1)) as pool:
            failed = any(list(pool.map(find, range(len(chunks)))))
        for i in range(len(chunks)):
            fields = _records(Path(tmp) / f"sizes.{i}")
            for head in fields:
                path = next(fields, b"")
                n, kind, start = head.split(b" ", 2)
                rel = start[len(top) + 1:]
                used = int(n) * 512
                sizes[rel] = sizes.get(rel, 0) + used
                if b"/" in path or (path and kind == b"d"):  # the folders one level down, as du -d 1
                    first = _join(rel, path.split(b"/", 1)[0])
                    sizes[first] = sizes.get(first, 0) + used
    for rel in sorted(children, key=lambda r: -r.count(b"/") - bool(r)):  # the top last
        sizes[rel] += sum(sizes.get(c, 0) for c in children[rel])
    if links_to is None:
        return TreeScan(sizes)
    beside = links_to / "links.top"
    beside.write_bytes(b"".join(r + b"\0" for r in linked))
    found = tuple(links_to / f"links.{i}" for i in range(len(chunks)))
    return TreeScan(sizes, None if failed else (beside, *found))


def plan_split(ctx: Runner, source: Path, workers: int, scan: TreeScan | None = None) -> tuple[Split | None, int]:
    """Split the tree for `workers` cp runs; None when it cannot be shared usefully. Also the total
    used. `scan`: the tree's scan_tree, when the caller made it (for its links too)."""
    sizes = (scan or scan_tree(ctx, source, workers)).sizes
    total = sizes.get(b"", 0)
    if workers < 2 or not total:
        return None, total
    limit = total // (4 * workers)
    units: list[tuple[int, bytes]] = []
    shells: list[bytes] = []

    def visit(rel: bytes, depth: int) -> bool:
        try:
            with os.scandir(os.path.join(os.fsencode(source), rel) if rel else os.fsencode(source)) as it:
                entries = list(it)
        except OSError:
            return False  # unreadable: one cp gets it whole and reports it (the top: one cp for all)
        subs = [e for e in entries if e.is_dir(follow_symlinks=False)]
        loose = [e for e in entries if not e.is_dir(follow_symlinks=False)]
        if len(loose) > MAX_LOOSE or (rel and (depth > SPLIT_DEPTH or sizes.get(rel, 0) <= limit or not subs)):
            return False
        shells.append(rel)
        for e in subs:
            child = _join(rel, e.name)
            if not visit(child, depth + 1):
                units.append((sizes.get(child, 0), child))
        units.extend((_used(e), _join(rel, e.name)) for e in loose)
        return True

    if not visit(b"", 1) or len(units) < 2:
        return None, total
    units.sort(key=lambda u: -u[0])
    return Split(tuple(u for _, u in units), tuple(shells)), total


def cross_links(ctx: Runner, source: Path, split: Split, tmp: Path,
                listed: Sequence[Path] | None = None) -> list[list[bytes]] | None:
    """Inodes linked from more than one unit of `split` (their paths), or None if the scan failed.

    `listed`: the multiply-linked names scan_tree already wrote; without it a find lists them."""
    top = os.fsencode(os.path.abspath(source))
    ordered = tmp / "links.sorted"
    try:
        if listed is None:
            listed = [tmp / "links"]
            ctx.run(["find", os.fsdecode(top), "-mindepth", "1", "!", "-type", "d", "-links", "+1",
                     "-fprintf", str(listed[0]), "%20i %p\\0"])
        ctx.run(["sort", "-z", "-S", "64M", "-T", str(tmp), "-o", str(ordered), "--", *map(str, listed)])
        out = ctx.run(["uniq", "-z", "-D", "-w", "20", str(ordered)], binary=True).stdout.encode("latin-1")
    except CommandError:
        return None
    groups: dict[bytes, list[bytes]] = {}
    for rec in out.split(b"\0"):
        if len(rec) > 22 + len(top):
            groups.setdefault(rec[:20], []).append(rec[22 + len(top):])  # "%20i " and the top's "/" off
    return [g for g in groups.values() if len({split.unit_of(r) for r in g}) > 1]


def copy_meta(src: bytes, dst: bytes, *, xattrs: bool, acls: bool) -> None:
    """What cp -a gives a folder (owner, mode, xattrs, ACLs, times), for the folders split among workers."""
    st = os.lstat(src)
    os.chown(dst, st.st_uid, st.st_gid, follow_symlinks=False)
    os.chmod(dst, stat.S_IMODE(st.st_mode))
    for name in os.listxattr(src, follow_symlinks=False) if (xattrs or acls) else ():
        is_acl = name.startswith("system.posix_acl_")
        if (acls if is_acl else xattrs) and not name.startswith("trusted.SGI_ACL_"):
            with contextlib.suppress(OSError):  # as cp -a: an xattr the target cannot hold is not an error
                os.setxattr(dst, name, os.getxattr(src, name, follow_symlinks=False), follow_symlinks=False)
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def relink(dest: Path, groups: list[list[bytes]]) -> set[bytes]:
    """Make each group's copies one inode again; returns the folders whose entries changed."""
    touched: set[bytes] = set()
    d = os.fsencode(dest)
    for group in groups:
        anchor = os.path.join(d, group[0])
        ino = os.lstat(anchor).st_ino
        for rel in group[1:]:
            p = os.path.join(d, rel)
            if os.lstat(p).st_ino != ino:
                os.unlink(p)
                os.link(anchor, p)
                touched.add(os.path.dirname(rel))
    return touched


@dataclass(frozen=True)
class FsUsage:
    bytes: int
    inodes: int
    counts_inodes: bool = True  # False on btrfs and the like: statvfs gives no inode figures

    @classmethod
    def of(cls, path: Path) -> FsUsage:
        st = os.statvfs(path)
        return cls((st.f_blocks - st.f_bfree) * st.f_frsize, max(st.f_files - st.f_ffree, 0),
                   counts_inodes=st.f_files > 0)


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
    protect: Sequence[str] = (),
    skip: Sequence[str] = (),
) -> CopyResult:
    """Copy `source`'s contents onto `dest` (an existing, mounted folder).

    `protect`: folders relative to dest that rsync must never remove (mount points below it).
    `skip`: folders relative to source copied empty (their files go to another filesystem);
    cp cannot leave them out, so such a copy is rsync's from the start.
    """
    t0 = time.monotonic()
    clear_stale_scratch()
    before = FsUsage.of(dest)
    # Files copied are counted by the target's inode use; a target that keeps no
    # such count (btrfs) would show "0 of N files" all along: show no count there.
    totals = {"bytes": total_bytes, "files": total_files if before.counts_inodes else 0}
    if not total_bytes and (resume or WORKERS < 2):
        # Only the byte total drives the ETA; counting files would walk the
        # whole tree again beside the copy, so files stay "n copied" unless the plan knows.
        def count() -> None:
            try:
                totals["bytes"] = int(ctx.run(["du", "-s", "-B1", "--", str(source)]).stdout.split()[0])
            except (CommandError, ValueError, IndexError):
                pass
        threading.Thread(target=count, daemon=True).start()

    unreadable: list[str] = []
    method = "rsync" if resume or skip else "cp"
    if not resume and not skip:
        rc, errors = _fresh_copy(ctx, source, dest, before, totals, progress, xattrs=xattrs, acls=acls)
        if rc != 0:
            # cp could not copy everything (unreadable files, odd names on odd
            # filesystems): let rsync finish and say exactly what is missing.
            unreadable.extend(errors[:1000])
            method = "cp+rsync"
            resume = True
            # What cp half-copied of a file it could not read goes first, with every hard link
            # to it: rsync -H waits forever when such a file already exists at the target.
            drop_partial_copies(dest, classify(errors, source, dest).unreadable)
    if resume:
        # A resumed copy, or cp's failed one: cp's lines cannot be trusted to name every
        # half-written file (the parallel cp runs share one stderr, and two read errors at
        # the same moment interleave into lines that name none; the restore then hung about
        # 1 run in 4). The dry run finds them from the files themselves.
        clear_redone_files(ctx, source, dest, xattrs=xattrs, acls=acls, skip=skip)
    if resume or skip:
        argv = rsync_argv(source, dest, xattrs=xattrs, acls=acls, protect=protect, skip=skip)
        rc, errors = _run_watched(ctx, argv, dest, before, totals, progress, rsync=True)
        if rc in RSYNC_PARTIAL:
            unreadable = [e for e in errors if not e.startswith("rsync error:")][:1000] or unreadable
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


def clear_redone_files(ctx: Runner, source: Path, dest: Path, *, xattrs: bool, acls: bool,
                       skip: Sequence[str] = ()) -> int:
    """Remove the target's copies of the files a resumed rsync will copy again.

    rsync -H waits forever when a hard-linked source file it cannot read
    already has a copy at the target (a half-written one left by a killed run;
    seen with rsync 3.5.0). Files it will rewrite anyway cost nothing to
    remove (a local rsync copies whole files), so a dry run names them
    (`>f`/`hf` items that exist at the target) and they go first; a read
    error then ends as an ordinary unreadable file. Returns how many went.
    """
    argv = rsync_argv(source, dest, xattrs=xattrs, acls=acls, progress=False, skip=skip)  # a dry run: deletes nothing
    # Read line by line: after an early kill nearly every file is listed, and a
    # million names held at once would not fit a 1 GiB rescue machine.
    proc = ctx.spawn([argv[0], "--dry-run", "--out-format=%i %n", *argv[1:]], stderr=subprocess.DEVNULL)
    try:
        return _clear_listed(proc.stdout, dest)
    except BaseException:
        if proc.poll() is None:  # stopped half way (cancel, error): the dry run is of no use now
            _stop(proc)
        raise
    finally:
        # After its whole listing was read the dry run ends by itself: it may still be
        # exiting at this moment, and must be waited for, not stopped.
        proc.wait()
        ctx.child_done(proc)


def _clear_listed(listing: Any, dest: Path) -> int:
    """Remove the existing regular files a dry run's `%i %n` lines name (see clear_redone_files)."""
    top = os.path.realpath(dest)
    gone = 0
    for raw in listing:
        line = raw.rstrip(b"\n").decode("utf-8", "surrogateescape")
        item, _, name = line.partition(" ")
        if len(item) != 11 or item[:2] not in (">f", "hf") or "+" in item[2:]:
            continue  # not a regular file, or a new one: nothing at the target to clear
        path = dest / rsync_unescape(name)
        if os.path.commonpath([top, os.path.realpath(path.parent)]) != top:
            continue  # a link in the target's folders leads elsewhere: never remove outside it
        try:
            if stat.S_ISREG(os.lstat(path).st_mode):
                os.unlink(path)
                gone += 1
        except FileNotFoundError:
            pass
    return gone


def clear_stale_scratch(tmp: Path | None = None) -> list[Path]:
    """Remove the scratch folders of copies whose process is gone (a killed restore
    cannot remove its own; on the rescue system /tmp is memory). Returns them."""
    gone = []
    for d in Path(tmp or tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*-*"):
        pid = d.name.removeprefix(SCRATCH_PREFIX).split("-")[0]
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            shutil.rmtree(d, ignore_errors=True)
            gone.append(d)
    return gone


def _fresh_copy(ctx: Runner, source: Path, dest: Path, before: FsUsage, totals: dict[str, int],
                progress: ProgressFn | None, *, xattrs: bool, acls: bool) -> tuple[int, list[str]]:
    """cp -a, shared among WORKERS cp runs when the tree splits (see the module docstring)."""
    argv = cp_argv(source, dest, xattrs=xattrs, acls=acls)

    def landed() -> int:
        return FsUsage.of(dest).bytes - before.bytes

    def copying(command: list[str], units: Sequence[bytes]) -> tuple[int, list[str]]:
        """`command` watched, the read-ahead going through `units` beside it (halted at an error)."""
        with read_ahead(source, units, landed, READ_AHEAD_BYTES) as ra:
            return _run_watched(ctx, command, dest, before, totals, progress, rsync=False,
                                on_error=ra.halt if ra else None)

    if WORKERS < 2:
        return copying(argv, [b""])
    # ignore_cleanup_errors: after a cancel the link sort may still be writing here
    with tempfile.TemporaryDirectory(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-", ignore_cleanup_errors=True) as tmp:
        tree = scan_tree(ctx, source, WORKERS, links_to=Path(tmp))  # the sizes and the linked names at once
        split, total = plan_split(ctx, source, WORKERS, scan=tree)
        totals["bytes"] = totals["bytes"] or total
        if split is None:
            return copying(argv, [b""])
        # The links are only needed once the copy is done: their sort runs beside it (a daemon
        # thread, so a cancelled copy does not wait for it; its commands then fail harmlessly
        # in the removed folder and the copy is rerun anyway). A scan that failed lists none:
        # rsync then makes them whole.
        scan: dict[str, list[list[bytes]] | None] = {}

        def scan_links() -> None:
            try:
                scan["links"] = cross_links(ctx, source, split, Path(tmp), listed=tree.links) if tree.links else None
            except Exception:  # noqa: BLE001 - whatever broke the scan, rsync makes the links whole
                scan["links"] = None

        scanner = threading.Thread(target=scan_links, daemon=True)
        scanner.start()
        s, d = os.fsencode(os.path.abspath(source)), os.fsencode(os.path.abspath(dest))
        for rel in split.shells:
            os.makedirs(os.path.join(d, rel), exist_ok=True)
        # xargs hands each cp one (target folder, unit) pair; absolute paths, so cp's
        # messages name the backup's files as a single cp's do
        units = Path(tmp) / "units"
        units.write_bytes(b"".join(b"--target-directory=%s\0%s\0" % (os.path.dirname(os.path.join(d, u)),
                                                                       os.path.join(s, u)) for u in split.units))
        xargs = ["xargs", "-0", "-r", "-P", str(WORKERS), "-n", "2", "-a", str(units), *argv[:-3]]
        rc, errors = copying(xargs, split.units)  # read ahead in the order xargs hands them out
        scanner.join()
    links = scan.get("links")
    if rc != 0 or links is None:
        return rc or 1, errors  # rsync finishes: it also makes split hard links whole (-H)
    try:
        for rel in relink(dest, links) - set(split.shells):
            st = os.lstat(os.path.join(s, rel))
            os.utime(os.path.join(d, rel), ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
        for rel in sorted(split.shells, key=lambda r: -r.count(b"/") - bool(r)):  # deepest first, the top last
            copy_meta(os.path.join(s, rel), os.path.join(d, rel), xattrs=xattrs, acls=acls)
    except OSError as e:
        return 1, [*errors, f"rescue: {e}"]  # rsync finishes what could not be set here
    return 0, errors


class CopyStalled(RescueError):
    """The copy made no progress of any kind for STALL_SECONDS; it was stopped."""


def group_io(pgid: int, proc_root: Path = Path("/proc")) -> int:
    """Read and write calls made so far by the live processes of one process group.

    The copy's processes (xargs, the cp runs, rsync's three) share the group its spawn made.
    A process that exits takes its counts along: any change, up or down, is activity."""
    total = 0
    for entry in proc_root.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
            if int(fields[2]) != pgid:  # after the name: state, ppid, pgrp
                continue
            for line in (entry / "io").read_text().splitlines():
                key, _, value = line.partition(":")
                if key in ("syscr", "syscw"):
                    total += int(value)
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile, or not ours to read
    return total


def _run_watched(
    ctx: Runner,
    argv: list[str],
    dest: Path,
    before: FsUsage,
    totals: dict[str, int],
    progress: ProgressFn | None,
    *,
    rsync: bool,
    on_error: Callable[[], None] | None = None,
) -> tuple[int, list[str]]:
    """Run a copy command, with progress and the stall watch; its exit status and error lines.
    `on_error`: called at each error line (the read-ahead stops: a failing backup disk is not
    asked for its bad blocks twice, once ahead and once by cp)."""
    proc = ctx.spawn(argv)
    errors: list[str] = []
    reported = {"bytes": -1}

    lines = [0]

    def on_err(line: str) -> None:
        lines[0] += 1
        if on_error is not None:
            on_error()
        if len(errors) < 2000:
            errors.append(line)

    def on_out(line: str) -> None:
        lines[0] += 1
        m = _PROGRESS2.match(line)
        if m:
            reported["bytes"] = int(m.group(1).replace(",", ""))

    threads = [_drain(proc.stderr, on_err), _drain(proc.stdout, on_out)]
    eta = _Eta()
    last = 0.0
    seen: tuple[object, ...] = ()
    moved = time.monotonic()
    try:
        with write_behind(WRITE_BEHIND_BYTES) if WRITE_BEHIND_BYTES else contextlib.nullcontext():
            while proc.poll() is None:
                if ctx.cancelled():
                    _stop(proc)
                    raise Aborted("the copy was cancelled", fix="rerun the same command to resume")
                try:
                    proc.wait(timeout=0.2)  # returns at once when the command ends
                except subprocess.TimeoutExpired:
                    pass
                if time.monotonic() - last < POLL_SECONDS:
                    continue
                last = time.monotonic()
                try:
                    now = FsUsage.of(dest)
                except OSError:
                    continue
                # what landed or was printed first; the processes' I/O counts (a walk of /proc)
                # only when nothing else moved
                activity: tuple[object, ...] = (now.bytes, now.inodes, lines[0])
                if activity[:3] == seen[:3]:
                    activity += (group_io(proc.pid),)
                if activity != seen:
                    seen, moved = activity, last
                elif last - moved >= STALL_SECONDS:
                    _stop(proc)
                    raise CopyStalled(
                        f"the copy made no progress for {STALL_SECONDS // 60} minutes and was stopped "
                        f"({argv[0]} onto {dest})",
                        why="nothing landed on the target, nothing was printed, and no copying process "
                            "read or wrote: it was stuck, not slow",
                        fix="rerun the same command: what was copied stays, the resumed copy clears "
                            "half-written files first; if it stops again, the log's last lines name where, "
                            "and dmesg shows whether the backup disk is failing",
                    )
                if not progress:
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
