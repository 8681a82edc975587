"""Compare two file trees with their metadata: did the backup and restore keep everything?

`snapshot(top)` records, for every path under top (bytes names, so non-UTF-8
names survive): type, mode, owner, size, mtime, symlink target, device
numbers, xattrs (ACLs are the system.posix_acl_* xattrs), sparseness and
which paths share an inode. `diff_trees(a, b)` lists the differences in
words a test failure can show.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Entry:
    kind: str  # file, dir, symlink, fifo, char, block, socket
    mode: int  # permission bits incl. set-id and sticky (& 0o7777)
    uid: int
    gid: int
    size: int  # regular files only, else 0
    mtime: int  # whole seconds
    target: bytes | None = None  # symlinks
    rdev: tuple[int, int] | None = None  # device nodes
    xattrs: tuple[tuple[str, bytes], ...] = ()
    sparse: bool = False  # fewer blocks allocated than the size needs
    nlink: int = 1


@dataclass(frozen=True)
class Snapshot:
    entries: dict[bytes, Entry]  # relative path (b"." is top itself) -> entry
    hardlinks: frozenset[frozenset[bytes]] = field(default_factory=frozenset)  # groups of paths sharing an inode


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISREG, "file"), (stat.S_ISDIR, "dir"), (stat.S_ISLNK, "symlink"), (stat.S_ISFIFO, "fifo"),
        (stat.S_ISCHR, "char"), (stat.S_ISBLK, "block"), (stat.S_ISSOCK, "socket"),
    ):
        if test(mode):
            return name
    return "unknown"


def _xattrs(path: bytes) -> tuple[tuple[str, bytes], ...]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return ()
    out = []
    for n in sorted(names):
        if n.startswith("security.selinux") or n.startswith("trusted.SGI_ACL_"):
            continue  # xfs shows its ACLs twice: as system.posix_acl_* (kept) and as trusted.SGI_ACL_*
        try:
            out.append((n, os.getxattr(path, n, follow_symlinks=False)))
        except OSError:
            continue
    return tuple(out)


def snapshot(top: Path | str | bytes, exclude: Iterable[bytes | str] = (), one_filesystem: bool = True) -> Snapshot:
    """Walk top (not crossing into other filesystems by default, like rsync -x)."""
    root = os.fsencode(top)
    skip = {os.fsencode(e).strip(b"/") for e in exclude}
    top_dev = os.lstat(root).st_dev
    entries: dict[bytes, Entry] = {}
    inodes: dict[int, list[bytes]] = {}

    def record(path: bytes, rel: bytes) -> os.stat_result:
        st = os.lstat(path)
        kind = _kind(st.st_mode)
        entries[rel] = Entry(
            kind=kind,
            mode=stat.S_IMODE(st.st_mode),
            uid=st.st_uid,
            gid=st.st_gid,
            size=st.st_size if kind == "file" else 0,
            mtime=int(st.st_mtime) if kind != "symlink" else 0,
            target=os.readlink(path) if kind == "symlink" else None,
            rdev=(os.major(st.st_rdev), os.minor(st.st_rdev)) if kind in ("char", "block") else None,
            xattrs=_xattrs(path) if kind != "symlink" else (),
            sparse=kind == "file" and st.st_size > 0 and st.st_blocks * 512 < st.st_size,
            nlink=st.st_nlink if kind != "dir" else 1,
        )
        if kind != "dir" and st.st_nlink > 1:
            inodes.setdefault(st.st_ino, []).append(rel)
        return st

    record(root, b".")
    for dirpath, dirnames, filenames in os.walk(root):
        keep = []
        for n in dirnames:
            full = os.path.join(dirpath, n)
            rel = os.path.relpath(full, root)
            if rel in skip:
                continue
            st = record(full, rel)
            if stat.S_ISDIR(st.st_mode) and (not one_filesystem or st.st_dev == top_dev):
                keep.append(n)
        dirnames[:] = keep
        for n in filenames:
            full = os.path.join(dirpath, n)
            rel = os.path.relpath(full, root)
            if rel not in skip:
                record(full, rel)
    groups = frozenset(frozenset(paths) for paths in inodes.values() if len(paths) > 1)
    return Snapshot(entries, groups)


def diff_trees(
    a: Snapshot | Path | str,
    b: Snapshot | Path | str,
    *,
    times: bool = True,
    sparse: bool = False,
    top: bool = True,
    exclude: Iterable[bytes | str] = (),
) -> list[str]:
    """Differences between two trees, as lines. Empty means equal.

    times: compare mtimes of everything but folders and symlinks.
    sparse: files sparse in a must be sparse in b.
    top: compare the mode and owner of the top folder itself (the
    filesystem root's metadata that rsync of a mount point keeps and a
    restore must set, e.g. /tmp 1777).
    """
    sa = a if isinstance(a, Snapshot) else snapshot(a, exclude)
    sb = b if isinstance(b, Snapshot) else snapshot(b, exclude)
    out: list[str] = []
    for rel in sorted(set(sa.entries) | set(sb.entries)):
        name = rel.decode("utf-8", "backslashreplace")
        ea, eb = sa.entries.get(rel), sb.entries.get(rel)
        if ea is None:
            out.append(f"{name}: only in the second tree")
            continue
        if eb is None:
            out.append(f"{name}: missing from the second tree")
            continue
        if rel == b"." and not top:
            continue
        if ea.kind != eb.kind:
            out.append(f"{name}: {ea.kind} became {eb.kind}")
            continue
        if ea.mode != eb.mode:
            out.append(f"{name}: mode {ea.mode:04o} became {eb.mode:04o}")
        if (ea.uid, ea.gid) != (eb.uid, eb.gid):
            out.append(f"{name}: owner {ea.uid}:{ea.gid} became {eb.uid}:{eb.gid}")
        if ea.size != eb.size:
            out.append(f"{name}: size {ea.size} became {eb.size}")
        if times and ea.kind not in ("dir", "symlink") and ea.mtime != eb.mtime:
            out.append(f"{name}: mtime {ea.mtime} became {eb.mtime}")
        if ea.target != eb.target:
            out.append(f"{name}: symlink target {ea.target!r} became {eb.target!r}")
        if ea.rdev != eb.rdev:
            out.append(f"{name}: device {ea.rdev} became {eb.rdev}")
        if ea.xattrs != eb.xattrs:
            out.append(f"{name}: xattrs {[k for k, _ in ea.xattrs]} became {[k for k, _ in eb.xattrs]} (or values differ)")
        if sparse and ea.sparse and not eb.sparse:
            out.append(f"{name}: was sparse, is not")
    if sa.hardlinks != sb.hardlinks:
        lost = sa.hardlinks - sb.hardlinks
        for g in sorted(lost, key=sorted):
            out.append("hard links not kept together: " + ", ".join(p.decode("utf-8", "backslashreplace") for p in sorted(g)))
        for g in sorted(sb.hardlinks - sa.hardlinks, key=sorted):
            out.append("new hard-link group: " + ", ".join(p.decode("utf-8", "backslashreplace") for p in sorted(g)))
    return out


def tree_digest(top: Path) -> str:
    """One hash of names, metadata (not atime: reading is allowed) and contents under top.

    Equal before and after proves a tree (a bank, a backup) was only read.
    """
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(os.fsencode(top)):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            h.update(b"%s %o %d %d %d %d %d %d\n" % (os.path.relpath(p, os.fsencode(top)), st.st_mode, st.st_uid,
                                                   st.st_gid, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_nlink))
            if os.path.isfile(p) and not os.path.islink(p):
                with open(p, "rb") as f:
                    h.update(hashlib.sha256(f.read()).digest())
    return h.hexdigest()
