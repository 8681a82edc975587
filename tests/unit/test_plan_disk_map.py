"""Which captured disk goes onto which target: automatic, by name, by-id, serial, and the refusals."""

from __future__ import annotations

import pytest

from rescue.errors import PlanRefused
from rescue.layout.model import BlockLayers, Disk, DiskIdentity, Layout, Partition, PartitionTable
from rescue.plan.disks import TargetSpec, map_disks

GIB = 1024**3


def disk(dev: str, serial: str | None = None, table: bool = True) -> Disk:
    t = PartitionTable(label="gpt", device=dev, partitions=(Partition(node=dev + "1", start=2048,
                                                                      size=1000, type="L"),)) if table else None
    return Disk(device=dev, size=10 * GIB, serial=serial, table=t)


def machine(*disks: Disk, identities: tuple[DiskIdentity, ...] = ()) -> Layout:
    return Layout(client="srv", captured_at="2026-12-01T00:00:00Z", disks=disks,
                  layers=BlockLayers(disks=identities) if identities else None)


def specs(*texts: str) -> list[TargetSpec]:
    return [TargetSpec.parse(t) for t in texts]


def mapped(m) -> dict[str, str]:
    return {p.old.device: p.new for p in m.pairs}


def test_one_captured_disk_and_one_target_map_themselves():
    m = map_disks(machine(disk("/dev/sda"), disk("/dev/sr0", table=False)), specs("/dev/loop7"))
    assert mapped(m) == {"/dev/sda": "/dev/loop7"}


def test_two_disks_map_by_captured_name_in_captured_order():
    m = map_disks(machine(disk("/dev/sda"), disk("/dev/sdb")), specs("/dev/sdb=/dev/loop2", "/dev/sda=/dev/loop1"))
    assert [(p.old.device, p.new) for p in m.pairs] == [("/dev/sda", "/dev/loop1"), ("/dev/sdb", "/dev/loop2")]


def test_a_disk_is_found_by_its_by_id_name_full_or_short_and_by_serial():
    ident = DiskIdentity(device="/dev/sdb", size=10 * GIB, serial="WD-123", wwn="0x5000c500a",
                         by_id=("/dev/disk/by-id/ata-WDC_WD-123",))
    layout = machine(disk("/dev/sda", serial="S-A"), disk("/dev/sdb"), identities=(ident,))
    for old in ("/dev/disk/by-id/ata-WDC_WD-123", "ata-WDC_WD-123", "WD-123", "0x5000c500a"):
        m = map_disks(layout, specs(f"{old}=/dev/loop2", "S-A=/dev/loop1"))
        assert mapped(m) == {"/dev/sda": "/dev/loop1", "/dev/sdb": "/dev/loop2"}


def test_two_disks_and_a_plain_target_are_ambiguous():
    with pytest.raises(PlanRefused) as e:
        map_disks(machine(disk("/dev/sda"), disk("/dev/sdb")), specs("/dev/loop1"))
    assert "2 disks" in e.value.what and "--target OLD=NEW" in e.value.fix


def test_a_plain_target_with_the_other_disk_skipped_is_unambiguous():
    m = map_disks(machine(disk("/dev/sda"), disk("/dev/sdb")), specs("/dev/loop1"), skip=("/dev/sdb",))
    assert mapped(m) == {"/dev/sda": "/dev/loop1"} and [d.device for d in m.skipped] == ["/dev/sdb"]


def test_an_unmapped_captured_disk_is_refused_unless_skipped():
    layout = machine(disk("/dev/sda"), disk("/dev/sdb"))
    with pytest.raises(PlanRefused) as e:
        map_disks(layout, specs("/dev/sda=/dev/loop1"))
    assert "/dev/sdb" in e.value.what and "--skip-disk" in e.value.fix
    assert mapped(map_disks(layout, specs("/dev/sda=/dev/loop1"), skip=("/dev/sdb",))) == {"/dev/sda": "/dev/loop1"}


def test_an_unknown_old_disk_is_refused_with_the_captured_ones():
    with pytest.raises(PlanRefused) as e:
        map_disks(machine(disk("/dev/sda"), disk("/dev/sdb")), specs("/dev/sdz=/dev/loop1", "/dev/sda=/dev/loop2"))
    assert "/dev/sdz is not a captured disk" in e.value.what and "/dev/sda" in e.value.why


@pytest.mark.parametrize("targets", [("/dev/sda=/dev/loop1", "/dev/sdb=/dev/loop1"),
                                     ("/dev/sda=/dev/loop1", "/dev/sda=/dev/loop2")])
def test_a_disk_named_twice_is_refused(targets):
    with pytest.raises(PlanRefused) as e:
        map_disks(machine(disk("/dev/sda"), disk("/dev/sdb")), specs(*targets))
    assert "named twice" in e.value.what


def test_a_plain_target_among_several_is_refused():
    with pytest.raises(PlanRefused) as e:
        map_disks(machine(disk("/dev/sda"), disk("/dev/sdb")), specs("/dev/sda=/dev/loop1", "/dev/loop2"))
    assert "does not say which captured disk" in e.value.what


def test_mapped_and_skipped_at_once_is_refused():
    with pytest.raises(PlanRefused):
        map_disks(machine(disk("/dev/sda"), disk("/dev/sdb")), specs("/dev/sda=/dev/loop1", "/dev/sdb=/dev/loop2"),
                  skip=("/dev/sdb",))


@pytest.mark.parametrize("text", ["", "=/dev/loop1", "/dev/sda="])
def test_a_target_naming_no_disk_is_refused(text):
    with pytest.raises(PlanRefused):
        TargetSpec.parse(text)


# -- the plan of a machine with two disks ------------------------------------------

def two_disk_machine():
    import dataclasses

    from plan_fixtures import images, layout, table

    from rescue.layout.model import Filesystem

    lay = layout("dos")
    second = Disk("/dev/sdb", 12 * GIB, table=table("gpt", "/dev/sdb"))
    lay = dataclasses.replace(
        lay, disks=lay.disks + (second,),
        filesystems=lay.filesystems + (Filesystem("/dev/sdb6", "xfs", uuid="u-home", mountpoint="/home", used=GIB),),
    )
    return lay, images(lay)


def test_two_disks_are_planned_onto_two_targets_as_one_machine():
    from plan_fixtures import target

    from rescue.plan import Plan, PlanOptions, build_plan
    from rescue.steps import InstallBootloader, Verify, WipeSignatures, WritePartitionTable

    lay, imgs = two_disk_machine()
    sdc, sdd = target(8 * GIB, device="/dev/sdc"), target(12 * GIB, device="/dev/sdd")
    plan = build_plan(lay, imgs, [sdd, sdc],
                      PlanOptions(disk_map=(("/dev/sdb", "/dev/sdd"), ("/dev/sda", "/dev/sdc"))))
    assert [(d.source.device, d.target.device) for d in plan.disks] == [("/dev/sda", "/dev/sdc"),
                                                                        ("/dev/sdb", "/dev/sdd")]
    assert plan.new_table.device == "/dev/sdc" and plan.more[0].new_table.device == "/dev/sdd"
    assert {c.mountpoint for c in plan.copies} == {"/", "/home"}
    assert not any("another disk" in w for w in plan.warnings)
    home = next(f for f in plan.filesystems if f.mountpoint == "/home")
    assert (home.device, home.fstype, home.uuid) == ("/dev/sdd6", "xfs", "u-home")
    written = [(type(s).__name__, s.disk) for s in plan.steps if isinstance(s, (WipeSignatures, WritePartitionTable))]
    assert written == [("WipeSignatures", "/dev/sdc"), ("WritePartitionTable", "/dev/sdc"),
                       ("WipeSignatures", "/dev/sdd"), ("WritePartitionTable", "/dev/sdd")]
    assert len({s.key for s in plan.steps}) == len(plan.steps)
    boot = [s for s in plan.steps if isinstance(s, InstallBootloader)]
    assert [b.disk for b in boot] == ["/dev/sdc"]  # the fixture's grub lived on /dev/sda
    assert next(s for s in plan.steps if isinstance(s, Verify)).disk == "/dev/sdc"
    again = Plan.from_json(plan.to_json())
    assert again == plan and again.targets == (sdc, sdd)
    review = plan.review()
    assert "WILL BE DESTROYED on /dev/sdc" in review and "WILL BE DESTROYED on /dev/sdd" in review
    assert "replaces  captured disk /dev/sdb" in review and "Partition table of /dev/sdd" in review
    script = plan.script()
    assert f"check_target /dev/sdc {8 * GIB} " in script and f"check_target /dev/sdd {12 * GIB} " in script
    assert "EVERYTHING ON /dev/sdc AND /dev/sdd" in script
    assert plan.fingerprint != build_plan(lay, imgs, [sdc], PlanOptions(disk_map=(("/dev/sda", "/dev/sdc"),),
                                                                       skip_disks=("/dev/sdb",))).fingerprint


def test_a_skipped_disk_leaves_its_vaults_out_with_a_warning():
    from plan_fixtures import target

    from rescue.plan import PlanOptions, build_plan

    lay, imgs = two_disk_machine()
    plan = build_plan(lay, imgs, [target(8 * GIB, device="/dev/sdc")],
                      PlanOptions(disk_map=(("/dev/sda", "/dev/sdc"),), skip_disks=("/dev/sdb",)))
    assert {c.mountpoint for c in plan.copies} == {"/"} and not plan.more
    assert any("vault home holds /home, which lived on another disk" in w for w in plan.warnings)


def test_every_target_is_checked_for_safety():
    import dataclasses

    from plan_fixtures import target

    from rescue.errors import UnsafeTarget
    from rescue.plan import PlanOptions, build_plan

    lay, imgs = two_disk_machine()
    busy = dataclasses.replace(target(12 * GIB, device="/dev/sdd"), mounted=("/mnt",))
    with pytest.raises(UnsafeTarget) as e:
        build_plan(lay, imgs, [target(8 * GIB, device="/dev/sdc"), busy],
                   PlanOptions(disk_map=(("/dev/sda", "/dev/sdc"), ("/dev/sdb", "/dev/sdd"))))
    assert "/dev/sdd" in str(e.value)


def test_the_wizard_review_lists_every_disk_and_what_each_loses():
    from plan_fixtures import target

    from rescue.plan import PlanOptions, build_plan
    from rescue.tui.real import review_of
    from rescue.tui.screens.target import review_text

    lay, imgs = two_disk_machine()
    plan = build_plan(lay, imgs, [target(8 * GIB, device="/dev/sdc"), target(12 * GIB, device="/dev/sdd")],
                      PlanOptions(disk_map=(("/dev/sda", "/dev/sdc"), ("/dev/sdb", "/dev/sdd"))))
    text = review_text(review_of(plan))
    assert "captured /dev/sda (8 GiB) -> /dev/sdc (8 GiB)" in text
    assert "captured /dev/sdb (12 GiB) -> /dev/sdd (12 GiB)" in text
