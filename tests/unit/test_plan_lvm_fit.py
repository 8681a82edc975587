"""A volume group laid out anew on a smaller disk (issue 17, "Sizes").

The Debian installer's "guided, use entire disk and set up LVM" machine: /boot on sda1, a PV
on sda5 holding root, swap_1 and home. Onto a disk too small for the PV's captured size, the
plan fits the PV partition to what the LVs hold (each at least its filesystem's used bytes +
margin) and rewrites the vgcfgbackup text the restore gives vgcfgrestore: every name and UUID
kept, one linear segment per LV laid out one after another. The text itself is made real by
vgcfgrestore inside the rescue VM (tests/vm/test_md_restore.py; the host has no device-mapper).
"""

from __future__ import annotations

import dataclasses
import re

import pytest

from plan_fixtures import GIB, MIB, images, target
from rescue.errors import PlanRefused
from rescue.layout.model import (
    BlockLayers, Boot, BootMode, Disk, Filesystem, FstabEntry, Layout, LvmLv, LvmPv, LvmVg, Partition,
    PartitionTable, RootMeta, Swap,
)
from rescue.plan import PlanOptions, build_plan
from rescue.plan.lvm import LvFit, refit_config, share_extents
from rescue.steps.lvm import MakeVolumeGroup

EXT = 4 * MIB
LVS = (("root", 20 * GIB, "0", "rootID-aaaa-bbbb-cccc-dddd-eeee-ffffff"),
       ("swap_1", 2 * GIB, str(20 * GIB // EXT), "swapID-aaaa-bbbb-cccc-dddd-eeee-ffffff"),
       ("home", 38 * GIB, str(22 * GIB // EXT), "homeID-aaaa-bbbb-cccc-dddd-eeee-ffffff"))


def config(pe_count: int) -> str:
    lvs = "".join(f"""
		{name} {{
			id = "{uuid}"
			status = ["READ", "WRITE", "VISIBLE"]
			flags = []
			creation_time = 1796427764	# 2026-12-04 23:42:44 +0000
			creation_host = "debian"
			segment_count = 1

			segment1 {{
				start_extent = 0
				extent_count = {size // EXT}	# a comment

				type = "striped"
				stripe_count = 1	# linear

				stripes = [
					"pv0", {first}
				]
			}}
		}}
""" for name, size, first, uuid in LVS)
    return f"""contents = "Text Format Volume Group"
version = 1

debian-vg {{
	id = "vgID00-aaaa-bbbb-cccc-dddd-eeee-ffffff"
	seqno = 4
	format = "lvm2"			# informational
	status = ["RESIZEABLE", "READ", "WRITE"]
	flags = []
	extent_size = 8192		# 4 Megabytes
	max_lv = 0
	max_pv = 0
	metadata_copies = 0

	physical_volumes {{

		pv0 {{
			id = "pvID00-aaaa-bbbb-cccc-dddd-eeee-ffffff"
			device = "/dev/sda5"	# Hint only

			status = ["ALLOCATABLE"]
			flags = []
			dev_size = {pe_count * 8192 + 2048}	# 60 Gigabytes
			pe_start = 2048
			pe_count = {pe_count}	# 60 Gigabytes
		}}
	}}

	logical_volumes {{
{lvs}
	}}

}}
"""


def debian_lvm(disk_size: int = 64 * GIB) -> Layout:
    pv_size = 60 * GIB + MIB
    table = PartitionTable(label="dos", device="/dev/sda", partitions=(
        Partition("/dev/sda1", 2048, 512 * MIB // 512, "83", bootable=True),
        Partition("/dev/sda2", 2048 + 513 * MIB // 512, (pv_size + MIB) // 512, "5"),
        Partition("/dev/sda5", 2048 + 514 * MIB // 512, pv_size // 512, "8e"),
    ))
    vg = LvmVg(name="debian-vg", uuid="vgID00-aaaa-bbbb-cccc-dddd-eeee-ffffff", extent_size=EXT,
               pvs=(LvmPv("/dev/sda5", uuid="pvID00-aaaa-bbbb-cccc-dddd-eeee-ffffff", vg="debian-vg",
                          pe_start=MIB, dev_size=pv_size),),
               lvs=tuple(LvmLv(name=n, uuid=u, size=s, segtype="linear", path=f"/dev/debian-vg/{n}",
                               dm_path=f"/dev/mapper/debian--vg-{n}") for n, s, _, u in LVS),
               config=config(60 * GIB // EXT))
    fss = (
        Filesystem("/dev/sda1", "ext2", uuid="11111111-0000-4000-8000-000000000000", mountpoint="/boot",
                   used=80 * MIB, root=RootMeta("/boot", 0o755, 0, 0)),
        Filesystem("/dev/mapper/debian--vg-root", "ext4", uuid="22222222-0000-4000-8000-000000000000",
                   mountpoint="/", used=3 * GIB, root=RootMeta("/", 0o755, 0, 0)),
        Filesystem("/dev/mapper/debian--vg-home", "ext4", uuid="44444444-0000-4000-8000-000000000000",
                   mountpoint="/home", used=5 * GIB, root=RootMeta("/home", 0o755, 0, 0)),
        Filesystem("/dev/mapper/debian--vg-swap_1", "swap", uuid="33333333-0000-4000-8000-000000000000"),
        Filesystem("/dev/sda5", "LVM2_member", uuid="pvID00-aaaa-bbbb-cccc-dddd-eeee-ffffff"),
    )
    return Layout(
        client="debian", captured_at="2026-12-05T03:00:00Z", hostname="debian",
        disks=(Disk("/dev/sda", disk_size, table=table),), filesystems=fss,
        swaps=(Swap("/dev/dm-1", 2 * GIB, uuid="33333333-0000-4000-8000-000000000000"),),
        fstab=(FstabEntry("/dev/mapper/debian--vg-root", "/", "ext4"),),
        boot=Boot(mode=BootMode.BIOS, grub_disk="/dev/sda"), layers=BlockLayers(vgs=(vg,)),
    )


def segments(text: str) -> dict[str, tuple[int, int]]:
    """LV name -> (first extent on pv0, extents), from a vgcfgbackup text."""
    return {m.group(1): (int(m.group(3)), int(m.group(2))) for m in re.finditer(
        r'\n\t\t(\S+) \{.*?extent_count = (\d+).*?"pv0", (\d+)', text[text.index("logical_volumes"):], re.S)}


def plan_onto(size: int):
    lay = debian_lvm()
    return lay, build_plan(lay, images(lay), target(size, device="/dev/sdc"), PlanOptions())


def test_a_disk_as_big_replays_the_volume_group_as_captured():
    lay, plan = plan_onto(64 * GIB)
    (make,) = [s for s in plan.steps if isinstance(s, MakeVolumeGroup)]
    assert make.config == lay.layers.vgs[0].config  # nothing rewritten where it fits
    assert not any("laid out anew" in w for w in plan.warnings)


def test_a_smaller_disk_fits_the_pv_and_each_lv_to_what_it_holds_keeping_every_uuid():
    lay, plan = plan_onto(20 * GIB)
    (make,) = [s for s in plan.steps if isinstance(s, MakeVolumeGroup)]
    pv5 = next(p for p in plan.new_table.partitions if p.number == 5)
    pe_count = int(re.search(r"pe_count = (\d+)", make.config).group(1))
    assert pe_count == (pv5.size * 512 - MIB) // EXT  # the PV is its new partition, less its metadata area
    assert int(re.search(r"dev_size = (\d+)", make.config).group(1)) == pv5.size
    laid = segments(make.config)
    assert set(laid) == {"root", "swap_1", "home"}
    # one after another from extent 0, in the order they lay, all inside the PV
    order = sorted(laid.values())
    assert order[0][0] == 0 and all(a[0] + a[1] == b[0] for a, b in zip(order, order[1:]))
    assert order[-1][0] + order[-1][1] <= pe_count
    made = {f.mountpoint: f for f in plan.filesystems}
    for mp, lv, used in (("/", "root", 3 * GIB), ("/home", "home", 5 * GIB)):
        assert made[mp].size == laid[lv][1] * EXT and made[mp].size > used  # used bytes + margin fit
        assert made[mp].device == f"/dev/mapper/debian--vg-{lv}"
    for _, _, _, uuid in LVS:
        assert f'id = "{uuid}"' in make.config
    assert 'id = "vgID00-aaaa-bbbb-cccc-dddd-eeee-ffffff"' in make.config
    (said,) = [w for w in plan.warnings if "laid out anew" in w]
    assert "root 20 GiB -> " in said and "home 38 GiB -> " in said and "UUID is kept" in said
    assert "partition 5" in said and "/dev/sdc" in said


def test_a_disk_too_small_for_the_used_bytes_is_still_refused():
    with pytest.raises(PlanRefused):
        plan_onto(8 * GIB)  # 3 + 5 GiB used, plus /boot and the margins: no fit


def test_lvs_share_what_is_left_in_proportion_to_what_each_gave_up():
    fits = (LvFit("a", 100, 10), LvFit("b", 50, 40), LvFit("c", 10, 10))
    assert share_extents(fits, 200) == {"a": 100, "b": 50, "c": 10}  # room for all: as captured
    got = share_extents(fits, 80)
    assert got["c"] == 10 and got["a"] >= 10 and got["b"] >= 40 and sum(got.values()) <= 80
    assert got["a"] - 10 > got["b"] - 40  # a gave up more, so it gets more of the rest back
    with pytest.raises(ValueError):
        share_extents(fits, 59)


def test_refit_keeps_everything_but_the_places_and_sizes():
    text = config(60 * GIB // EXT)
    new = refit_config(text, {"root": 1000, "swap_1": 32, "home": 1500}, 2600, 2600 * EXT + MIB)
    assert segments(new) == {"root": (0, 1000), "swap_1": (1000, 32), "home": (1032, 1500)}
    strip = lambda t: re.sub(r"extent_count = \d+[^\n]*|\"pv0\", \d+|pe_count = \d+[^\n]*|dev_size = \d+[^\n]*", "", t)
    assert strip(new).replace("\n", "").replace("\t", "") == strip(text).replace("\n", "").replace("\t", "")
    with pytest.raises(ValueError):
        refit_config(text, {"root": 1000, "swap_1": 32, "home": 1500}, 2000, 2000 * EXT)


def test_a_bigger_disk_gives_its_room_to_the_volume_group_not_to_boot():
    """The common server onto a bigger disk: /boot keeps its size, the PV's partition takes the
    new room and the VG's text gets the bigger PV, every LV where it was (free extents to use)."""
    lay, plan = plan_onto(500 * GIB)
    sizes = {p.number: p.size * 512 for p in plan.new_table.partitions}
    assert sizes[1] == 512 * MIB and sizes[5] > 400 * GIB
    (make,) = [s for s in plan.steps if isinstance(s, MakeVolumeGroup)]
    assert segments(make.config) == segments(lay.layers.vgs[0].config)  # no LV moved or grew
    assert int(re.search(r"pe_count = (\d+)", make.config).group(1)) == (sizes[5] - MIB) // EXT
    (said,) = [w for w in plan.warnings if "takes the new room" in w]
    assert "lvextend -r" in said
    chosen = build_plan(lay, images(lay), target(500 * GIB, device="/dev/sdc"), PlanOptions(grow="/boot"))
    assert {p.number: p.size * 512 for p in chosen.new_table.partitions}[5] == 60 * GIB + MIB  # as asked
    (make,) = [s for s in chosen.steps if isinstance(s, MakeVolumeGroup)]
    assert make.config == lay.layers.vgs[0].config
