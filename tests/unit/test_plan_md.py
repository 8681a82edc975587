"""md arrays made again (issue 17): the mdadm commands and the plan's choices, from the
array RECORDED inside the rescue VM (data/lvm-md/, see test_layout_lvm_md.py): this host's
kernel has no md, so the commands themselves run in the vm tier."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from rescue.capture.build import build_layout
from rescue.errors import PlanRefused, UnsafeTarget
from rescue.layout.model import MdArray, MdMember
from rescue.plan.md import plan_arrays
from rescue.run import Result
from rescue.steps.md import MakeArray, StopArrays, mdadm_layout

DATA = Path(__file__).resolve().parent / "data" / "lvm-md"


@pytest.fixture(scope="module")
def array() -> MdArray:
    files = {p.name: p.read_bytes() for p in DATA.iterdir() if p.name not in ("README", "layout.json")}
    (md,) = build_layout(files, client="lvmtest", captured_at="2026-12-04T23:43:00+00:00").layers.md
    return md


def test_both_members_restored_make_the_array_with_every_recorded_identifier(array):
    plan = plan_arrays([array], {"/dev/vdb1": "/dev/sdc1", "/dev/vdc1": "/dev/sdd1"})
    (step,) = plan.steps
    assert plan.warnings == ()
    argv = step.create_argv()
    assert argv[:3] == ["mdadm", "--create", "/dev/md0"]
    assert f"--uuid={array.uuid}" in argv and "--name=lvmtest:0" in argv
    assert "--metadata=1.2" in argv and "--level=raid1" in argv and "--raid-devices=2" in argv
    assert "--bitmap=internal" in argv
    assert f"--data-offset={array.data_offset // 2}K" in argv
    assert "--assume-clean" in argv  # a mirror of new disks: no resync of blocks nobody wrote
    assert argv[-2:] == ["/dev/sdc1", "/dev/sdd1"]  # slot 0 first, as captured
    assert not any(a.startswith("--scan") or a == "-s" for a in argv)


def test_one_member_restored_makes_a_degraded_array_and_says_how_to_complete_it(array):
    plan = plan_arrays([array], {"/dev/vdc1": "/dev/sdc1"})  # the disk of slot 0 is not restored
    (step,) = plan.steps
    assert step.members == (None, "/dev/sdc1") and step.degraded
    assert step.create_argv()[-2:] == ["missing", "/dev/sdc1"]
    assert "degraded" in step.describe()
    (warning,) = plan.warnings
    assert "degraded, 1 of 2" in warning and "--add" in warning


def test_an_array_none_of_whose_members_is_restored_is_left_out(array):
    assert plan_arrays([array], {"/dev/vda1": "/dev/sdc1"}).steps == ()


def test_parity_arrays_resync_and_lose_no_more_members_than_they_can(array):
    raid5 = dataclasses.replace(array, level="raid5", raid_devices=3, chunk=512 * 1024, layout="left-symmetric",
                                members=(*array.members, MdMember("/dev/vdd1", role="2")))
    (step,) = plan_arrays([raid5], {"/dev/vdb1": "/dev/sdb1", "/dev/vdc1": "/dev/sdc1"}).steps
    argv = step.create_argv()
    assert "--assume-clean" not in argv  # parity must be computed before a member can fail
    assert "--chunk=512K" in argv and "--layout=left-symmetric" in argv
    with pytest.raises(PlanRefused, match="would lack 2 of its 3"):
        plan_arrays([raid5], {"/dev/vdb1": "/dev/sdb1"})


def test_firmware_raid_and_unknown_levels_are_refused_with_what_to_do(array):
    with pytest.raises(PlanRefused, match="firmware RAID"):
        plan_arrays([dataclasses.replace(array, metadata="imsm")], {"/dev/vdb1": "/dev/sdb1"})
    with pytest.raises(PlanRefused, match="unknown level") as caught:
        plan_arrays([dataclasses.replace(array, level=None)], {"/dev/vdb1": "/dev/sdb1"})
    assert "by hand" in caught.value.fix


def test_raid10_layouts_are_given_as_mdadm_create_takes_them():
    assert mdadm_layout("near=2") == "n2" and mdadm_layout("far=2") == "f2" and mdadm_layout("offset=3") == "o3"
    assert mdadm_layout("left-symmetric") == "left-symmetric"


def test_restore_sh_makes_the_array_once_and_assembles_it_from_named_members_on_a_rerun(array):
    (step,) = plan_arrays([array], {"/dev/vdb1": "/dev/sdc1", "/dev/vdc1": "/dev/sdd1"}).steps
    text = "\n".join(step.script())
    assert text.startswith("if ! mdadm --examine --export /dev/sdc1")
    assert "mdadm --create /dev/md0" in text
    assert f"mdadm --assemble /dev/md0 --run --uuid={array.uuid} /dev/sdc1 /dev/sdd1" in text
    assert "--scan" not in text
    stop = StopArrays(("/dev/md0", "/dev/md1"))
    assert stop.script() == ["mdadm --stop /dev/md1 2>/dev/null || true", "mdadm --stop /dev/md0 2>/dev/null || true"]


class Recorder:
    """The gateway's place: answers `mdadm --detail --export` as the kernel would."""

    def __init__(self, detail: str | None, examine: str = "") -> None:
        self.detail, self.examine, self.calls = detail, examine, []

    def run(self, argv, check=True, **kw):
        self.calls.append(list(argv))
        if argv[:3] == ["mdadm", "--detail", "--export"]:
            return Result(tuple(argv), 0 if self.detail else 1, self.detail or "", "")
        if argv[:3] == ["mdadm", "--examine", "--export"]:
            return Result(tuple(argv), 0 if self.examine else 1, self.examine, "")
        return Result(tuple(argv), 0, "", "")


def _step(array) -> MakeArray:
    (step,) = plan_arrays([array], {"/dev/vdb1": "/dev/sdc1", "/dev/vdc1": "/dev/sdd1"}).steps
    return step


def test_an_array_running_from_other_disks_under_the_same_name_is_never_written(array):
    """The old disks assembled by someone (same UUID): the step refuses and creates nothing."""
    old = (f"MD_LEVEL=raid1\nMD_UUID={array.uuid}\nMD_DEVICE_dev_sda1_ROLE=0\nMD_DEVICE_dev_sda1_DEV=/dev/sda1\n"
           "MD_DEVICE_dev_sdb1_ROLE=1\nMD_DEVICE_dev_sdb1_DEV=/dev/sdb1\n")
    ctx = Recorder(old)
    with pytest.raises(UnsafeTarget, match="already running, from /dev/sda1, /dev/sdb1") as caught:
        _step(array).run(ctx)
    assert "mdadm --stop /dev/md0" in caught.value.fix
    assert not any(c[:2] == ["mdadm", "--create"] or c[0] == "wipefs" for c in ctx.calls)


def test_a_rerun_assembles_what_the_first_run_made_instead_of_making_it_again(array):
    ctx = Recorder(None, examine=f"MD_UUID={array.uuid}\n")
    _step(array).run(ctx)
    assert ["mdadm", "--assemble", "/dev/md0", "--run", f"--uuid={array.uuid}", "/dev/sdc1", "/dev/sdd1"] in ctx.calls
    assert not any(c[:2] == ["mdadm", "--create"] or c[0] == "wipefs" for c in ctx.calls)
    fresh = Recorder(None)
    _step(array).run(fresh)
    assert [c[0] for c in fresh.calls].count("wipefs") == 2
    assert any(c[:2] == ["mdadm", "--create"] for c in fresh.calls)
