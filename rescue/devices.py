"""Block device names and loop devices.

Loop devices are the only disks tests, benchmarks and the drill ever write:
`loop_disk()` creates an image file, attaches it, and always detaches it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from rescue.formats.mountinfo import read_mountinfo
from rescue.errors import RescueError, UnsafeTarget
from rescue.run import CommandError, run

SYS_BLOCK = Path("/sys/class/block")
SETTLE_TIMEOUT = 30.0  # seconds a written table gets to show up in the kernel
RELEASE_TIMEOUT = 30.0  # seconds a killed run's leftovers get to let go of the target

# errors of a sysfs entry that went away between listing and reading it
_GONE = (errno.ENOENT, errno.ENODEV, errno.ENXIO, errno.ENOTDIR, errno.ESTALE)


def partition_path(disk: str, number: int) -> str:
    """/dev/sda + 1 -> /dev/sda1; /dev/nvme0n1, /dev/loop0 + 1 -> ...p1."""
    sep = "p" if re.search(r"\d$", disk) else ""
    return f"{disk}{sep}{number}"


def disk_of(partition: str) -> str:
    """/dev/sda1 -> /dev/sda; /dev/nvme0n1p2, /dev/loop3p1 -> /dev/nvme0n1, /dev/loop3."""
    m = re.fullmatch(r"(.*\d)p\d+", partition)
    if m:
        return m.group(1)
    return re.sub(r"\d+$", "", partition)


def make_image_file(path: Path, size: int) -> Path:
    """A sparse disk image file of exactly `size` bytes."""
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def attach(image: Path) -> str:
    """losetup -fP; partition nodes appear after partprobe (no udev on build hosts)."""
    dev = run(["losetup", "--find", "--show", "--partscan", str(image)]).stdout.strip()
    rescan(dev)
    return dev


def rescan(disk: str, tries: int = 5) -> None:
    """Make the kernel (and /dev) see a disk's current partition table.

    The kernel refuses to reread a table (EBUSY) while anything holds one of
    the disk's partitions open, even a moment's probe by blkid or lsblk, so
    a failed partprobe is tried again a few times before giving up.
    """
    for attempt in range(tries):
        try:
            run(["partprobe", disk])
            break
        except CommandError:
            if attempt + 1 < tries:
                time.sleep(0.5)
    _make_missing_nodes(disk)


def sys_read(path: Path) -> str | None:
    """A sysfs attribute's text, stripped; None when the entry is gone.

    The kernel removes and re-adds a disk's partition entries each time it
    re-reads the table (udev does that after every write), so an entry listed
    a moment ago may be gone when it is read: that is "gone", not an error.
    """
    try:
        return path.read_text().strip()
    except OSError as e:
        if e.errno in _GONE:
            return None
        raise


def sys_list(folder: Path) -> list[Path]:
    """The entries of a sysfs folder, sorted; empty when the folder itself is gone."""
    try:
        return sorted(folder.iterdir())
    except OSError as e:
        if e.errno in _GONE:
            return []
        raise


@dataclass(frozen=True)
class KernelPartition:
    """One partition as the kernel shows it now (sysfs); start and size in 512-byte sectors."""

    name: str  # kernel name, e.g. vdb1, loop0p2
    number: int
    start: int
    size: int
    devnum: tuple[int, int]


def kernel_partitions(disk: str, sys_block: Path | None = None) -> tuple[KernelPartition, ...]:
    """The partitions the kernel knows of a disk now; entries that vanish while read are left out."""
    name = os.path.basename(os.path.realpath(disk)) if disk.startswith("/") else disk
    out = []
    for child in sys_list((sys_block or SYS_BLOCK) / name):
        if not child.name.startswith(name):
            continue
        number, start, size, dev = (sys_read(child / f) for f in ("partition", "start", "size", "dev"))
        if number is None or start is None or size is None or dev is None:
            continue  # not a partition, or gone while read
        major, minor = dev.split(":")
        out.append(KernelPartition(child.name, int(number), int(start), int(size), (int(major), int(minor))))
    return tuple(sorted(out, key=lambda p: p.number))


def _make_missing_nodes(disk: str) -> None:
    """Without udev, /dev may lack partition nodes the kernel knows, or keep stale ones: mknod them.

    Partitions of loop and nvme disks get new device numbers at each re-read,
    so a node left from the table before may point at nothing, or at another
    disk's partition: it is made again with the number the kernel shows now.
    """
    for part in kernel_partitions(disk):
        node = Path("/dev") / part.name
        try:
            st = os.stat(node)
        except FileNotFoundError:
            st = None
        if st is not None:
            if not stat.S_ISBLK(st.st_mode) or (os.major(st.st_rdev), os.minor(st.st_rdev)) == part.devnum:
                continue
            with contextlib.suppress(FileNotFoundError):
                node.unlink()
        with contextlib.suppress(FileExistsError):
            os.mknod(node, 0o660 | stat.S_IFBLK, os.makedev(*part.devnum))


def _node_matches(part: KernelPartition) -> bool:
    try:
        st = os.stat(f"/dev/{part.name}")
    except OSError:
        return False
    return (os.major(st.st_rdev), os.minor(st.st_rdev)) == part.devnum


def table_settle_differences(disk: str, want: Sequence[tuple[int, int, int | None]]) -> list[str]:
    """How the kernel's view of `disk` differs from the table (number, start, size) just written.

    size None: any size (the kernel shows a dos extended partition as 1 KiB, not its extent).
    """
    have = {p.number: p for p in kernel_partitions(disk)}
    wanted = {n: (start, size) for n, start, size in want}
    diffs = []
    for n in sorted(set(have) | set(wanted)):
        p, w = have.get(n), wanted.get(n)
        if p is None:
            diffs.append(f"partition {n} never appeared")
        elif w is None:
            diffs.append(f"partition {n} ({p.name}) is still shown but was not written")
        elif p.start != w[0] or w[1] is not None and p.size != w[1]:
            diffs.append(f"partition {n} ({p.name}) shows start {p.start} size {p.size} "
                         f"instead of start {w[0]} size {w[1] if w[1] is not None else 'any'}")
        elif not _node_matches(p):
            diffs.append(f"partition {n} has no device node /dev/{p.name}")
    return diffs


def wait_table_settled(disk: str, want: Sequence[tuple[int, int, int | None]], sector_size: int = 512,
                       timeout: float | None = None) -> None:
    """Wait until the kernel shows exactly the table just written, and /dev has its nodes.

    `want` is (number, start, size) in units of `sector_size`. After a write,
    the kernel (and udev, when it runs) re-read the table on their own time:
    partitions vanish and come back. Until the view equals the written table
    the re-read is asked for again; after `timeout` seconds a RescueError names
    what never appeared or differs.
    """
    scale = sector_size // 512
    want512 = [(n, start * scale, None if size is None else size * scale) for n, start, size in want]
    deadline = time.monotonic() + (SETTLE_TIMEOUT if timeout is None else timeout)
    while True:
        _make_missing_nodes(disk)
        diffs = table_settle_differences(disk, want512)
        if not diffs:
            return
        if time.monotonic() > deadline:
            raise RescueError(
                f"the kernel does not show the partition table just written to {disk}",
                why="; ".join(diffs),
                fix=f"check that nothing uses {disk} (mounts, swap, an open editor), run "
                    f"`partprobe {disk}` and rerun; if it stays, reboot the rescue system and rerun",
            )
        run(["partprobe", disk], check=False)
        time.sleep(0.05)


def is_claimed(device: str) -> bool:
    """True while the kernel holds the device: mounted in any mount namespace, or in use by a holder.

    An exclusive open of a block device fails with EBUSY exactly then, which
    mountinfo of this one namespace cannot tell.
    """
    try:
        fd = os.open(device, os.O_RDONLY | os.O_EXCL)
    except OSError as e:
        if e.errno == errno.EBUSY:
            return True
        if e.errno in _GONE:
            return False  # the partition went away (a table re-read): nothing holds it
        raise
    os.close(fd)
    return False


def wait_released(disk: str, timeout: float = 30.0) -> list[str]:
    """Wait until no partition of `disk` (or `disk`, a partition) is claimed; returns those still claimed at the timeout.

    A filesystem unmounted here may still be mounted in a mount namespace whose
    last process just exited; the kernel drops it a moment later, and an xfs
    writes its log then. Checksums of a disk are only stable after this.
    """
    parts = [f"/dev/{p.name}" for p in kernel_partitions(disk)]
    if not parts and sys_read(SYS_BLOCK / os.path.basename(os.path.realpath(disk)) / "partition"):
        parts = [disk]  # a partition itself
    deadline = time.monotonic() + timeout
    while True:
        busy = [p for p in parts if os.path.exists(p) and is_claimed(p)]
        if not busy or time.monotonic() > deadline:
            return busy
        time.sleep(0.2)


def _comm(pid: str) -> str:
    return sys_read(Path("/proc") / pid / "comm") or "?"


def holders_of(device: str) -> list[str]:
    """Who holds a block device, in words: stacked devices, mounts in any namespace, open files.

    Read from /sys/class/block/X/holders, /proc/*/mountinfo (one look per
    mount namespace) and /proc/*/fd. Processes that exit while looked at are skipped.
    """
    name = os.path.basename(os.path.realpath(device))
    out = [f"{h.name} is stacked on it (device-mapper, md or similar)"
           for h in sys_list(SYS_BLOCK / name / "holders")]
    try:
        st = os.stat(device)
        devnum = (os.major(st.st_rdev), os.minor(st.st_rdev))
    except OSError:
        return out
    seen_ns: set[str] = set()
    pids = [e.name for e in sys_list(Path("/proc")) if e.name.isdigit()]
    for pid in pids:
        try:
            ns = os.readlink(f"/proc/{pid}/ns/mnt")
        except OSError:
            continue
        if ns in seen_ns:
            continue
        seen_ns.add(ns)
        try:
            mounts = read_mountinfo(pid)
        except OSError:
            continue  # the process ended meanwhile
        for m in mounts:
            if (m.major, m.minor) == devnum:
                out.append(f"mounted at {m.target} in the mount namespace of process {pid} ({_comm(pid)})")
    out += [f"open in process {pid} ({comm})" for pid, comm in open_in({devnum}).items()]
    return out


def open_in(devnums: set[tuple[int, int]]) -> dict[str, str]:
    """Other processes with one of these block devices open (/proc/*/fd): pid -> command name."""
    me = str(os.getpid())
    found = {}
    for entry in sys_list(Path("/proc")):
        pid = entry.name
        if not pid.isdigit() or pid == me:
            continue
        for fd in sys_list(entry / "fd"):
            try:
                if not os.readlink(fd).startswith("/dev/"):
                    continue
                fst = os.stat(fd)
            except OSError:
                continue
            if stat.S_ISBLK(fst.st_mode) and (os.major(fst.st_rdev), os.minor(fst.st_rdev)) in devnums:
                found[pid] = _comm(pid)
                break
    return found


def wait_free(disk: str, timeout: float | None = None) -> None:
    """Before writing: wait until nothing holds `disk` or its partitions, else refuse naming the holder.

    A killed restore may leave a mount in a namespace whose last process is
    still exiting, or a child still running (an orphaned partprobe re-reading
    the table, an mkfs); they let go a moment later. Something that holds on
    past `timeout` is not ours to end: the refusal names it, nothing is written.
    Held means claimed by the kernel (mounted anywhere, stacked on, opened
    exclusively) or open in another process.
    """
    name = os.path.basename(os.path.realpath(disk))
    whole = sys_read(SYS_BLOCK / name / "partition") is None
    deadline = time.monotonic() + (RELEASE_TIMEOUT if timeout is None else timeout)
    while True:
        parts = [f"/dev/{p.name}" for p in kernel_partitions(disk)] if whole else [disk]
        claimed = [p for p in parts if os.path.exists(p) and is_claimed(p)]
        nums = {p.devnum for p in kernel_partitions(disk)} if whole else set()
        with contextlib.suppress(OSError):
            st = os.stat(disk)
            nums.add((os.major(st.st_rdev), os.minor(st.st_rdev)))
        users = open_in(nums)
        if not claimed and not users:
            return
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    held = [f"{p}: {', '.join(holders_of(p)) or 'held by the kernel (holder not found)'}" for p in claimed]
    held += [f"open in process {pid} ({comm})" for pid, comm in users.items()
             if not any(f"process {pid} " in h for h in held)]
    raise UnsafeTarget(
        f"{disk} is still in use: {'; '.join(held)}",
        why="the kernel refuses to make a filesystem on a partition something holds, "
            "and writing under a running user destroys its data",
        fix="stop what holds it (umount, swapoff, end the process) and run the same command again",
    )


def detach(dev: str, tries: int = 20) -> None:
    """losetup -d, waiting while the kernel still holds the device."""
    for _ in range(tries):
        try:
            run(["losetup", "-d", dev])
            return
        except CommandError:
            time.sleep(0.25)
    run(["losetup", "-d", dev])


@contextlib.contextmanager
def attached(image: Path) -> Iterator[str]:
    dev = attach(image)
    try:
        yield dev
    finally:
        detach(dev)


@contextlib.contextmanager
def loop_disk(path: Path, size: int) -> Iterator[str]:
    """A fresh blank disk: image file of `size` bytes attached as a loop device."""
    make_image_file(path, size)
    with attached(path) as dev:
        yield dev
