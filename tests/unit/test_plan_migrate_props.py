"""Property tests: whatever the captured table (gpt, dos with logicals, 1-8 partitions,
restored data, swap, partitions without a filesystem) and the target size, a plan exists
exactly when the needs fit; it never overlaps, never passes the disk's end, gives every
partition its need, keeps what must be kept, and a bigger disk grows only restored data."""

from __future__ import annotations

import dataclasses

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from rescue.errors import PlanRefused
from rescue.layout.model import Partition, PartitionTable
from rescue.plan.migrate import (
    MIB,
    Need,
    Role,
    check_fits,
    gpt_last_lba,
    is_extended,
    is_logical,
    migrate_table,
)

GRAIN = 2048
LINUX = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"


@st.composite
def tables(draw, aligned: bool = False):
    label = draw(st.sampled_from(["dos", "gpt"]))

    def size():
        if aligned:
            return draw(st.integers(1, 2000)) * GRAIN
        return draw(st.integers(1, 4_000_000))

    def gap(lo=0):
        if aligned:
            return draw(st.integers(lo and 1, 3)) * GRAIN
        return draw(st.integers(lo, 5000))

    parts: list[Partition] = []
    pos = GRAIN if aligned else draw(st.integers(34 if label == "gpt" else 1, 4096))
    if label == "gpt":
        for n in range(1, draw(st.integers(1, 8)) + 1):
            pos += gap() if n > 1 else 0
            s = size()
            parts.append(Partition(f"/dev/sda{n}", pos, s, LINUX, uuid=f"00000000-0000-4000-8000-{n:012d}",
                                   name=f"part {n}", attrs="LegacyBIOSBootable" if n == 1 else None))
            pos += s
        first_lba = 34 if not aligned else 2048
    else:
        primaries = draw(st.integers(1, 4))
        ext_at = draw(st.integers(0, primaries - 1)) if draw(st.booleans()) else None
        logical_n = 5
        for n in range(1, primaries + 1):
            pos += gap() if n > 1 else 0
            if n - 1 == ext_at:
                ext_start = pos
                inner = pos
                logicals = []
                for _ in range(draw(st.integers(1, 4))):
                    inner += gap(lo=1)
                    s = size()
                    logicals.append(Partition(f"/dev/sda{logical_n}", inner, s, "83"))
                    logical_n += 1
                    inner += s
                end = inner + (gap() if draw(st.booleans()) else 0)
                parts.append(Partition(f"/dev/sda{n}", ext_start, end - ext_start, "5"))
                parts += logicals
                pos = end
            else:
                s = size()
                parts.append(Partition(f"/dev/sda{n}", pos, s, "83", bootable=n == 1))
                pos += s
        first_lba = None
    end = max(p.end for p in parts)
    old_sectors = end + (34 if label == "gpt" else 0) + (gap() if draw(st.booleans()) else 0)
    table = PartitionTable(
        label=label, device="/dev/sda", label_id="0xdeadbeef" if label == "dos" else "11111111-2222-4333-8444-555555555555",
        first_lba=first_lba, last_lba=gpt_last_lba(old_sectors, 512, None) if label == "gpt" else None,
        partitions=tuple(sorted(parts, key=lambda p: p.number)),
    )
    return table, old_sectors


@st.composite
def needs_for(draw, table):
    """A need per partition: restored data (used bytes known or not), swap or empty, or nothing."""
    needs = {}
    for p in table.partitions:
        if is_extended(table, p):
            continue
        kind = draw(st.sampled_from(["data", "data", "unknown", "empty", "none"]))
        if kind == "data":
            # up to twice the partition: a nearly full filesystem's used + margin passes its size
            needs[p.number] = Need(f"fs {p.number}", draw(st.integers(0, p.size * 1024)), Role.DATA)
        elif kind == "unknown":
            needs[p.number] = Need(f"fs {p.number}", None, Role.DATA)
        elif kind == "empty":
            mkfs_minimum = draw(st.sampled_from([40 * 1024, MIB, 114 * MIB]))  # swap, ext4, btrfs
            needs[p.number] = Need(f"swap {p.number}", min(mkfs_minimum, p.size * 512), Role.EMPTY)
    return needs


@st.composite
def cases(draw, aligned: bool = False):
    table, old_sectors = draw(tables(aligned))
    needs = draw(needs_for(table))
    growable = [p.number for p in table.partitions if not is_extended(table, p)]
    grow = draw(st.one_of(st.none(), st.sampled_from(growable)))
    target = draw(st.integers(max(old_sectors // 8, 4096), max(old_sectors * 3, 8192)))
    return table, old_sectors, target, grow, needs


def migrate(table, old_sectors, target, grow, needs):
    return migrate_table(table, old_sectors, "/dev/nvme0n1", target, needs, grow)


def least(table, p, needs) -> int:
    """The rule, written out again: sectors partition p must get."""
    need = needs.get(p.number)
    if need is None or need.role is Role.FIXED or need.minimum is None:
        return p.size
    sectors = -(-need.minimum // 512)
    if need.role is Role.DATA:  # at least 1 MiB, at most what it had
        return min(-(-max(sectors, 1) // GRAIN) * GRAIN, p.size)
    return max(min(p.size, 64 * GRAIN), -(-sectors // GRAIN) * GRAIN)


def packed_end(table, needs, first) -> int:
    """Where the last partition ends when every one gets its need, one after the other."""
    top = sorted((p for p in table.partitions if not is_logical(table, p)), key=lambda p: p.start)
    logical = sorted((p for p in table.partitions if is_logical(table, p)), key=lambda p: p.start)
    pos = first
    for p in top:
        pos = -(-pos // GRAIN) * GRAIN
        if is_extended(table, p) and logical:
            for lp in logical:
                pos = -(-(pos + 1) // GRAIN) * GRAIN + least(table, lp, needs)  # one sector for the EBR
        else:
            pos += p.size if is_extended(table, p) else least(table, p, needs)
    return pos


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_a_plan_exists_exactly_when_the_needs_fit_and_holds_them(case):
    table, old_sectors, target, grow, needs = case
    first = (table.first_lba or 34) if table.label == "gpt" else 1
    usable_end = gpt_last_lba(target, 512, None) + 1 if table.label == "gpt" else target
    fits = packed_end(table, needs, first) <= usable_end
    try:
        new, migrations = migrate(table, old_sectors, target, grow, needs)
    except PlanRefused as e:
        assert "bug in rescue" not in str(e), str(e)
        event("refused")
        assert not fits, f"refused although the needs fit: {e}"
        short = -(-(packed_end(table, needs, first) - usable_end) * 512 // MIB)
        assert f"is {short} MiB short" in e.what, e.what
        return
    event("planned")
    assert fits, "planned although the needs do not fit"
    check_fits(new, target)  # raises on overlap, past the end, logicals outside
    old = {p.number: p for p in table.partitions}
    for p in new.partitions:
        o = old[p.number]
        assert p.start % GRAIN == 0
        assert p.start >= first and p.end <= usable_end
        assert p.node == f"/dev/nvme0n1p{p.number}"
        assert (p.type, p.uuid, p.name, p.attrs, p.bootable) == (o.type, o.uuid, o.name, o.attrs, o.bootable)
        if is_extended(table, o):
            continue
        assert p.size >= least(table, o, needs), f"partition {p.number} gets less than it needs"
        need = needs.get(p.number)
        if (need is None or need.role is Role.FIXED) and p.number != grow:
            assert p.size == o.size, f"partition {p.number} has no filesystem but changed size"
    assert new.label_id == table.label_id and new.first_lba == table.first_lba
    assert (new.last_lba is None) == (table.label == "dos")
    assert [m.number for m in migrations] == sorted(old)


@settings(max_examples=300, deadline=None)
@given(cases(aligned=True), st.integers(1, 10_000))
def test_a_bigger_disk_grows_only_restored_filesystems_while_there_are_any(case, extra_mib):
    table, old_sectors, _target, _grow, needs = case
    target = old_sectors + extra_mib * GRAIN
    new, _ = migrate(table, old_sectors, target, None, needs)
    old = {p.number: p for p in table.partitions}
    data = {n for n, need in needs.items() if need.role is Role.DATA}
    grown = {p.number: p.size - old[p.number].size for p in new.partitions if not is_extended(table, p)}
    for n, g in grown.items():
        if n not in data:
            assert g == 0, f"partition {n} holds no restored data but grew while {sorted(data)} could"
    if data:
        assert sum(grown.values()) == extra_mib * GRAIN  # all of what the disk grew
        weights = {n: old[n].size for n in data}
        for n in data:  # in proportion to the captured size, to the MiB
            assert abs(grown[n] - extra_mib * GRAIN * weights[n] / sum(weights.values())) <= GRAIN


@settings(max_examples=200, deadline=None)
@given(cases(aligned=True))
def test_aligned_table_on_an_equal_disk_replays_exactly(case):
    table, old_sectors, _target, grow, needs = case
    new, migrations = migrate(table, old_sectors, old_sectors, grow, needs)
    assert [(p.start, p.size) for p in new.partitions] == [(p.start, p.size) for p in table.partitions]
    assert all(m.change == "stays" for m in migrations)


@settings(max_examples=200, deadline=None)
@given(cases(aligned=True), st.integers(1, 10_000))
def test_bigger_disk_with_grow_grows_only_that_partition_by_the_growth(case, extra_mib):
    table, old_sectors, _target, _grow, needs = case
    grow = next(p.number for p in table.partitions if not is_extended(table, p))
    target = old_sectors + extra_mib * GRAIN
    new, _ = migrate(table, old_sectors, target, grow, needs)
    old = {p.number: p for p in table.partitions}
    g = next(p for p in new.partitions if p.number == grow)
    assert g.size - old[grow].size == extra_mib * GRAIN
    for p in new.partitions:
        if p.number != grow and not is_extended(table, p):
            assert p.size == old[p.number].size
    shifted = {p.number for p in new.partitions if p.start != old[p.number].start}
    assert all(old[n].start > old[grow].start for n in shifted)
    assert dataclasses.replace(new, partitions=(), device=None, last_lba=None) == \
        dataclasses.replace(table, partitions=(), device=None, last_lba=None)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(["gpt", "dos", "ext", "old", "issue15"]), st.integers(32, 64 * 1024),
       st.sampled_from([None, "/", "/home"]))
def test_whole_plans_of_real_sfdisk_tables_onto_any_size(name, size_mib, grow):
    """build_plan over the fixture machines: a valid plan, or a refusal that says how much is missing."""
    from plan_fixtures import images, layout, target

    from rescue.plan import PlanOptions, build_plan

    lay = layout(name)
    if grow == "/home" and lay.filesystem_at("/home") is None:
        grow = None
    size = size_mib * 1024 * 1024
    try:
        plan = build_plan(lay, images(lay), target(size), PlanOptions(grow=grow))
    except PlanRefused as e:
        assert "bug in rescue" not in str(e)
        assert "short" in e.what or "makes nothing under" in e.what, str(e)
        assert size < lay.disks[0].size
        return
    check_fits(plan.new_table, size // 512)
    for f in plan.filesystems:
        if f.used is not None and f.size < next(m.old_size for m in plan.migrations if m.number == f.number) * 512:
            assert f.size >= f.used * 1.1 + 64 * 1024 * 1024
