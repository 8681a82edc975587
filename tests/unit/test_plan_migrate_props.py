"""Property tests: whatever the captured table and the target size, the planned
table never overlaps, never passes the disk's end, keeps what must be kept,
and a refusal is only ever "too small", never a broken table."""

from __future__ import annotations

import dataclasses

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rescue.errors import PlanRefused
from rescue.layout.model import Partition, PartitionTable
from rescue.plan.migrate import Need, check_fits, gpt_last_lba, is_extended, is_logical, migrate_table

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
def cases(draw, aligned: bool = False):
    table, old_sectors = draw(tables(aligned))
    growable = [p.number for p in table.partitions if not is_extended(table, p)]
    grow = draw(st.sampled_from(growable))
    needs = {}
    for p in table.partitions:
        if draw(st.booleans()):
            needs[p.number] = Need(f"fs {p.number}", draw(st.integers(0, p.size * 512)))
        elif draw(st.booleans()):
            needs[p.number] = Need(f"fs {p.number}", None)
    target = draw(st.integers(max(old_sectors // 4, 4096), max(old_sectors * 3, 8192)))
    return table, old_sectors, target, grow, needs


def migrate(table, old_sectors, target, grow, needs):
    return migrate_table(table, old_sectors, "/dev/nvme0n1", target, grow, needs)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_planned_table_is_valid_or_refused_as_too_small(case):
    table, old_sectors, target, grow, needs = case
    try:
        new, migrations = migrate(table, old_sectors, target, grow, needs)
    except PlanRefused as e:
        assert "bug in rescue" not in str(e), str(e)
        assert "too small" in e.what or "short" in e.what
        assert target < old_sectors + (len(table.partitions) + 2) * GRAIN, "refused although the disk is big enough"
        return
    check_fits(new, target)  # raises on overlap, past the end, logicals outside
    usable_end = gpt_last_lba(target, 512, None) + 1 if table.label == "gpt" else target
    old = {p.number: p for p in table.partitions}
    for p in new.partitions:
        o = old[p.number]
        assert p.start % GRAIN == 0
        assert p.end <= usable_end
        assert p.node == f"/dev/nvme0n1p{p.number}"
        assert (p.type, p.uuid, p.name, p.attrs, p.bootable) == (o.type, o.uuid, o.name, o.attrs, o.bootable)
        if p.number != grow and not is_extended(table, p):
            assert p.size == o.size, f"partition {p.number} changed size but {grow} was to take the change"
    g = next(p for p in new.partitions if p.number == grow)
    if g.size < old[grow].size:
        assert needs.get(grow) is not None and needs[grow].minimum is not None
        assert g.size * 512 >= needs[grow].minimum
    if is_logical(table, old[grow]):
        ext_old = next(p for p in table.partitions if is_extended(table, p))
        ext_new = next(p for p in new.partitions if p.number == ext_old.number)
        last_old = max((p for p in table.partitions if is_logical(table, p)), key=lambda p: p.end)
        last_new = next(p for p in new.partitions if p.number == last_old.number)
        # The extended partition follows its logicals (grown, or moved by realignment of an
        # unaligned logical start) and keeps the room it had after the last one.
        assert ext_new.end - last_new.end == ext_old.end - last_old.end
    assert new.label_id == table.label_id and new.first_lba == table.first_lba
    assert (new.last_lba is None) == (table.label == "dos")
    assert [m.number for m in migrations] == sorted(old)


@settings(max_examples=200, deadline=None)
@given(cases(aligned=True))
def test_aligned_table_on_an_equal_disk_replays_exactly(case):
    table, old_sectors, _target, grow, needs = case
    new, migrations = migrate(table, old_sectors, old_sectors, grow, needs)
    assert [(p.start, p.size) for p in new.partitions] == [(p.start, p.size) for p in table.partitions]
    assert all(m.change == "stays" for m in migrations)


@settings(max_examples=200, deadline=None)
@given(cases(aligned=True), st.integers(1, 10_000))
def test_bigger_disk_grows_only_the_chosen_partition_by_the_growth(case, extra_mib):
    table, old_sectors, _target, grow, needs = case
    target = old_sectors + extra_mib * GRAIN
    new, _ = migrate(table, old_sectors, target, grow, needs)
    old = {p.number: p for p in table.partitions}
    g = next(p for p in new.partitions if p.number == grow)
    assert g.size - old[grow].size == extra_mib * GRAIN
    shifted = {p.number for p in new.partitions if p.start != old[p.number].start}
    assert all(old[n].start > old[grow].start for n in shifted)
    assert dataclasses.replace(new, partitions=(), device=None, last_lba=None) == \
        dataclasses.replace(table, partitions=(), device=None, last_lba=None)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(["gpt", "dos", "ext", "old"]), st.integers(256, 64 * 1024), st.sampled_from([None, "/", "/home"]))
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
