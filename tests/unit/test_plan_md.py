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
        self.noted: dict = {}
        self.saved = 0

    def data(self, key=None):
        return self.noted

    def save(self):
        self.saved += 1

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
    assert ctx.noted["array"] == {"device": "/dev/md0", "uuid": array.uuid} and ctx.saved
    fresh = Recorder(None)
    _step(array).run(fresh)
    assert [c[0] for c in fresh.calls].count("wipefs") == 2
    assert any(c[:2] == ["mdadm", "--create"] for c in fresh.calls)


# --- the plan of a machine on md RAID1 (no LVM): /boot, / and swap each on an array of two disks ---

import json  # noqa: E402

from plan_fixtures import GIB, MIB, images, target  # noqa: E402

from rescue.layout.model import (  # noqa: E402
    BlockLayers, Boot, BootMode, Disk, Filesystem, FstabEntry, Layout, Partition, PartitionTable, RootMeta, Swap,
)
from rescue.plan import PlanOptions, build_plan  # noqa: E402
from rescue.plan.model import Plan  # noqa: E402

UUIDS = ("3a5a5e2c:1b7d0f11:8e0c7b55:0d4e9a01", "3a5a5e2c:1b7d0f11:8e0c7b55:0d4e9a02",
         "3a5a5e2c:1b7d0f11:8e0c7b55:0d4e9a03")


def _md_table(disk: str) -> PartitionTable:
    parts = (Partition(f"{disk}1", 2048, 1 * GIB // 512, "fd"),
             Partition(f"{disk}2", 2048 + GIB // 512, 6 * GIB // 512, "fd"),
             Partition(f"{disk}3", 2048 + 7 * GIB // 512, 1 * GIB // 512, "fd"))
    return PartitionTable(label="dos", device=disk, partitions=parts)


def md_layout() -> Layout:
    arrays = tuple(
        MdArray(device=f"/dev/md{i}", uuid=UUIDS[i], name=f"server:{i}", level="raid1", metadata="1.2",
                raid_devices=2, size=size - 2 * MIB, bitmap="internal", data_offset=2048,
                members=(MdMember(f"/dev/sda{i + 1}", role="0"), MdMember(f"/dev/sdb{i + 1}", role="1")))
        for i, size in enumerate((1 * GIB, 6 * GIB, 1 * GIB))
    )
    fss = (
        Filesystem("/dev/md0", "ext2", uuid="11111111-0000-4000-8000-000000000000", label="boot", mountpoint="/boot",
                   used=60 * MIB, root=RootMeta("/boot", 0o755, 0, 0)),
        Filesystem("/dev/md1", "ext4", uuid="22222222-0000-4000-8000-000000000000", label="root", mountpoint="/",
                   used=2 * GIB, root=RootMeta("/", 0o755, 0, 0)),
        Filesystem("/dev/md2", "swap", uuid="33333333-0000-4000-8000-000000000000"),
        *(Filesystem(f"/dev/sd{d}{n}", "linux_raid_member") for d in "ab" for n in (1, 2, 3)),
    )
    return Layout(
        client="server", captured_at="2026-12-05T03:00:00Z", hostname="server",
        disks=(Disk("/dev/sda", 8 * GIB + 2 * MIB, table=_md_table("/dev/sda")),
               Disk("/dev/sdb", 8 * GIB + 2 * MIB, table=_md_table("/dev/sdb"))),
        filesystems=fss, swaps=(Swap("/dev/md2", GIB - 2 * MIB, uuid="33333333-0000-4000-8000-000000000000"),),
        fstab=(FstabEntry("UUID=22222222-0000-4000-8000-000000000000", "/", "ext4"),),
        boot=Boot(mode=BootMode.BIOS, grub_disk="/dev/sda"), layers=BlockLayers(md=arrays),
    )


def _md_plan(**options):
    lay = md_layout()
    return build_plan(lay, images(lay), target(16 * GIB, device="/dev/sdc"),
                      PlanOptions(source_disk="/dev/sda", **options))


def test_a_raid1_machine_onto_one_disk_makes_each_array_degraded_and_the_filesystems_on_them():
    plan = _md_plan()
    kinds = [s.kind for s in plan.steps]
    makes = [s for s in plan.steps if isinstance(s, MakeArray)]
    assert [m.device for m in makes] == ["/dev/md0", "/dev/md1", "/dev/md2"]
    assert [m.members for m in makes] == [("/dev/sdc1", None), ("/dev/sdc2", None), ("/dev/sdc3", None)]
    assert all(m.uuid == u and m.name == f"server:{i}" for i, (m, u) in enumerate(zip(makes, UUIDS)))
    # the arrays come after the table and before anything is made on them; stopped last
    assert kinds.index("partition") < kinds.index("md-create")
    assert max(i for i, k in enumerate(kinds) if k == "md-create") < kinds.index("mkfs")
    assert kinds[-1] == "md-stop" and plan.steps[-1].devices == ("/dev/md0", "/dev/md1", "/dev/md2")
    made = {f.device: f for f in plan.filesystems}
    assert made["/dev/md1"].mountpoint == "/" and made["/dev/md1"].uuid.startswith("22222222")
    assert made["/dev/md0"].fstype == "ext2" and made["/dev/md0"].vault == "boot"
    assert [s.device for s in plan.swaps] == ["/dev/md2"] and plan.swaps[0].uuid.startswith("33333333")
    assert not any(f.fstype == "linux_raid_member" for f in plan.filesystems)
    degraded = [w for w in plan.warnings if "degraded, 1 of 2" in w]
    assert len(degraded) == 3, plan.warnings


def test_member_partitions_keep_their_captured_sizes_on_a_bigger_disk():
    plan = _md_plan()
    old = {p.number: p.size for p in plan.old_table.partitions}
    new = {p.number: p.size for p in plan.new_table.partitions}
    assert new == old  # an array's members are made as they were: the array keeps its size


def test_the_md_plan_survives_plan_json_and_restore_sh_makes_each_array_once():
    plan = _md_plan()
    again = Plan.from_json(json.loads(plan.dumps()))
    assert again.steps == plan.steps
    text = plan.script()
    assert text.count("mdadm --create") == 3 and "missing" in text
    assert "mdadm --stop /dev/md2" in text


def test_a_member_signature_of_no_captured_array_is_still_refused():
    lay = md_layout()
    lay = dataclasses.replace(lay, layers=BlockLayers())
    with pytest.raises(PlanRefused, match="linux_raid_member"):
        build_plan(lay, images(lay), target(16 * GIB, device="/dev/sdc"), PlanOptions(source_disk="/dev/sda"))


def test_the_review_shows_each_member_partition_with_its_array_and_what_lies_on_it():
    text = _md_plan().review()
    assert "md0: /boot ext2" in text and "md1: / ext4" in text and "md2: swap" in text
    assert "mdadm /dev/md1 --add" in text


def test_a_killed_runs_array_is_stopped_only_when_it_still_runs_with_the_journals_uuid(array):
    """Executor.release_leftovers stops what the journal says an earlier run made, nothing else."""
    from rescue.steps.md import stop_left_array

    ours = Recorder(f"MD_UUID={array.uuid}\n")
    assert stop_left_array(ours.run, "/dev/md0", array.uuid)
    assert ["mdadm", "--stop", "/dev/md0"] in ours.calls
    other = Recorder("MD_UUID=00000000:00000000:00000000:00000001\n")
    assert not stop_left_array(other.run, "/dev/md0", array.uuid)
    assert not any(c[:2] == ["mdadm", "--stop"] for c in other.calls)


def test_a_killed_runs_volume_group_is_deactivated_only_when_its_own_devices_show_its_uuid():
    from rescue.steps.lvm import deactivate_left_group

    class Vgs(Recorder):
        def __init__(self, uuid):
            super().__init__(None)
            self.uuid = uuid

        def run(self, argv, check=True, **kw):
            self.calls.append(list(argv))
            out = f"  {self.uuid}\n" if argv[0] == "vgs" else ""
            return Result(tuple(argv), 0, out, "")

    ours = Vgs("dJBO1d-vmgR-4tdS-3rHa-BHso-M96t-03cyvO")
    assert deactivate_left_group(ours.run, "vgtest", "dJBO1d-vmgR-4tdS-3rHa-BHso-M96t-03cyvO", ["/dev/sdc2"])
    assert ours.calls[-1] == ["vgchange", "--devices=/dev/sdc2", "-an", "vgtest"]
    assert all(c[1] == "--devices=/dev/sdc2" for c in ours.calls)  # never a scan of every disk
    other = Vgs("something-else")
    assert not deactivate_left_group(other.run, "vgtest", "dJBO1d-vmgR-4tdS-3rHa-BHso-M96t-03cyvO", ["/dev/sdc2"])
    assert not any(c[0] == "vgchange" for c in other.calls)


def test_a_mirrored_machine_is_restored_from_the_disk_grub_was_on_without_naming_it():
    """Both disks of a RAID1 machine hold it whole: the wizard and the unattended restore, which
    name no captured disk, restore the grub disk's half and say so; a disk that holds only part
    of the machine is never chosen for the person."""
    lay = md_layout()
    plan = build_plan(lay, images(lay), target(16 * GIB, device="/dev/sdc"), PlanOptions())
    assert plan.source.device == "/dev/sda"
    (said,) = [w for w in plan.warnings if "had 2 disks" in w]
    assert "/dev/sda is restored onto /dev/sdc, /dev/sdb not" in said and "--source-disk" in said
    other = dataclasses.replace(lay, boot=dataclasses.replace(lay.boot, grub_disk="/dev/sdb"))
    assert build_plan(other, images(other), target(16 * GIB, device="/dev/sdc"), PlanOptions()).source.device == "/dev/sdb"
    # /srv on a plain partition of sdb: sdb holds everything, sda not
    srv = Filesystem("/dev/sdb4", "ext4", uuid="44444444-0000-4000-8000-000000000000", mountpoint="/srv", used=MIB)
    extra = Partition("/dev/sdb4", 2048 + 8 * GIB // 512, 2048, "83")
    table_b = dataclasses.replace(lay.disks[1].table, partitions=(*lay.disks[1].table.partitions, extra))
    one_sided = dataclasses.replace(lay, filesystems=(*lay.filesystems, srv),
                                    disks=(lay.disks[0], dataclasses.replace(lay.disks[1], table=table_b)))
    plan = build_plan(one_sided, images(one_sided), target(16 * GIB, device="/dev/sdc"), PlanOptions())
    assert plan.source.device == "/dev/sdb"
    # and /data on sda4 too: neither disk holds everything, the person must choose
    data = Filesystem("/dev/sda4", "ext4", uuid="55555555-0000-4000-8000-000000000000", mountpoint="/data", used=MIB)
    table_a = dataclasses.replace(lay.disks[0].table, partitions=(
        *lay.disks[0].table.partitions, dataclasses.replace(extra, node="/dev/sda4")))
    split = dataclasses.replace(one_sided, filesystems=(*one_sided.filesystems, data),
                                disks=(dataclasses.replace(lay.disks[0], table=table_a), one_sided.disks[1]))
    with pytest.raises(PlanRefused, match="had 2 disks"):
        build_plan(split, images(split), target(16 * GIB, device="/dev/sdc"), PlanOptions())


def test_a_refusal_names_the_mounts_each_disk_holds_through_its_arrays():
    lay = md_layout()
    data = Filesystem("/dev/sda4", "ext4", uuid="55555555-0000-4000-8000-000000000000", mountpoint="/data", used=MIB)
    srv = Filesystem("/dev/sdb4", "ext4", uuid="44444444-0000-4000-8000-000000000000", mountpoint="/srv", used=MIB)
    extra = Partition("/dev/sda4", 2048 + 8 * GIB // 512, 2048, "83")
    disks = tuple(dataclasses.replace(d, table=dataclasses.replace(d.table, partitions=(
        *d.table.partitions, dataclasses.replace(extra, node=f"{d.device}4")))) for d in lay.disks)
    split = dataclasses.replace(lay, filesystems=(*lay.filesystems, data, srv), disks=disks)
    with pytest.raises(PlanRefused) as e:
        build_plan(split, images(split), target(16 * GIB, device="/dev/sdc"), PlanOptions())
    assert "/dev/sda (8 GiB: / /boot /data)" in e.value.what and "/dev/sdb (8 GiB: / /boot /srv)" in e.value.what


def test_a_raid1_machine_onto_two_disks_makes_each_array_once_whole_and_boot_code_on_both():
    """--target /dev/sda=/dev/sdc --target /dev/sdb=/dev/sdd: each array from one member on each
    new disk (not degraded, made once), what lies on it made once, grub on both disks."""
    lay = md_layout()
    plan = build_plan(lay, images(lay), [target(16 * GIB, device="/dev/sdc"), target(16 * GIB, device="/dev/sdd")],
                      PlanOptions(disk_map=(("/dev/sda", "/dev/sdc"), ("/dev/sdb", "/dev/sdd"))))
    makes = [s for s in plan.steps if isinstance(s, MakeArray)]
    assert [(m.device, m.members) for m in makes] == [
        (f"/dev/md{i}", (f"/dev/sdc{i + 1}", f"/dev/sdd{i + 1}")) for i in range(3)]
    assert not any("degraded" in w for w in plan.warnings), plan.warnings
    assert sorted(f.device for f in plan.filesystems) == ["/dev/md0", "/dev/md1"]
    assert [s.device for s in plan.swaps] == ["/dev/md2"]
    kinds = [s.kind for s in plan.steps]
    assert kinds.count("partition") == 2 and kinds.index("md-create") > max(
        i for i, k in enumerate(kinds) if k == "partition")  # both tables before the first array
    (grub,) = [s for s in plan.steps if s.kind == "bootloader"]
    assert grub.disk == "/dev/sdc" and grub.also == ("/dev/sdd",)
    assert [a[-1] for a in grub.installs()] == ["/dev/sdc", "/dev/sdd"]
    text = plan.review()
    assert "md0: /boot ext2" in text and text.count("md1: / ext4") == 2  # each member shows its array
    assert plan.script().count("mdadm --create") == 3


def test_a_volume_group_on_two_plain_disks_is_made_once_from_both_targets():
    """A VG with one PV on each disk (no mirror): both PVs come back, each on its own target."""
    from rescue.layout.model import LvmLv, LvmPv, LvmVg
    from rescue.steps.lvm import MakeVolumeGroup

    def table(disk):
        return PartitionTable(label="dos", device=disk, partitions=(
            Partition(f"{disk}1", 2048, 4 * GIB // 512, "8e"),))

    vg = LvmVg(name="vgdata", uuid="Aa1Bb2-Cc3D-d4Ee-5Ff6-Gg7H-h8Ii-9Jj0Kk", extent_size=4 * MIB,
               pvs=(LvmPv("/dev/sda1", uuid="pv0aaa-aaaa-aaaa-aaaa-aaaa-aaaa-aaaaaa"),
                    LvmPv("/dev/sdb1", uuid="pv1bbb-bbbb-bbbb-bbbb-bbbb-bbbb-bbbbbb")),
               lvs=(LvmLv(name="root", uuid="lv0ccc-cccc-cccc-cccc-cccc-cccc-cccccc", size=6 * GIB,
                          segtype="linear", path="/dev/vgdata/root", dm_path="/dev/mapper/vgdata-root"),),
               config="vgdata {\n}\n")
    lay = dataclasses.replace(
        md_layout(),
        disks=(Disk("/dev/sda", 4 * GIB + 2 * MIB, table=table("/dev/sda")),
               Disk("/dev/sdb", 4 * GIB + 2 * MIB, table=table("/dev/sdb"))),
        filesystems=(Filesystem("/dev/mapper/vgdata-root", "ext4", uuid="22222222-0000-4000-8000-000000000000",
                                mountpoint="/", used=GIB, root=RootMeta("/", 0o755, 0, 0)),
                     Filesystem("/dev/sda1", "LVM2_member"), Filesystem("/dev/sdb1", "LVM2_member")),
        swaps=(), layers=BlockLayers(vgs=(vg,)))
    one = [target(8 * GIB, device="/dev/sdc")]
    with pytest.raises(PlanRefused, match="also lies on /dev/sdb1"):  # half a VG is never made
        build_plan(lay, images(lay), one, PlanOptions(source_disk="/dev/sda"))
    plan = build_plan(lay, images(lay), [*one, target(8 * GIB, device="/dev/sdd")],
                      PlanOptions(disk_map=(("/dev/sda", "/dev/sdc"), ("/dev/sdb", "/dev/sdd"))))
    (make,) = [s for s in plan.steps if isinstance(s, MakeVolumeGroup)]
    assert sorted(make.pvs) == [("/dev/sdc1", vg.pvs[0].uuid), ("/dev/sdd1", vg.pvs[1].uuid)]
    assert [f.device for f in plan.filesystems] == ["/dev/mapper/vgdata-root"]


def test_a_bigger_disk_under_arrays_says_where_its_room_is_and_each_note_is_said_once():
    lay = md_layout()
    plan = build_plan(lay, images(lay), [target(16 * GIB, device="/dev/sdc"), target(16 * GIB, device="/dev/sdd")],
                      PlanOptions(disk_map=(("/dev/sda", "/dev/sdc"), ("/dev/sdb", "/dev/sdd"))))
    room = [w for w in plan.warnings if "stay free at the end" in w]
    assert [w.split(":")[0] for w in room] == ["/dev/sdc", "/dev/sdd"] and "mdadm --grow" in room[0]
    assert len(plan.warnings) == len(set(plan.warnings))
    same = build_plan(lay, images(lay), target(8 * GIB + 2 * MIB, device="/dev/sdc"), PlanOptions(source_disk="/dev/sda"))
    assert not any("stay free" in w for w in same.warnings)  # a disk of the same size has no room to speak of


def test_a_resume_after_a_reboot_finds_inactive_arrays_and_lvs_by_their_partitions(tmp_path):
    """After a reboot the arrays are not assembled and the VGs not active, so /dev/md0 and
    /dev/mapper/VG-LV cannot be read: the resume check looks at the partitions under them
    (their md and PV UUIDs as blkid prints them) instead of starting over; a partition
    that no longer carries them is a different disk."""
    from rescue.engine.executor import disk_differences
    from rescue.engine.journal import Journal
    from rescue.steps.lvm import MakeVolumeGroup

    array = MakeArray(device="/dev/md1", uuid="3a5a5e2c:1b7d0f11:8e0c7b55:0d4e9a02", level="raid1",
                      members=("/dev/sdc2", "/dev/sdd2"))
    vg = MakeVolumeGroup(name="vg-main", uuid="Aa1Bb2-Cc3D-d4Ee-5Ff6-Gg7H-h8Ii-9Jj0Kk",
                         pvs=(("/dev/md1", "pv0aaa-aaaa-aaaa-aaaa-aaaa-aaaa-aaaaaa"),
                              ("/dev/sdc3", "pv1bbb-bbbb-bbbb-bbbb-bbbb-bbbb-bbbbbb")),
                         config="", lvs=("root",))
    steps = [array, vg]
    j = Journal(tmp_path / "j.json")
    for key, dev in (("mkfs:/dev/md1", "/dev/mapper/vg--main-root"), ("mkfs:/dev/md0", "/dev/md1")):
        j.start(key)
        j.record_check(key, dev, "UUID", "22222222-0000-4000-8000-000000000000")
        j.finish(key, 1.0)

    class S:
        def __init__(self, key):
            self.key = key

    disk = {"/dev/sdc2": {"TYPE": "linux_raid_member", "UUID": "3a5a5e2c-1b7d-0f11-8e0c-7b550d4e9a02"},
            "/dev/sdd2": {"TYPE": "linux_raid_member", "UUID": "3a5a5e2c-1b7d-0f11-8e0c-7b550d4e9a02"},
            "/dev/sdc3": {"TYPE": "LVM2_member", "UUID": "pv1bbb-bbbb-bbbb-bbbb-bbbb-bbbb-bbbbbb"}}
    keys = [*steps, S("mkfs:/dev/md1"), S("mkfs:/dev/md0")]
    assert disk_differences(j, keys, disk.get) == []
    disk["/dev/sdd2"] = {}  # a member replaced meanwhile
    diffs = disk_differences(j, keys, disk.get)  # the array, and the LV on it
    assert "/dev/md1 is not active and /dev/sdd2 no longer carry it" in diffs and len(diffs) == 2
    disk["/dev/sdd2"] = dict(disk["/dev/sdc2"])
    disk["/dev/sdc3"] = {"TYPE": "ext4", "UUID": "x"}
    (diff,) = disk_differences(j, keys, disk.get)
    assert diff.startswith("/dev/mapper/vg--main-root is not active and /dev/sdc3")


# --- the same machine under UEFI: an ESP on each disk, only the first one mounted (issue 17) ---

ESP_GUID = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"


def uefi_md_layout() -> Layout:
    """md_layout under UEFI, as Debian admins set it up: each disk starts with an ESP; the first
    is /boot/efi, the second a copy a hook keeps in sync, not mounted; the arrays follow."""
    lay = md_layout()

    def table(disk: str) -> PartitionTable:
        esp = Partition(f"{disk}1", 2048, 256 * MIB // 512, ESP_GUID)
        raid = "A19D880F-05FC-4D3B-A006-743F0F84911E"
        shifted = tuple(dataclasses.replace(p, node=f"{disk}{p.number + 1}", start=p.start + 256 * MIB // 512,
                                            type=raid) for p in _md_table(disk).partitions)
        return PartitionTable(label="gpt", device=disk, partitions=(esp, *shifted))

    arrays = tuple(dataclasses.replace(a, members=tuple(
        dataclasses.replace(m, device=m.device[:-1] + str(int(m.device[-1]) + 1)) for m in a.members))
        for a in lay.layers.md)
    esps = (Filesystem("/dev/sda1", "vfat", uuid="ABCD-0001", label="ESP", mountpoint="/boot/efi", used=MIB),
            Filesystem("/dev/sdb1", "vfat", uuid="ABCD-0002", label="ESP2"))
    members = tuple(Filesystem(f"/dev/sd{d}{n}", "linux_raid_member") for d in "ab" for n in (2, 3, 4))
    return dataclasses.replace(
        lay, disks=tuple(dataclasses.replace(d, size=d.size + 256 * MIB, table=table(d.device)) for d in lay.disks),
        filesystems=(*(f for f in lay.filesystems if f.fstype != "linux_raid_member"), *esps, *members),
        boot=Boot(mode=BootMode.UEFI, esp="/boot/efi", grub_disk=None), layers=BlockLayers(md=arrays))


def test_a_uefi_raid1_machine_onto_two_disks_gets_the_esp_copied_onto_the_second_disks_esp():
    """Grub goes into the mounted ESP; the second disk's ESP (made again with its UUID and label)
    gets a copy of it, so the second disk boots alone once the first dies."""
    lay = uefi_md_layout()
    plan = build_plan(lay, images(lay), [target(16 * GIB, device="/dev/sdc"), target(16 * GIB, device="/dev/sdd")],
                      PlanOptions(disk_map=(("/dev/sda", "/dev/sdc"), ("/dev/sdb", "/dev/sdd"))))
    made = {f.device: f for f in plan.filesystems}
    assert made["/dev/sdc1"].mountpoint == "/boot/efi" and made["/dev/sdc1"].esp
    assert (made["/dev/sdd1"].uuid, made["/dev/sdd1"].label, made["/dev/sdd1"].esp) == ("ABCD-0002", "ESP2", True)
    (grub,) = [s for s in plan.steps if s.kind == "bootloader"]
    assert (grub.disk, grub.esp, grub.also, grub.esp_copies) == ("/dev/sdc", "/boot/efi", (), ("/dev/sdd1",))
    assert grub.installs() == [["grub-install", "--target=x86_64-efi", "--efi-directory=/boot/efi", "--removable"]]
    assert "its ESP copied to /dev/sdd1" in grub.describe()
    kinds = [s.kind for s in plan.steps]
    assert kinds.index("bootloader") > max(i for i, k in enumerate(kinds) if k == "mkfs")
    assert not any("/dev/sdb1 (vfat) was not mounted when captured: it is made empty" in w for w in plan.warnings)
    assert any("given a copy of /boot/efi" in w and "either disk boots alone" in w for w in plan.warnings)
    script = plan.script()
    copy = script[script.index("unshare --mount"):]
    lines = copy.splitlines()
    mount = next(i for i, line in enumerate(lines) if line.strip().startswith("mount -t vfat /dev/sdd1"))
    assert lines[mount].strip() == 'mount -t vfat /dev/sdd1 "$WORK"/esp-sdd1'
    assert "lsblk -dno MAJ:MIN /dev/sdd1" in lines[mount + 1]  # proved to be that partition before a byte is copied
    assert lines[mount + 2].strip() == 'cp -R --preserve=timestamps "$ROOT"/boot/efi/. "$WORK"/esp-sdd1/'
    assert lines[mount + 4].strip() == 'umount "$WORK"/esp-sdd1'
    again = Plan.from_json(json.loads(plan.dumps()))
    assert next(s for s in again.steps if s.kind == "bootloader").esp_copies == ("/dev/sdd1",)


def test_a_uefi_raid1_machine_onto_one_disk_installs_into_its_own_esp_only():
    lay = uefi_md_layout()
    plan = build_plan(lay, images(lay), target(16 * GIB, device="/dev/sdc"), PlanOptions())
    (grub,) = [s for s in plan.steps if s.kind == "bootloader"]
    assert (grub.disk, grub.esp_copies) == ("/dev/sdc", ())
    assert [f.device for f in plan.filesystems if f.fstype == "vfat"] == ["/dev/sdc1"]
    assert "cp -R" not in plan.script()


def test_the_second_esp_of_a_machine_without_mirrored_boot_disks_is_only_made_again():
    """No mirror under /boot: an unmounted ESP on the other disk is made empty, as any unmounted filesystem."""
    def table(disk: str, kind: str) -> PartitionTable:
        return PartitionTable(label="gpt", device=disk, partitions=(
            Partition(f"{disk}1", 2048, 256 * MIB // 512, ESP_GUID),
            Partition(f"{disk}2", 2048 + 256 * MIB // 512, 4 * GIB // 512, kind)))

    linux = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
    lay = Layout(
        client="server", captured_at="2026-12-05T03:00:00Z", hostname="server",
        disks=(Disk("/dev/sda", 5 * GIB, table=table("/dev/sda", linux)),
               Disk("/dev/sdb", 5 * GIB, table=table("/dev/sdb", linux))),
        filesystems=(
            Filesystem("/dev/sda1", "vfat", uuid="ABCD-0001", label="ESP", mountpoint="/boot/efi", used=MIB),
            Filesystem("/dev/sda2", "ext4", uuid="22222222-0000-4000-8000-000000000000", mountpoint="/",
                       used=GIB, root=RootMeta("/", 0o755, 0, 0)),
            Filesystem("/dev/sdb1", "vfat", uuid="ABCD-0002", label="ESP2"),
            Filesystem("/dev/sdb2", "ext4", uuid="44444444-0000-4000-8000-000000000000", mountpoint="/srv",
                       used=GIB, root=RootMeta("/srv", 0o755, 0, 0))),
        boot=Boot(mode=BootMode.UEFI, esp="/boot/efi", grub_disk="/dev/sda"))
    plan = build_plan(lay, images(lay), [target(8 * GIB, device="/dev/sdc"), target(8 * GIB, device="/dev/sdd")],
                      PlanOptions(disk_map=(("/dev/sda", "/dev/sdc"), ("/dev/sdb", "/dev/sdd"))))
    (grub,) = [s for s in plan.steps if s.kind == "bootloader"]
    assert (grub.disk, grub.esp_copies) == ("/dev/sdc", ())
    assert "/dev/sdb1 (vfat) was not mounted when captured: it is made empty on /dev/sdd1 and not restored" in plan.warnings


def test_the_esp_copy_is_mounted_proved_filled_and_let_go(tmp_path, monkeypatch):
    """The bootloader step's copy onto the second ESP: mounted in the private work folder,
    proved to be that partition before anything is copied, unmounted even when it fails."""
    import rescue.engine.mounts as mounts
    from rescue.errors import StepFailed
    from rescue.steps.bootloader import InstallBootloader

    root, work = tmp_path / "root", tmp_path / "work"
    (root / "boot" / "efi").mkdir(parents=True)
    step = InstallBootloader("/dev/sdc", BootMode.UEFI, esp="/boot/efi", esp_copies=("/dev/sdd1",))

    class Ctx:
        def __init__(self, fill: bool) -> None:
            self.root, self.work, self.calls, self.notes, self.fill = root, work, [], [], fill

        def run(self, argv, check=True, **kw):
            self.calls.append([str(a) for a in argv])
            if argv[0] == "cp" and self.fill:
                (work / "esp-sdd1" / "EFI" / "BOOT").mkdir(parents=True, exist_ok=True)
                (work / "esp-sdd1" / "EFI" / "BOOT" / "BOOTX64.EFI").write_bytes(b"MZ")
            return Result(tuple(argv), 0, "", "")

        def note(self, line):
            self.notes.append(line)

    monkeypatch.setattr(mounts, "prove_mounted", lambda run, where, dev, fstype: None)
    ctx = Ctx(fill=True)
    step._copy_esp(ctx, "/dev/sdd1")
    where = str(work / "esp-sdd1")
    assert ctx.calls == [["mount", "-t", "vfat", "/dev/sdd1", where],
                         ["cp", "-R", "--preserve=timestamps", f"{root}/boot/efi/.", f"{where}/"],
                         ["umount", where]]
    assert "copied to /dev/sdd1" in ctx.notes[0]
    empty = Ctx(fill=False)
    (work / "esp-sdd1" / "EFI" / "BOOT" / "BOOTX64.EFI").unlink()
    with pytest.raises(StepFailed, match="no EFI/BOOT/BOOTX64.EFI"):
        step._copy_esp(empty, "/dev/sdd1")
    assert empty.calls[-1] == ["umount", where]
    monkeypatch.setattr(mounts, "prove_mounted", lambda run, where, dev, fstype: "it shows 8:17")
    wrong = Ctx(fill=True)
    with pytest.raises(StepFailed, match="did not mount as itself"):
        step._copy_esp(wrong, "/dev/sdd1")
    assert [c[0] for c in wrong.calls] == ["mount", "umount"]  # nothing copied onto the wrong disk
