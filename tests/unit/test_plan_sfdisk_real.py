"""The planned tables are accepted by the real sfdisk exactly as planned.

Each plan's new table is written as the restore writes it (its partition
step's script and sfdisk arguments) onto a sparse image file of the
target's size (no root needed), read back with `sfdisk -d`, and compared:
starts, sizes, types, PARTUUIDs, names, attrs, bootable flags, label-id and
gpt's last-lba must all be what the plan said.
"""

from __future__ import annotations

import dataclasses

import pytest
from plan_fixtures import GIB, MIB, images, layout, target

from rescue.layout.sfdisk import parse_sfdisk, render_sfdisk
from rescue.plan import PlanOptions, build_plan
from rescue.run import run
from rescue.steps.partition import SFDISK_WRITE, WritePartitionTable

CASES = [
    ("gpt", 12 * GIB, None), ("gpt", 20 * GIB, None), ("gpt", 9 * GIB, None), ("gpt", 16 * GIB, "/"),
    ("dos", 8 * GIB, None), ("dos", 30 * GIB, None), ("dos", 5 * GIB, None),
    ("ext", 10 * GIB, None), ("ext", 18 * GIB, None), ("ext", 7 * GIB, None), ("ext", 12 * GIB, "/"),
    ("old", 4 * GIB, None), ("old", 6 * GIB, None), ("old", 3 * GIB + 512 * MIB, None),
]


@pytest.mark.parametrize(("name", "size", "grow"), CASES)
def test_real_sfdisk_writes_the_planned_table_as_planned(tmp_path, name, size, grow):
    lay = layout(name)
    plan = build_plan(lay, images(lay), target(size), PlanOptions(grow=grow))
    img = tmp_path / "target.img"
    with open(img, "wb") as f:
        f.truncate(size)
    (step,) = [s for s in plan.steps if isinstance(s, WritePartitionTable)]
    assert step.table == plan.new_table
    script = render_sfdisk(step.table, device="target.img")
    run([*SFDISK_WRITE, "--no-tell-kernel", "target.img"], input=script, cwd=str(tmp_path))
    dump = run(["sfdisk", "-d", "target.img"], cwd=str(tmp_path)).stdout
    back = parse_sfdisk(dump, "target.img dump")

    def comparable(t):
        return [dataclasses.replace(p, node=str(p.number)) for p in t.partitions]

    assert comparable(back) == comparable(plan.new_table)
    assert back.label_id == plan.new_table.label_id
    if plan.new_table.label == "gpt":
        assert back.last_lba == plan.new_table.last_lba
        assert back.first_lba == plan.new_table.first_lba
