"""prepare-disk's partition plan: pure data, written by the one sfdisk writer (render_sfdisk) and checked
against real sfdisk on a disk image file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rescue.layout.sfdisk import render_sfdisk
from rescue.prepare import plan as pd
from rescue.run import run

GIB = 1 << 30
MIB = 1 << 20


def test_gpt_plan_is_bios_boot_esp_rescue_backup_in_whole_mib():
    plan = pd.plan_disk("gpt", GIB, 64)
    assert [(p.number, p.role) for p in plan.parts] == [(1, "bios-boot"), (2, "esp"), (3, "rescue"), (4, "backup")]
    assert all(p.start % 2048 == 0 for p in plan.parts), "every partition starts on a MiB boundary"
    assert plan.part("bios-boot").size == 2048 and plan.core_lba == 2048 and plan.core_room == 2048
    assert plan.part("esp").size * 512 == 64 * MIB
    assert plan.part("rescue").size * 512 == GIB
    assert plan.part("backup").size is None


def test_dos_plan_is_rescue_and_backup_with_grub_in_the_gap():
    plan = pd.plan_disk("dos", GIB + 1, 64)
    assert [p.role for p in plan.parts] == ["rescue", "backup"]
    assert plan.part("rescue").size * 512 == GIB + MIB, "rounded up to whole MiB"
    assert (plan.core_lba, plan.core_room) == (1, 2047)
    assert "bootable" in render_sfdisk(plan.sized(2 * GIB).partition_table("/dev/sdb"))


@pytest.mark.parametrize("table", ["gpt", "dos"])
def test_sfdisk_accepts_the_script_and_lays_out_what_the_plan_says(table: str, tmp_path: Path):
    disk = tmp_path / "disk.img"
    with open(disk, "wb") as f:
        f.truncate(2 * GIB)
    plan = pd.plan_disk(table, GIB, 64).sized(2 * GIB)
    run(["sfdisk", "--quiet", str(disk)], input=render_sfdisk(plan.partition_table(str(disk))))
    parts = json.loads(run(["sfdisk", "--json", str(disk)]).stdout)["partitiontable"]["partitions"]
    assert [p["start"] for p in parts] == [p.start for p in plan.parts]
    assert [p["size"] for p in parts] == [p.size for p in plan.parts]
    if table == "gpt":
        assert [p["name"] for p in parts] == ["bios-boot", "esp", "rescue", "backup"]
        assert "LegacyBIOSBootable" in parts[2].get("attrs", "")


def test_minimum_disk_size_depends_on_the_backup_filesystem():
    plan = pd.plan_disk("gpt", GIB, 64)
    assert pd.min_disk_bytes(plan, "xfs") - pd.min_disk_bytes(plan, "ext4") == (300 - 64) * MIB
    assert pd.min_disk_bytes(plan, "ext4") > GIB + 65 * MIB


@pytest.mark.parametrize(("table", "size"), [("gpt", 2 * GIB), ("gpt", 2000 * MIB), ("dos", 2 * GIB), ("dos", 2001 * MIB)])
def test_the_backup_partition_ends_where_sfdisk_ends_the_rest_of_the_disk(table: str, size: int, tmp_path: Path):
    """The plan sizes the last partition itself; it must be what sfdisk makes of "the rest of the disk"."""
    disk = tmp_path / "disk.img"
    with open(disk, "wb") as f:
        f.truncate(size)
    plan = pd.plan_disk(table, GIB, 64)
    script = render_sfdisk(plan.sized(size).partition_table(str(disk)))
    rest = script.rstrip("\n").rsplit("\n", 1)
    run(["sfdisk", "--quiet", str(disk)], input=rest[0] + "\n" + rest[1].split(", size=")[0] + ", type="
        + rest[1].split("type=")[1] + "\n")
    parts = json.loads(run(["sfdisk", "--json", str(disk)]).stdout)["partitiontable"]["partitions"]
    assert parts[-1]["size"] == plan.sized(size).parts[-1].size
