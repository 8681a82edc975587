"""Block device names and loop devices.

Loop devices are the only disks tests, benchmarks and the drill ever write:
`loop_disk()` creates an image file, attaches it, and always detaches it.
"""

from __future__ import annotations

import contextlib
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


def rescan(disk: str) -> None:
    """Make the kernel (and /dev) see a disk's current partition table."""
    with contextlib.suppress(CommandError):
        run(["partprobe", disk])
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
