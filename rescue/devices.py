"""Block device names and loop devices.

Loop devices are the only disks tests, benchmarks and the drill ever write:
`loop_disk()` creates an image file, attaches it, and always detaches it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

from rescue.run import CommandError, run


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


def _make_missing_nodes(disk: str) -> None:
    """Without udev, /dev may lack partition nodes the kernel knows: mknod them."""
    name = os.path.basename(disk)
    sys_dir = Path("/sys/class/block") / name
    if not sys_dir.is_dir():
        return
    for child in sorted(sys_dir.iterdir()):
        dev_file = child / "dev"
        if not child.name.startswith(name) or not dev_file.is_file():
            continue
        node = Path("/dev") / child.name
        if not node.exists():
            major, minor = (int(x) for x in dev_file.read_text().split(":"))
            with contextlib.suppress(FileExistsError):
                os.mknod(node, 0o660 | 0o060000, os.makedev(major, minor))


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
        raise
    os.close(fd)
    return False


def wait_released(disk: str, timeout: float = 30.0) -> list[str]:
    """Wait until no partition of `disk` is claimed; returns those still claimed at the timeout.

    A filesystem unmounted here may still be mounted in a mount namespace whose
    last process just exited; the kernel drops it a moment later, and an xfs
    writes its log then. Checksums of a disk are only stable after this.
    """
    name = os.path.basename(disk)
    sys_dir = Path("/sys/class/block") / name
    parts = [f"/dev/{c.name}" for c in sorted(sys_dir.iterdir())
             if c.name.startswith(name) and (c / "partition").exists()] if sys_dir.is_dir() else []
    deadline = time.monotonic() + timeout
    while True:
        busy = [p for p in parts if os.path.exists(p) and is_claimed(p)]
        if not busy or time.monotonic() > deadline:
            return busy
        time.sleep(0.2)


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
