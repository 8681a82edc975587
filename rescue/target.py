"""What rescue knows about a disk it might write: the target's facts.

Facts are gathered by probe functions (lsblk, blkid, blkinfo, pyparted) and
kept as frozen data, so the plan stays a pure function and the wizard can show
why a disk is not selectable.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ExistingPartition:
    """Something already on a candidate disk: shown as 'will be destroyed'."""

    device: str
    size: int
    fstype: str | None = None
    label: str | None = None
    uuid: str | None = None
    mountpoints: tuple[str, ...] = ()


@dataclass(frozen=True)
class TargetDisk:
    device: str  # /dev/sdb, /dev/nvme1n1, /dev/loop3
    size: int  # bytes
    sector_size: int = 512
    physical_sector_size: int | None = None  # libparted's reading; None where it was not read
    io_align: tuple[int, int] | None = None  # the kernel's optimal I/O alignment (offset, grain), in sectors
    usable: tuple[int, int] | None = None  # first and last sector a gpt table leaves on this disk
    model: str | None = None
    serial: str | None = None
    by_id: tuple[str, ...] = ()  # /dev/disk/by-id names, for configs and confirmation
    whole_disk: bool = True  # False for a partition or anything that is not a disk
    read_only: bool = False
    pttype: str | None = None
    partitions: tuple[ExistingPartition, ...] = ()
    signatures: tuple[str, ...] = ()  # what wipefs finds on the whole disk
    mounted: tuple[str, ...] = ()  # mount points on this disk or its partitions
    holds_backup: bool = False  # the backup source lives here
    holds_root: bool = False  # the running system (rescue or host) lives here
    swap_active: bool = False
    backing_file: str | None = None  # a loop device's image file (drills and tests write those)

    @property
    def unsafe_reasons(self) -> tuple[str, ...]:
        """Why this disk must not be written; empty when it may be."""
        reasons = []
        if not self.whole_disk:
            reasons.append(f"{self.device} is not a whole disk")
        if self.read_only:
            reasons.append(f"{self.device} is read-only")
        if self.holds_backup:
            reasons.append(f"{self.device} holds the backup being restored")
        if self.holds_root:
            reasons.append(f"{self.device} holds the running system")
        if self.mounted:
            reasons.append(f"{self.device} has mounted filesystems: {', '.join(self.mounted)}")
        if self.swap_active:
            reasons.append(f"{self.device} has active swap")
        return tuple(reasons)

    @property
    def empty(self) -> bool:
        return not self.partitions and not self.signatures
