"""libparted's view of a disk: the target's geometry, and a second reading of every table written.

sfdisk writes the table and reads it back; libparted parses the disk itself
(not the kernel's view), so a table both agree on was written as planned by
two independent implementations. libparted caches devices by path: every
look opens a fresh parted.Device and drops it from the cache afterwards, or a
second look would see the first one's table.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import parted

from rescue.layout.model import PartitionTable

_LABELS = {"msdos": "dos", "gpt": "gpt"}


@dataclass(frozen=True)
class Geometry:
    """What the target disk is made of, as libparted reads it (sectors are logical sectors)."""

    logical_sector: int
    physical_sector: int
    sectors: int
    align_offset: int  # the kernel's optimal I/O alignment: partitions start at offset + k * grain
    align_grain: int
    first_usable: int  # the range a gpt table leaves for partitions on this disk
    last_usable: int


@dataclass(frozen=True)
class ReadPartition:
    number: int
    start: int
    size: int
    name: str | None  # gpt only
    bootable: bool  # dos only
    extended: bool


@dataclass(frozen=True)
class ReadTable:
    label: str
    partitions: tuple[ReadPartition, ...]


@contextmanager
def _device(path: str) -> Iterator[parted.Device]:
    dev = parted.getDevice(path)
    try:
        yield dev
    finally:
        dev.removeFromCache()


def read_geometry(path: str) -> Geometry:
    """Sector sizes, optimal alignment and the usable range of a fresh gpt table on this disk."""
    with _device(path) as dev:
        free = parted.freshDisk(dev, "gpt").getFreeSpaceRegions()
        return Geometry(
            logical_sector=dev.sectorSize, physical_sector=dev.physicalSectorSize, sectors=dev.length,
            align_offset=dev.optimumAlignment.offset, align_grain=dev.optimumAlignment.grainSize,
            first_usable=free[0].start if free else 0, last_usable=free[-1].end if free else dev.length - 1,
        )


def read_table(path: str) -> ReadTable | None:
    """The partition table on the disk as libparted parses it; None when it finds none."""
    with _device(path) as dev:
        try:
            disk = parted.newDisk(dev)
        except (parted.DiskException, parted.PartedException):
            return None
        label = _LABELS.get(disk.type, disk.type)
        parts = tuple(
            ReadPartition(
                number=p.number, start=p.geometry.start, size=p.geometry.length,
                name=p.name if label == "gpt" else None,
                bootable=label == "dos" and p.getFlag(parted.PARTITION_BOOT),
                extended=p.type == parted.PARTITION_EXTENDED,
            )
            for p in disk.partitions
        )
        return ReadTable(label=label, partitions=parts)


def differences(plan: PartitionTable, read: ReadTable | None) -> list[str]:
    """Where libparted's reading differs from the planned table (empty: the same)."""
    if read is None:
        return ["libparted finds no partition table"]
    diffs = []
    if read.label != plan.label:
        diffs.append(f"libparted reads a {read.label} table, not {plan.label}")
    have = {p.number: p for p in read.partitions}
    want = {p.number: p for p in plan.partitions}
    for n in sorted(set(want) | set(have)):
        w, h = want.get(n), have.get(n)
        if w is None or h is None:
            diffs.append(f"libparted: partition {n} {'missing' if h is None else 'not planned'}")
            continue
        for what, a, b in (("start", w.start, h.start), ("size", w.size, h.size)):
            if a != b:
                diffs.append(f"libparted: partition {n} {what} {b} instead of {a}")
        if plan.label == "gpt" and (w.name or "") != (h.name or ""):
            diffs.append(f"libparted: partition {n} name {h.name!r} instead of {w.name!r}")
        if plan.label == "dos" and w.bootable != h.bootable:
            diffs.append(f"libparted: partition {n} bootable flag {h.bootable} instead of {w.bootable}")
    return diffs
