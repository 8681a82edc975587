"""The plan takes the target's geometry from libparted and agrees with it, or says why not."""

from __future__ import annotations

import dataclasses

import pytest
from plan_fixtures import GIB, images, layout, target

from rescue import libparted
from rescue.errors import PlanRefused
from rescue.plan import PlanOptions, build_plan


def geometry_target(tmp_path, size: int):
    """A target whose geometry libparted read from an image file of its size."""
    img = tmp_path / "target.img"
    with open(img, "wb") as f:
        f.truncate(size)
    g = libparted.read_geometry(str(img))
    return target(size, sector_size=g.logical_sector, physical_sector_size=g.physical_sector,
                  io_align=(g.align_offset, g.align_grain), usable=(g.first_usable, g.last_usable))


@pytest.mark.parametrize("size", [12 * GIB, 20 * GIB + 7 * 512])
def test_the_plans_gpt_end_is_libparteds(tmp_path, size):
    lay = layout("gpt")
    t = geometry_target(tmp_path, size)
    plan = build_plan(lay, images(lay), t, PlanOptions())
    assert plan.new_table.last_lba == t.usable[1]
    assert not any("alignment" in w for w in plan.warnings)


def test_a_disagreement_with_libparted_is_refused_before_anything_is_written(tmp_path):
    lay = layout("gpt")
    t = geometry_target(tmp_path, 12 * GIB)
    off = dataclasses.replace(t, usable=(t.usable[0], t.usable[1] - 1))
    with pytest.raises(PlanRefused) as e:
        build_plan(lay, images(lay), off, PlanOptions())
    assert "libparted" in e.value.why


def test_partitions_off_the_optimal_alignment_are_a_warning(tmp_path):
    lay = layout("gpt")
    t = dataclasses.replace(geometry_target(tmp_path, 12 * GIB), io_align=(0, 4096))
    plan = build_plan(lay, images(lay), t, PlanOptions())
    assert any("optimal I/O alignment (4096 sectors)" in w for w in plan.warnings)
