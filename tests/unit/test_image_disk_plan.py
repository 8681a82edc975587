"""prepare-disk's partition plan: pure data, checked against real sfdisk on a disk image file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rescue.commands import prepare_disk as pd
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
    assert "bootable" in plan.sfdisk_script()


@pytest.mark.parametrize("table", ["gpt", "dos"])
def test_sfdisk_accepts_the_script_and_lays_out_what_the_plan_says(table: str, tmp_path: Path):
    disk = tmp_path / "disk.img"
    with open(disk, "wb") as f:
        f.truncate(2 * GIB)
    plan = pd.plan_disk(table, GIB, 64)
    run(["sfdisk", "--quiet", str(disk)], input=plan.sfdisk_script())
    parts = json.loads(run(["sfdisk", "--json", str(disk)]).stdout)["partitiontable"]["partitions"]
    assert [p["start"] for p in parts] == [p.start for p in plan.parts]
    assert [p["size"] for p in parts[:-1]] == [p.size for p in plan.parts[:-1]]
    if table == "gpt":
        assert [p["name"] for p in parts] == ["bios-boot", "esp", "rescue", "backup"]
        assert "LegacyBIOSBootable" in parts[2].get("attrs", "")


def test_minimum_disk_size_depends_on_the_backup_filesystem():
    plan = pd.plan_disk("gpt", GIB, 64)
    assert pd.min_disk_bytes(plan, "xfs") - pd.min_disk_bytes(plan, "ext4") == (300 - 64) * MIB
    assert pd.min_disk_bytes(plan, "ext4") > GIB + 65 * MIB
