"""The last word before a byte is written: is this target safe?

`check_target` turns a disk's facts into a refusal that lists every reason,
each with why it matters and what to do. The engine calls
`assert_still_safe` right before its first write, probing the disk again:
a disk mounted, or swapped on, between the plan and the write is caught.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rescue.errors import UnsafeTarget
from rescue.target import TargetDisk


def reasons(disk: TargetDisk) -> list[tuple[str, str, str]]:
    """(what, why, what to do) for each rule of DESIGN.md the disk breaks."""
    out = []
    if not disk.whole_disk:
        out.append((f"{disk.device} is a partition, not a whole disk",
                    "a restore writes a new partition table over the whole disk",
                    "give the disk itself, e.g. /dev/sdb rather than /dev/sdb1"))
    if disk.read_only:
        out.append((f"{disk.device} is read-only",
                    "the kernel will not let anything be written to it",
                    "check the disk's write-protect switch, or pick another disk"))
    if disk.holds_backup:
        out.append((f"{disk.device} holds the backup being restored",
                    "writing it would destroy the backup the restore reads from",
                    "attach a separate new disk and pick that one"))
    if disk.holds_root:
        out.append((f"{disk.device} holds the running system",
                    "the system you are running from lives on this disk",
                    "boot the rescue system from the backup disk and restore onto another disk"))
    if disk.mounted:
        out.append((f"{disk.device} has mounted filesystems: {', '.join(disk.mounted)}",
                    "a mounted filesystem is in use; overwriting it corrupts what is running",
                    "unmount them (umount) if this disk really is the target, or pick another"))
    if disk.swap_active:
        out.append((f"{disk.device} has active swap",
                    "the kernel is using this disk for memory",
                    "turn it off (swapoff) if this disk really is the target, or pick another"))
    return out


def check_target(disk: TargetDisk) -> None:
    """Raise UnsafeTarget naming every reason the disk must not be written."""
    found = reasons(disk)
    if not found:
        return
    if len(found) == 1:
        what, why, fix = found[0]
        raise UnsafeTarget(f"refusing to write {disk.device}: {what}", why=why, fix=fix)
    raise UnsafeTarget(
        f"refusing to write {disk.device}: " + "; ".join(w for w, _, _ in found),
        why="\n       ".join(f"{w}: {y}" for w, y, _ in found),
        fix="\n       ".join(dict.fromkeys(f for _, _, f in found)),
    )


def assert_still_safe(device: str, backup_sources: Sequence[Path] = ()) -> TargetDisk:
    """Probe the device again and check it, right before the first write."""
    from rescue.probe import probe_disk

    disk = probe_disk(device, backup_sources=backup_sources)
    check_target(disk)
    return disk
