"""prepare-disk's plan of typed steps (rescue.prepare.plan): pure data, no disk touched.

And the boundaries the engine API keeps: the drill imports no command module,
and no command builds an Executor or a prepare plan itself.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from rescue.errors import PlanRefused
from rescue.prepare.plan import PrepareOptions, RescueImage, build_prepare_plan, build_update_plan, plan_disk
from rescue.steps import (
    InstallBootCode,
    MakeBank,
    MakeEsp,
    MakeFilesystem,
    MountFilesystem,
    UnmountAll,
    WipeSignatures,
    WritePartitionTable,
    WriteRescueImage,
)

GIB = 1 << 30
MIB = 1 << 20
PKG = Path(__file__).resolve().parents[2] / "rescue"
IMAGE = RescueImage(Path("/cache/rescue-root.img"), Path("/cache/rescue-root.bmap"), GIB, "RESCUE")


def opts(**kw) -> PrepareOptions:
    return PrepareOptions(dev="/dev/sdx", image=IMAGE.path, **kw)


def test_gpt_plan_runs_the_restores_step_kinds_and_sizes_the_backup_partition_from_the_disk():
    plan = build_prepare_plan(opts(disk_name="shelf-3"), "/dev/sdx", "sdx", 2 * GIB, IMAGE)
    assert [type(s) for s in plan.steps] == [WipeSignatures, WritePartitionTable, WriteRescueImage, MakeEsp,
                                             InstallBootCode, MakeFilesystem, MountFilesystem, MakeBank, UnmountAll]
    table = plan.steps[1].table
    assert [p.node for p in table.partitions] == ["/dev/sdx1", "/dev/sdx2", "/dev/sdx3", "/dev/sdx4"]
    assert [p.name for p in table.partitions] == ["bios-boot", "esp", "rescue", "backup"]
    backup = table.partitions[-1]
    assert backup.end == (2 * GIB // 512 - 33) // 2048 * 2048, "to the end of the disk, as sfdisk aligns it"
    assert plan.steps[2].device == "/dev/sdx3" and plan.steps[2].bmap == "/cache/rescue-root.bmap"
    assert plan.steps[3].argv(None)[:3] == ["mkfs.vfat", "-F", "32"], "the ESP stays FAT32"
    assert (plan.steps[5].device, plan.steps[5].fstype, plan.steps[5].label) == ("/dev/sdx4", "ext4", "BACKUP")
    assert plan.steps[7].disk_name == "shelf-3"
    assert len({s.key for s in plan.steps}) == len(plan.steps), "journal keys are unique"
    assert "ERASED" in plan.review() and "sfdisk --wipe always" in plan.script()


def test_dos_plan_has_no_esp_and_its_boot_code_goes_after_the_mbr():
    plan = build_prepare_plan(opts(table="dos", backup_fs="xfs", label="BK2"), "/dev/loop7", "x.img", 2 * GIB, IMAGE)
    assert not any(isinstance(s, MakeEsp) for s in plan.steps)
    boot = next(s for s in plan.steps if isinstance(s, InstallBootCode))
    assert (boot.esp, boot.core_lba, boot.core_room, boot.rescue_number) == (None, 1, 2047, 1)
    assert plan.steps[1].table.partitions[0].bootable and plan.steps[1].table.partitions[-1].end == 2 * GIB // 512


def test_the_same_request_makes_the_same_plan_so_a_rerun_resumes():
    a = build_prepare_plan(opts(), "/dev/sdx", "sdx", 2 * GIB, IMAGE)
    b = build_prepare_plan(opts(), "/dev/sdx", "sdx", 2 * GIB, IMAGE)
    assert a == b


@pytest.mark.parametrize(("kw", "size", "said"), [
    ({}, GIB, "too small"),
    ({"backup_fs": "xfs"}, GIB + 200 * MIB, "too small"),
    ({"backup_fs": "xfs", "label": "THIRTEEN-CHRS"}, 2 * GIB, "too long"),
])
def test_what_cannot_work_is_refused_before_any_step(kw, size, said):
    with pytest.raises(PlanRefused) as e:
        build_prepare_plan(opts(**kw), "/dev/sdx", "sdx", size, IMAGE)
    assert said in str(e.value)


def test_update_plan_writes_only_the_rescue_partition_and_the_boot_code():
    disk = plan_disk("gpt", GIB, 64).sized(2 * GIB)
    plan = build_update_plan("/dev/sdx", "sdx", 2 * GIB, disk, IMAGE, True, ("/dev/sdx4",))
    assert [type(s) for s in plan.steps] == [WriteRescueImage, InstallBootCode]
    assert plan.steps[0].device == "/dev/sdx3" and plan.steps[1].esp == "/dev/sdx2"
    assert "/dev/sdx4 stays untouched" in plan.review()
    small = RescueImage(IMAGE.path, None, 2 * GIB, "RESCUE")
    with pytest.raises(PlanRefused):
        build_update_plan("/dev/sdx", "sdx", 4 * GIB, disk, small, True, ())


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return found


def calls(path: Path) -> set[str]:
    return {n.func.id for n in ast.walk(ast.parse(path.read_text()))
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}


def test_the_drill_imports_no_command_module():
    bad = {f"{p.name}: {m}" for p in (PKG / "drill").glob("*.py") for m in imports(p)
           if m == "rescue.commands" or m.startswith("rescue.commands.")}
    assert bad == set()


def test_prepare_disk_command_builds_no_executor_and_no_plan():
    path = PKG / "commands" / "prepare_disk.py"
    assert calls(path) & {"Executor", "build_prepare_plan", "build_update_plan", "PreparePlan", "DiskPlan"} == set()
    assert "rescue.prepare.run.prepare_disk" in imports(path)
