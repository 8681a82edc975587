"""Fit a captured partition table onto a target disk of any size.

The rules, in the order they apply:
- Partitions keep their order, numbers, types, PARTUUIDs, names, attrs and
  bootable flags; the disk keeps its label-id and first-lba. Only starts and
  sizes change. Every start is aligned up to 1 MiB.
- Each partition has a need (see Need and Role): a restored filesystem at
  least its captured used bytes + 10 % + 64 MiB (never under what its mkfs
  makes); swap and filesystems made empty their captured size when there is
  room, else down to a 64 MiB floor; partitions without a filesystem (BIOS
  boot), the ESP and sizes the person set with --size exactly their size.
- When the captured sizes fit, the captured table is replayed, gaps kept: an
  equal disk gets the very same table. What a bigger disk adds (free space the
  owner left at the end stays free) goes to the restored filesystems in
  proportion to their captured size, or all of it to the one named by --grow.
- When they do not fit, the partitions are packed one after the other, each
  gets its need, swap and empty filesystems get back their captured size, and
  the rest is shared among the restored filesystems as above.
- A target that cannot hold the needs is refused with the disk's true total
  shortfall and each partition's need. We always mkfs fresh and copy files,
  so "shrink" just means a smaller new filesystem, for every type.
- dos logicals stay inside their extended partition, each behind room for its
  EBR; gpt's last-lba is recomputed for the target (disk sectors - 34 for
  512-byte sectors). A dos table never passes 2 TiB (2^32 sectors).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from rescue.formats.units import human
from rescue.devices import partition_path
from rescue.errors import PlanRefused
from rescue.layout.model import Partition, PartitionTable
from rescue.plan.model import Migration

MIB = 1024 * 1024
GIB = 1024 * MIB
MARGIN_FRACTION = 0.10  # of the captured used bytes
MARGIN_BYTES = 64 * MIB  # on top: journal, metadata, a little room to boot and log
EMPTY_FLOOR = 64 * MIB  # swap and empty filesystems shrink no further on a small disk

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


class Role(StrEnum):
    """How a partition takes part in sharing the target disk."""

    DATA = "data"  # filled from a vault: at least its need, shares the free space
    EMPTY = "empty"  # swap, or a filesystem made empty: captured size when room, else down to the floor
    FIXED = "fixed"  # no filesystem (BIOS boot), the ESP, or --size: exactly its size


@dataclass(frozen=True)
class Need:
    """What a partition must hold on the target."""

    what: str  # how a person names it: "/home (ext4)" or "swap /dev/sda2"
    minimum: int | None  # bytes; DATA: used + margin (None: not captured, keeps its size); EMPTY: mkfs's minimum
    role: Role = Role.DATA
    size: int | None = None  # FIXED: exactly these bytes (None: the captured size)
    floor: int = 0  # DATA: what mkfs makes at least; the margin itself never asks for more than the captured size


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


def _place(
    table: PartitionTable, sizes: Mapping[int, int], first: int, grain: int, keep_gaps: bool = True,
) -> dict[int, tuple[int, int]]:
    """New (start, size) per partition number for these sizes (sectors). The gaps the captured
    table left are kept, or dropped (keep_gaps=False) when the partitions must be packed."""
    parts = table.partitions
    top = sorted((p for p in parts if not is_logical(table, p)), key=lambda p: p.start)
    logical = sorted((p for p in parts if is_logical(table, p)), key=lambda p: p.start)
    placed: dict[int, tuple[int, int]] = {}
    prev_old = prev_new = 0
    for p in top:
        gap = max(p.start - prev_old, 0) if keep_gaps else 0
        start = align_up(max(prev_new + gap, first), grain)
        if is_extended(table, p) and logical:
            inner_old, inner_new = p.start, start
            for lp in logical:
                lgap = max(lp.start - inner_old, 1) if keep_gaps else 1  # room for the logical's EBR
                lstart = align_up(inner_new + lgap, grain)
                placed[lp.number] = (lstart, sizes[lp.number])
                inner_old, inner_new = lp.end, lstart + sizes[lp.number]
            trailing = max(p.end - inner_old, 0) if keep_gaps else 0
            placed[p.number] = (start, inner_new + trailing - start)
        else:
            placed[p.number] = (start, sizes.get(p.number, p.size))
        prev_old = p.end
        prev_new = placed[p.number][0] + placed[p.number][1]
    return placed


def _end(placed: Mapping[int, tuple[int, int]]) -> int:
    return max((s + n for s, n in placed.values()), default=0)


@dataclass(frozen=True)
class Bounds:
    """Sectors one partition may get: at least `low`; `keep` when there is room."""

    low: int
    keep: int
    role: Role


def partition_bounds(table: PartitionTable, needs: Mapping[int, Need]) -> dict[int, Bounds]:
    """Each partition's least and wanted size on the target (extended partitions follow their logicals)."""
    ss = table.sector_size
    grain = max(MIB // ss, 1)
    out: dict[int, Bounds] = {}
    for p in table.partitions:
        if is_extended(table, p):
            continue
        need = needs.get(p.number)
        if need is None or need.role is Role.FIXED:
            size = -(-need.size // ss) if need is not None and need.size is not None else p.size
            out[p.number] = Bounds(size, size, Role.FIXED)
        elif need.role is Role.DATA:
            # the data fitted in the captured partition: a nearly full one keeps its size, it is not enlarged
            low = p.size if need.minimum is None else max(
                min(align_up(max(-(-need.minimum // ss), 1), grain), p.size), align_up(-(-need.floor // ss), grain))
            out[p.number] = Bounds(low, max(p.size, low), Role.DATA)
        else:
            floor = min(p.size, align_up(-(-EMPTY_FLOOR // ss), grain))
            low = max(floor, align_up(-(-(need.minimum or 0) // ss), grain))
            out[p.number] = Bounds(low, max(p.size, low), Role.EMPTY)
    return out


def share(grains: int, weights: Mapping[int, int], caps: Mapping[int, int] | None = None) -> dict[int, int]:
    """Split whole grains among partitions in proportion to their weights; with caps none gets
    more than its cap (what a capped one cannot take goes to the others)."""
    given = dict.fromkeys(weights, 0)
    open_ = [n for n in sorted(weights) if caps is None or caps[n] > 0]
    left = grains
    while left > 0 and open_:
        w = {n: max(weights[n], 1) for n in open_}
        total = sum(w.values())
        part = {n: left * w[n] // total for n in open_}
        for n in sorted(open_, key=lambda n: (-(left * w[n] % total), n))[: left - sum(part.values())]:
            part[n] += 1
        full = [n for n in open_ if caps is not None and given[n] + part[n] >= caps[n]]
        if not full:
            for n in open_:
                given[n] += part[n]
            return given
        for n in full:
            left -= caps[n] - given[n]  # type: ignore[index]
            given[n] = caps[n]  # type: ignore[index]
        open_ = [n for n in open_ if n not in full]
    return given


def plan_sizes(
    table: PartitionTable, old_sectors: int, target_sectors: int, needs: Mapping[int, Need],
    grow: int | None = None, target_device: str = "the target",
) -> tuple[dict[int, int], bool]:
    """Sectors per partition on the target, and whether the captured gaps are kept.

    Raises PlanRefused naming the disk's whole shortfall when the needs do not fit."""
    ss = table.sector_size
    grain = max(MIB // ss, 1)
    first, limit = usable_range(table, target_sectors)
    by_number = {p.number: p for p in table.partitions}
    bounds = partition_bounds(table, needs)
    growers = [grow] if grow is not None else [n for n, b in bounds.items() if b.role is Role.DATA]
    weights = {n: by_number[n].size for n in growers}

    sizes = {n: b.keep for n, b in bounds.items()}
    room = limit - _end(_place(table, sizes, first, grain))
    if room >= 0:  # the captured sizes fit: replay, and share what the disk grew
        extra = min(room, max(target_sectors - old_sectors, 0)) // grain
        for n, k in share(extra, weights).items():
            sizes[n] += k * grain
        return sizes, True

    sizes = {n: b.low for n, b in bounds.items()}
    packed = _end(_place(table, sizes, first, grain, keep_gaps=False))
    if packed > limit:
        raise _too_small(table, bounds, needs, target_device, target_sectors, packed, limit)
    left = (limit - packed) // grain
    # swap and empty filesystems get back their captured size first; with --grow every other partition does
    back = [n for n, b in bounds.items()
            if n != grow and (b.role is Role.EMPTY or (grow is not None and b.role is Role.DATA))]
    for n in sorted(back, key=lambda n: by_number[n].start):
        k = min(left, (bounds[n].keep - sizes[n]) // grain)
        sizes[n] += k * grain
        left -= k
    caps = None if grow is not None else {n: (bounds[n].keep - sizes[n]) // grain for n in growers}
    given = share(left, weights, caps)
    rest = left - sum(given.values())
    for n, k in share(rest, weights).items():
        given[n] += k
    for n, k in given.items():
        sizes[n] += k * grain
    return sizes, False


def migrate_table(
    table: PartitionTable,
    old_sectors: int,
    target_device: str,
    target_sectors: int,
    needs: Mapping[int, Need],
    grow: int | None = None,
) -> tuple[PartitionTable, tuple[Migration, ...]]:
    """The captured table fitted to the target, and what happened to each partition.

    `grow` (a partition number) takes all the free space instead of the restored filesystems
    sharing it. Raises PlanRefused when the target is too small for what must be kept.
    """
    check_captured(table)
    ss = table.sector_size
    grain = max(MIB // ss, 1)
    first, _limit = usable_range(table, target_sectors)
    by_number = {p.number: p for p in table.partitions}
    if grow is not None and (grow not in by_number or is_extended(table, by_number[grow])):
        raise PlanRefused(
            f"partition {grow} cannot take the size change",
            why="it is not a partition of the captured table, or it is an extended partition",
            fix="name a partition that holds a filesystem (a mount point such as /home, or its number)",
        )
    sizes, keep_gaps = plan_sizes(table, old_sectors, target_sectors, needs, grow, target_device)
    placed = _place(table, sizes, first, grain, keep_gaps)
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


def _too_small(
    table: PartitionTable, bounds: Mapping[int, Bounds], needs: Mapping[int, Need],
    target_device: str, target_sectors: int, packed_end: int, limit: int,
) -> PlanRefused:
    """The refusal of a disk too small for the needs: the whole shortfall, and each partition's need."""
    ss = table.sector_size
    tail = target_sectors - limit if table.label == "gpt" else 0  # gpt's backup entries and header
    need_total = (packed_end + tail) * ss
    holds = (limit + tail) * ss
    short = -(-(need_total - holds) // MIB)
    lines = []
    unknown = False
    for n in sorted(bounds):
        need = needs.get(n)
        what = need.what if need is not None else "no filesystem"
        note = ""
        if need is not None and need.role is Role.DATA and need.minimum is None:
            note = ", used bytes not captured: keeps its size"
            unknown = True
        lines.append(f"partition {n} {what} {human(bounds[n].low * ss)}{note}")
    overhead = need_total - sum(b.low for b in bounds.values()) * ss
    why = (f"each partition gets at least its need: {'; '.join(lines)}; and {human(overhead)} for 1 MiB "
           f"alignment and the partition table. A restored filesystem needs its captured used bytes "
           f"+ {int(MARGIN_FRACTION * 100)} % + {MARGIN_BYTES // MIB} MiB (at least what its mkfs makes), "
           f"swap and empty filesystems shrink to {EMPTY_FLOOR // MIB} MiB, partitions without a filesystem "
           "and sizes set with --size keep their size")
    if unknown:
        why += "; a filesystem whose used bytes were not captured cannot shrink"
    return PlanRefused(
        f"{target_device} is {short} MiB short: the filesystems need {human(need_total)} in all, "
        f"the disk holds {human(holds)}",
        why=why,
        fix=f"use a disk at least {short} MiB bigger, or give smaller --size values, or leave a vault out "
            "with --skip-vault (its filesystem is then made empty and small)",
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


