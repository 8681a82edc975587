"""Fit a captured partition table onto a target disk of any size.

The rules, in the order they apply:
- Partitions keep their order, numbers, types, PARTUUIDs, names, attrs and
  bootable flags; the disk keeps its label-id and first-lba.
- Every start is aligned up to 1 MiB; gaps the captured table left between
  partitions are kept.
- Exactly one partition takes the size change (the last data partition, or
  the one the person names): on a bigger disk it grows by what the disk grew
  (free space the owner left at the end stays free); on an equal disk the
  table replays; on a smaller disk it shrinks.
- A partition shrinks only when the captured used bytes of its filesystem
  plus a margin (10 % + 64 MiB, and never under the filesystem's minimum)
  fit; otherwise the plan is refused, saying how many MiB are missing.
  We always mkfs fresh and copy files, so "shrink" just means a smaller
  new filesystem, for every filesystem type.
- Growing a logical partition grows its extended partition too.
- gpt's last-lba is recomputed for the target (disk sectors - 34 for 512-byte
  sectors); dos has none. A dos table never passes 2 TiB (2^32 sectors).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from rescue.devices import partition_path
from rescue.errors import PlanRefused
from rescue.layout.model import Partition, PartitionTable
from rescue.plan.model import Migration

MIB = 1024 * 1024
GIB = 1024 * MIB
MARGIN_FRACTION = 0.10  # of the captured used bytes
MARGIN_BYTES = 64 * MIB  # on top: journal, metadata, a little room to boot and log

# Smallest filesystem each mkfs here agrees to make (measured with xfsprogs 6.1,
# btrfs-progs 6.2, e2fsprogs 1.47, dosfstools 4.2 on sparse files).
FS_MIN_BYTES = {
    "xfs": 300 * MIB,
    "btrfs": 114 * MIB,
    "ext2": 1 * MIB,
    "ext3": 1 * MIB,
    "ext4": 1 * MIB,
    "vfat": 1 * MIB,
    "swap": 40 * 1024,  # mkswap wants 10 pages
}

EXTENDED_TYPES = frozenset({"5", "f", "85"})
DOS_MAX_SECTORS = 2**32


@dataclass(frozen=True)
class Need:
    """What a partition must hold on the target, for the shrink check."""

    what: str  # how a person names it: "/home (ext4)" or "swap"
    minimum: int | None  # bytes; None: unknown, so it may not shrink


def needed_bytes(used: int, fstype: str) -> int:
    """Captured used bytes plus the margin, and at least the filesystem's minimum."""
    margin = -(-used // round(1 / MARGIN_FRACTION)) + MARGIN_BYTES
    return max(used + margin, FS_MIN_BYTES.get(fstype, 0))


def is_extended(table: PartitionTable, p: Partition) -> bool:
    return table.label == "dos" and p.type.lower().removeprefix("0x") in EXTENDED_TYPES


def is_logical(table: PartitionTable, p: Partition) -> bool:
    return table.label == "dos" and p.number >= 5


def align_up(value: int, grain: int) -> int:
    return -(-value // grain) * grain


def gpt_entry_sectors(sector_size: int, table_length: int | None) -> int:
    return -(-(table_length or 128) * 128 // sector_size)


def gpt_last_lba(sectors: int, sector_size: int, table_length: int | None) -> int:
    """Last usable sector of a gpt disk: before the backup entries and header."""
    return sectors - 2 - gpt_entry_sectors(sector_size, table_length)


def usable_range(table: PartitionTable, sectors: int) -> tuple[int, int]:
    """First usable sector and the first sector past the usable area, for the target."""
    if table.label == "gpt":
        first = table.first_lba or 2 + gpt_entry_sectors(table.sector_size, table.table_length)
        return first, gpt_last_lba(sectors, table.sector_size, table.table_length) + 1
    return 1, min(sectors, DOS_MAX_SECTORS)


def choose_grow(table: PartitionTable, data: set[int]) -> int:
    """The partition that takes the size change: the last one holding data, else the last one."""
    candidates = [p for p in table.partitions if not is_extended(table, p)]
    if not candidates:
        raise PlanRefused(
            "the captured partition table has no partitions",
            why="there is nothing to restore onto the target",
            fix="check the captured layout (rescue list shows whether one was captured)",
        )
    with_data = [p for p in candidates if p.number in data]
    pick = max(with_data or candidates, key=lambda p: p.end)
    return pick.number


def check_captured(table: PartitionTable, file: str = "the captured table") -> None:
    """Refuse a captured table whose partitions overlap: we would not know what to keep."""
    top = sorted((p for p in table.partitions if not is_logical(table, p)), key=lambda p: p.start)
    logical = sorted((p for p in table.partitions if is_logical(table, p)), key=lambda p: p.start)
    for group in (top, logical):
        for a, b in zip(group, group[1:]):
            if b.start < a.end:
                raise PlanRefused(
                    f"{file}: partitions {a.number} and {b.number} overlap",
                    why="a table with overlapping partitions cannot be replayed",
                    fix="repair the captured sfdisk dump by hand or capture the layout again",
                )
    for p in table.partitions:
        if p.size <= 0 or p.start < 0:
            raise PlanRefused(
                f"{file}: partition {p.number} has start {p.start} and size {p.size}",
                why="a partition needs a positive size",
                fix="repair the captured sfdisk dump by hand or capture the layout again",
            )


def _place(table: PartitionTable, grow: int, delta: int, first: int, grain: int) -> dict[int, tuple[int, int]]:
    """New (start, size) per partition number when `grow` changes size by `delta` sectors."""
    parts = table.partitions
    top = sorted((p for p in parts if not is_logical(table, p)), key=lambda p: p.start)
    logical = sorted((p for p in parts if is_logical(table, p)), key=lambda p: p.start)
    placed: dict[int, tuple[int, int]] = {}
    prev_old = prev_new = 0
    for p in top:
        gap = max(p.start - prev_old, 0)
        start = align_up(max(prev_new + gap, first), grain)
        if is_extended(table, p):
            inner_old, inner_new = p.start, start
            for lp in logical:
                lgap = max(lp.start - inner_old, 1)  # room for the logical's EBR
                lstart = align_up(inner_new + lgap, grain)
                lsize = lp.size + (delta if lp.number == grow else 0)
                placed[lp.number] = (lstart, lsize)
                inner_old, inner_new = lp.end, lstart + lsize
            trailing = max(p.end - inner_old, 0) if logical else p.size
            placed[p.number] = (start, inner_new + trailing - start)
        else:
            placed[p.number] = (start, p.size + (delta if p.number == grow else 0))
        prev_old = p.end
        prev_new = placed[p.number][0] + placed[p.number][1]
    return placed


def _end(placed: Mapping[int, tuple[int, int]]) -> int:
    return max((s + n for s, n in placed.values()), default=0)


def migrate_table(
    table: PartitionTable,
    old_sectors: int,
    target_device: str,
    target_sectors: int,
    grow: int,
    needs: Mapping[int, Need],
) -> tuple[PartitionTable, tuple[Migration, ...]]:
    """The captured table fitted to the target, and what happened to each partition.

    Raises PlanRefused when the target is too small for what must be kept.
    """
    check_captured(table)
    ss = table.sector_size
    grain = max(MIB // ss, 1)
    first, limit = usable_range(table, target_sectors)
    by_number = {p.number: p for p in table.partitions}
    if grow not in by_number or is_extended(table, by_number[grow]):
        raise PlanRefused(
            f"partition {grow} cannot take the size change",
            why="it is not a partition of the captured table, or it is an extended partition",
            fix="name a partition that holds a filesystem (a mount point such as /home, or its number)",
        )
    gp = by_number[grow]

    end0 = _end(_place(table, grow, 0, first, grain))
    room = limit - end0
    if room >= 0:
        growth = max(target_sectors - old_sectors, 0)
        delta = min(room, growth) // grain * grain
    else:
        delta = -align_up(-room, grain)

    need = needs.get(grow)
    new_size = gp.size + delta
    if delta < 0:
        _check_shrink(table, gp, new_size, need, target_device, target_sectors)

    placed = _place(table, grow, delta, first, grain)
    while _end(placed) > limit and new_size > grain:  # never expected; the property tests say so
        delta -= grain
        new_size = gp.size + delta
        if delta < 0:
            _check_shrink(table, gp, new_size, need, target_device, target_sectors)
        placed = _place(table, grow, delta, first, grain)

    new_parts = tuple(
        dataclasses.replace(
            p, node=partition_path(target_device, p.number),
            start=placed[p.number][0], size=placed[p.number][1],
        )
        for p in table.partitions
    )
    last_lba = gpt_last_lba(target_sectors, ss, table.table_length) if table.label == "gpt" else None
    new_table = dataclasses.replace(table, device=target_device, last_lba=last_lba, partitions=new_parts)
    check_fits(new_table, target_sectors)
    migrations = tuple(
        Migration(
            number=p.number, node=partition_path(target_device, p.number),
            old_start=p.start, old_size=p.size,
            new_start=placed[p.number][0], new_size=placed[p.number][1],
            sector_size=ss, container=is_extended(table, p),
            mountpoint=None, fstype=None,
        )
        for p in sorted(table.partitions, key=lambda p: p.number)
    )
    return new_table, migrations


def _check_shrink(
    table: PartitionTable, p: Partition, new_size: int, need: Need | None,
    target_device: str, target_sectors: int,
) -> None:
    ss = table.sector_size
    disk = f"{target_device} ({fmt_bytes(target_sectors * ss)})"
    if need is None or need.minimum is None:
        what = need.what if need else f"partition {p.number}"
        raise PlanRefused(
            f"{disk} is too small: partition {p.number} ({what}) would have to shrink "
            f"from {fmt_bytes(p.size * ss)} to {fmt_bytes(max(new_size, 0) * ss)}",
            why="the used bytes of what it holds were not captured, so rescue cannot tell whether it fits",
            fix="use a disk at least as big as the captured one, or let another partition shrink with --grow",
        )
    minimum = max(need.minimum, MIB)  # a partition keeps at least 1 MiB
    if new_size * ss < minimum:
        short = -(-(minimum - max(new_size, 0) * ss) // MIB)
        raise PlanRefused(
            f"{disk} is {short} MiB short: {need.what} on partition {p.number} needs "
            f"{fmt_bytes(minimum)} but would get {fmt_bytes(max(new_size, 0) * ss)}",
            why=(f"a partition shrinks only when its captured used bytes plus a margin "
                 f"({int(MARGIN_FRACTION * 100)} % + {MARGIN_BYTES // MIB} MiB, at least the filesystem's minimum) fit"),
            fix=f"use a disk at least {short} MiB bigger, or let another partition shrink with --grow",
        )


def check_fits(table: PartitionTable, sectors: int) -> None:
    """The invariants of a planned table: inside the disk, aligned, nothing overlaps."""
    first, limit = usable_range(table, sectors)
    problems = []
    top = sorted((p for p in table.partitions if not is_logical(table, p)), key=lambda p: p.start)
    logical = sorted((p for p in table.partitions if is_logical(table, p)), key=lambda p: p.start)
    for p in table.partitions:
        if p.size <= 0:
            problems.append(f"partition {p.number} has size {p.size}")
        if p.start < first or p.end > limit:
            problems.append(f"partition {p.number} ({p.start}+{p.size}) is outside {first}..{limit}")
    for group in (top, logical):
        for a, b in zip(group, group[1:]):
            if b.start < a.end:
                problems.append(f"partitions {a.number} and {b.number} overlap")
    ext = [p for p in top if is_extended(table, p)]
    for lp in logical:
        if not ext or not (ext[0].start < lp.start and lp.end <= ext[0].end):
            problems.append(f"logical partition {lp.number} is not inside the extended partition")
    if problems:
        raise PlanRefused(
            "the planned partition table is not valid: " + "; ".join(problems),
            why="this is a bug in rescue's migration; nothing has been written",
            fix="report it with the captured layout.json; restore onto a disk of the captured size meanwhile",
        )


def fmt_bytes(n: int) -> str:
    """Sizes a person reads: 512 MiB, 20.0 GiB, 1.8 TiB."""
    if n >= 1024 * GIB:
        return f"{n / (1024 * GIB):.1f} TiB"
    if n >= GIB:
        return f"{n / GIB:.1f} GiB"
    if n >= MIB:
        v = n / MIB
        return f"{v:.0f} MiB" if v == int(v) or v >= 100 else f"{v:.1f} MiB"
    if n >= 1024:
        return f"{n / 1024:.0f} KiB"
    return f"{n} B"
