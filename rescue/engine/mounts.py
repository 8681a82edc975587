"""Mounts as the kernel sees them (/proc/self/mountinfo), and the proof that
a mount is the device the restore meant.

An old disk with the same UUIDs may still be attached: mounting by UUID, or
even by device name for btrfs, can land on the twin. So every mount is
checked by device numbers, never by name.

What kernels do with a same-UUID twin (measured; tests/vm/test_twins_vm.py on
the rescue image's Linux 6.1, tests/integration/test_twins_old_disk.py on the
build host's 6.18):
- xfs refuses to mount a second filesystem with a UUID already mounted; the
  restore mounts its own with `nouuid`.
- btrfs, Linux 6.1: `mkfs.btrfs -U` refuses a UUID the kernel knows from the
  old disk while that one is mounted (`btrfs device scan --forget` cannot
  forget a mounted device), so the new filesystem gets a new UUID and fstab,
  grub.cfg and the resume file are rewritten; an exact copy of the mounted old
  btrfs is refused by mount(2) with EEXIST ("duplicate device"), which the
  mount step reports as an unsafe target naming the twin.
- btrfs, Linux 6.7 and later (temp-fsid): a cloned single-device btrfs mounts
  beside its twin under a temporary fsid, so the mount itself succeeds; the
  device-number proof is what tells the two apart.
Earlier kernels were reported to mount the old device when asked for the new
one; the proof here refuses that whatever the kernel does.
"""

from __future__ import annotations

import os
import re
import stat
import time
from collections.abc import Callable
from pathlib import Path

from rescue.layout.swaps import parse_swaps
from rescue.formats.mountinfo import MountInfo, read_mountinfo
from rescue.run import CommandError, Result


def mountinfo() -> list[MountInfo]:
    return read_mountinfo()


def mounts_under(base: Path) -> list[MountInfo]:
    """Mounts at or below `base`, deepest first (the order to unmount them)."""
    b = os.path.normpath(str(base))
    found = [m for m in mountinfo() if m.target == b or m.target.startswith(b + "/")]
    return sorted(found, key=lambda m: (m.target.count("/"), m.mount_id), reverse=True)


def is_mountpoint(path: Path) -> bool:
    p = os.path.normpath(str(path))
    return any(m.target == p for m in mountinfo())


def top_mount_at(path: Path) -> MountInfo | None:
    """The mount now visible at `path` (the last one mounted there)."""
    p = os.path.normpath(str(path))
    found = [m for m in mountinfo() if m.target == p]
    return found[-1] if found else None


def block_rdev(device: str) -> tuple[int, int]:
    st = os.stat(device)
    if not stat.S_ISBLK(st.st_mode):
        raise ValueError(f"{device} is not a block device")
    return os.major(st.st_rdev), os.minor(st.st_rdev)


def disk_devnums(disk: str) -> set[tuple[int, int]]:
    """Device numbers of a whole disk and all its partitions (from /sys)."""
    from rescue.devices import kernel_partitions

    return {block_rdev(disk)} | {p.devnum for p in kernel_partitions(disk)}


def mounts_of_disk(disk: str) -> list[MountInfo]:
    """Everything mounted from this disk or its partitions (btrfs by its source name)."""
    nums = disk_devnums(disk)
    name = os.path.basename(os.path.realpath(disk))
    out = []
    for m in mountinfo():
        if (m.major, m.minor) in nums:
            out.append(m)
        elif m.source.startswith("/dev/"):
            src = os.path.basename(m.source)
            if src == name or (src.startswith(name) and re.fullmatch(rf"{re.escape(name)}p?\d+", src)):
                out.append(m)
    return out


def swaps_of_disk(disk: str) -> list[str]:
    nums = disk_devnums(disk)
    out = []
    try:
        active = [s.device for s in parse_swaps(Path("/proc/swaps").read_text(), "/proc/swaps")]
    except OSError:
        return out
    for dev in active:
        try:
            if block_rdev(dev) in nums:
                out.append(dev)
        except (OSError, ValueError):
            continue
    return out


Runner = Callable[..., Result]


def prove_mounted(run: Runner, path: Path, device: str, fstype: str) -> str | None:
    """None when the filesystem visible at `path` lives on `device`; else why not.

    For most filesystems mountinfo's major:minor is the block device itself.
    btrfs reports an anonymous device there, so its member devices are read
    with `btrfs filesystem show` and compared by device numbers too.
    """
    want = block_rdev(device)
    m = top_mount_at(path)
    if m is None:
        return f"nothing is mounted at {path}"
    if fstype == "btrfs" or m.fstype == "btrfs":
        out = run(["btrfs", "filesystem", "show", "--raw", str(path)]).stdout
        members = re.findall(r"\bpath\s+(\S+)", out)
        nums = set()
        for p in members:
            try:
                nums.add(block_rdev(p))
            except (OSError, ValueError):
                nums.add((-1, -1))
        if nums == {want}:
            return None
        return f"btrfs at {path} is made of {', '.join(members) or 'unknown devices'}, not only {device}"
    if (m.major, m.minor) == want:
        return None
    return (f"{path} shows device {m.major}:{m.minor} ({m.source}), "
            f"not {device} ({want[0]}:{want[1]}): another disk with the same filesystem may be attached")


def unmount_all(run: Runner, base: Path, tries: int = 10, lazy: bool = False) -> list[str]:
    """Unmount everything at or under `base`, deepest first; returns what stayed mounted.

    lazy=True detaches at once (umount --lazy): for filesystems whose disk has
    vanished, where a normal umount only fails or waits on I/O that cannot happen.
    """
    for _ in range(0 if lazy else tries):
        left = mounts_under(base)
        if not left:
            return []
        for m in left:
            try:
                run(["umount", m.target])
            except CommandError:
                pass
        if mounts_under(base):
            time.sleep(0.3)
    # Last resort so the disk is released for a rerun: detach lazily.
    for m in mounts_under(base):
        try:
            run(["umount", "--lazy", m.target])
        except CommandError:
            pass
    return [m.target for m in mounts_under(base)]


def remove_empty_tree(base: Path) -> None:
    """Remove the private mount folders once nothing is mounted there."""
    if not base.exists() or mounts_under(base):
        return
    for dirpath, dirnames, _files in os.walk(base, topdown=False):
        for d in dirnames:
            try:
                os.rmdir(os.path.join(dirpath, d))
            except OSError:
                pass
    try:
        os.rmdir(base)
    except OSError:
        pass

