"""Every refusal names what is wrong and what to do, and comes before anything else."""

from __future__ import annotations

import dataclasses

import pytest
from plan_fixtures import GIB, MIB, image, images, layout, table, target

from rescue.backups.model import ImageStatus
from rescue.errors import Exit, PlanRefused, UnsafeTarget
from rescue.layout.model import Disk, Filesystem, PartitionTable
from rescue.plan import PlanOptions, build_plan
from rescue.plan.migrate import MARGIN_BYTES, needed_bytes


def refusal(lay, imgs, tgt, **opts) -> PlanRefused:
    with pytest.raises(PlanRefused) as e:
        build_plan(lay, imgs, tgt, PlanOptions(**opts))
    assert e.value.fix, "every refusal says what to do"
    assert e.value.why
    return e.value


def test_unsafe_target_lists_every_reason_before_anything_else():
    unsafe = target(20 * GIB, holds_backup=True, holds_root=True, mounted=("/mnt/x", "/srv"),
                    swap_active=True, read_only=True, whole_disk=False)
    # even with no layout and a failed image, safety comes first
    e = refusal(None, (image("root", "/", ImageStatus.FAILED),), unsafe)
    assert isinstance(e, UnsafeTarget) and e.exit_code == Exit.UNSAFE
    text = str(e)
    for words in ("holds the backup", "running system", "/mnt/x, /srv", "active swap", "read-only",
                  "not a whole disk"):
        assert words in text
    assert "umount" in e.fix and "swapoff" in e.fix


def test_failed_and_incomplete_images_are_refused_by_name():
    lay = layout("dos")
    bad = (image("root", "/", ImageStatus.FAILED, name="2026-1125-0300"),
           image("boot", "/boot", ImageStatus.INCOMPLETE, name="2026-1126-0300"))
    e = refusal(lay, bad, target(8 * GIB))
    assert e.exit_code == Exit.REFUSED
    assert "root/2026-1125-0300 (failed)" in e.what and "boot/2026-1126-0300 (incomplete)" in e.what
    assert "--image DATE" in e.fix


def test_no_images_refused():
    assert "no images" in refusal(layout("dos"), (), target(8 * GIB)).what


def test_no_captured_layout_points_at_the_hook():
    e = refusal(None, images(layout("dos")), target(8 * GIB))
    assert "no disk layout was captured" in e.what
    assert "rescue capture as the dirvish post-server hook" in e.fix
    assert "scripts/dirvish-master.conf.example" in e.fix


def test_layout_without_partition_table_refused():
    lay = layout("dos", disks=(Disk("/dev/sda", 8 * GIB),))
    assert "holds no partition table" in refusal(lay, images(layout("dos")), target(8 * GIB)).what


def test_two_disks_need_source_disk_and_it_then_plans_that_one():
    lay = layout("dos")
    second = Disk("/dev/sdb", 12 * GIB, table=table("gpt", "/dev/sdb"))
    lay = dataclasses.replace(
        lay, disks=lay.disks + (second,),
        filesystems=lay.filesystems + (Filesystem("/dev/sdb6", "xfs", uuid="u-home", mountpoint="/home", used=GIB),),
    )
    imgs = images(lay)
    e = refusal(lay, imgs, target(8 * GIB, device="/dev/sdc"))
    assert "/dev/sda" in e.what and "/dev/sdb" in e.what and "--target OLD=NEW" in e.fix
    plan = build_plan(lay, imgs, target(8 * GIB, device="/dev/sdc"), PlanOptions(source_disk="/dev/sda"))
    assert {c.mountpoint for c in plan.copies} == {"/"}
    assert any("vault home holds /home, which lived on another disk" in w for w in plan.warnings)
    e = refusal(lay, imgs, target(8 * GIB, device="/dev/sdc"), source_disk="/dev/sdz")
    assert "/dev/sdz is not a captured disk" in e.what


def test_sector_size_mismatch_refused():
    e = refusal(layout("gpt"), images(layout("gpt")), target(12 * GIB, sector_size=4096))
    assert "4096-byte sectors" in e.what and "512-byte sectors" in e.fix


@pytest.mark.parametrize("fstype", ["LVM2_member", "zfs_member", "crypto_LUKS", "ntfs", ""])
def test_filesystem_the_engine_cannot_make_is_refused_by_name(fstype):
    lay = layout("dos")
    fss = (dataclasses.replace(lay.filesystems[0], fstype=fstype),) + lay.filesystems[1:]
    e = refusal(dataclasses.replace(lay, filesystems=fss), images(lay), target(8 * GIB))
    assert "/dev/sda1" in e.what and (fstype or "unknown type") in e.what
    assert "ext4" in e.why and "swap" in e.why


def test_vault_matching_no_filesystem_is_refused_with_names():
    lay = layout("dos")
    imgs = images(lay) + (image("etc odd 'name'", "/etc"),)
    e = refusal(lay, imgs, target(8 * GIB))
    assert "etc odd 'name' (tree /etc)" in e.what
    assert "--skip-vault" in e.fix
    assert "/" in e.why


def test_two_vaults_for_one_mount_point_refused():
    lay = layout("dos")
    e = refusal(lay, images(lay) + (image("root2", "/"),), target(8 * GIB))
    assert "root" in e.what and "root2" in e.what and "both hold /" in e.what


def test_too_small_names_the_disks_whole_shortfall_and_each_partitions_need():
    lay = layout("gpt")
    # worked out by hand, in MiB: 1 before the first partition, BIOS boot 1 and ESP 256 kept,
    # / 3 GiB used + 10 % + 64, swap 64, /tmp 10 + 1 + 64, /home (xfs) 2 GiB used + 10 % + 64,
    # each rounded up to 1 MiB; then gpt's 33 sectors of backup entries and header
    assert needed_bytes(3 * GIB, "ext4") == 3 * GIB + 3 * GIB // 10 + 1 + MARGIN_BYTES
    mib = 1 + 1 + 256 + (3072 + 308 + 64) + 64 + (10 + 1 + 64) + (2048 + 205 + 64)
    assert mib == 6158
    e = refusal(lay, images(lay), target(5 * GIB))
    assert e.what == ("/dev/sdb is 1039 MiB short: the filesystems need 6 GiB in all, "
                      "the disk holds 5 GiB")
    for words in ("partition 3 / (ext4) 3.4 GiB", "partition 4 swap /dev/sda4 64 MiB",
                  "partition 5 /tmp (ext4) 75 MiB", "partition 6 /home (xfs) 2.3 GiB",
                  "partition 1 no filesystem 1 MiB", "partition 2 /boot/efi (vfat) 256 MiB"):
        assert words in e.why
    assert "1039 MiB bigger" in e.fix and "--size" in e.fix
    # the boundary is exact: one MiB short is refused as such, the needs themselves fit
    tail = 33 * 512
    assert refusal(lay, images(lay), target(mib * MIB)).what.startswith("/dev/sdb is 1 MiB short")
    plan = build_plan(lay, images(lay), target(mib * MIB + tail))
    assert plan.new_table.partitions[-1].end == mib * MIB // 512


def test_shrinking_a_filesystem_whose_used_bytes_are_unknown_is_refused():
    lay = layout("dos")
    fss = (dataclasses.replace(lay.filesystems[0], used=None),) + lay.filesystems[1:]
    e = refusal(dataclasses.replace(lay, filesystems=fss), images(lay), target(6 * GIB))
    assert "used bytes not captured" in e.why and "partition 1 / (ext4) 6 GiB" in e.why


def test_xfs_minimum_is_respected_even_without_a_size_change():
    lay = layout("old")
    fss = tuple(dataclasses.replace(f, fstype="xfs") if f.mountpoint == "/" else f for f in lay.filesystems)
    # partition 1 of the old table is 1.9 GiB: fine; squeeze a tiny xfs /boot instead
    lay = dataclasses.replace(lay, filesystems=fss)
    build_plan(lay, images(lay), target(4 * GIB))
    small = PartitionTable(label="dos", label_id="0x1", partitions=(
        dataclasses.replace(table("dos").partitions[0], size=200 * MIB // 512),
        dataclasses.replace(table("dos").partitions[1], start=2048 + 200 * MIB // 512),
    ))
    lay2 = layout("dos", disks=(Disk("/dev/sda", 8 * GIB, table=small),))
    fss2 = (dataclasses.replace(lay2.filesystems[0], fstype="xfs", used=MIB),) + lay2.filesystems[1:]
    plan = build_plan(dataclasses.replace(lay2, filesystems=fss2), images(lay2), target(8 * GIB),
                      PlanOptions(grow="2"))
    # the 200 MiB xfs /boot is made at the 300 MiB mkfs.xfs needs; the swap behind it moves
    assert plan.filesystems[0].size == 300 * MIB
    assert plan.new_table.partitions[1].start == 2048 + 300 * MIB // 512


def test_grow_naming_nothing_is_refused_with_the_choices():
    lay = layout("ext")
    e = refusal(lay, images(lay), target(12 * GIB), grow="/srv")
    assert "--grow /srv" in e.what and "/home" in e.why and "5" in e.why
    e = refusal(lay, images(lay), target(12 * GIB), grow="2")  # the extended partition
    assert "--grow 2" in e.what


def test_overlapping_captured_table_is_refused():
    lay = layout("dos")
    t = lay.disks[0].table
    bad = dataclasses.replace(t, partitions=(t.partitions[0], dataclasses.replace(t.partitions[1], start=4096)))
    lay = dataclasses.replace(lay, disks=(dataclasses.replace(lay.disks[0], table=bad),))
    assert "overlap" in refusal(lay, images(lay), target(8 * GIB)).what


def test_unknown_legacy_fstype_can_be_named_with_fstype():
    lay = layout("dos")
    legacy = dataclasses.replace(lay, source="legacy", filesystems=(
        dataclasses.replace(lay.filesystems[0], fstype="unknown", uuid=None),) + lay.filesystems[1:])
    e = refusal(legacy, images(lay), target(8 * GIB))
    assert "unknown" in e.what and "--fstype /=ext4" in e.fix
    plan = build_plan(legacy, images(lay), target(8 * GIB), PlanOptions(fstypes=(("/", "ext3"),)))
    assert plan.filesystems[0].fstype == "ext3"
    assert any("made ext3 instead of the captured unknown" in w for w in plan.warnings)
    assert any("gets a new one" in w for w in plan.warnings)  # no UUID in a legacy capture
    assert any("old df/sfdisk files" in w for w in plan.warnings)
    e = refusal(legacy, images(lay), target(8 * GIB), fstypes=(("/srv", "ext4"),))
    assert "--fstype names no captured filesystem of this disk: /srv" in e.what and "/" in e.why
    assert "cannot make zfs" in refusal(legacy, images(lay), target(8 * GIB), fstypes=(("/", "zfs"),)).what


def test_btrfs_subvolumes_only_seen_inside_a_tree_plan_as_before():
    """A btrfs mounted from its top level is one tree: no subvolume step is added
    (tests/unit/test_plan_btrfs.py covers the machines that mount subvolumes)."""
    from rescue.layout.model import BtrfsMount, BtrfsVolume, Subvolume

    lay = layout("gpt")
    imgs = images(lay)
    inside_only = BtrfsVolume("/dev/sda2", uuid="u-1", subvolumes=(Subvolume(256, "machines", 5, "s-1"),),
                              mounts=(BtrfsMount("/"),))
    plain = build_plan(lay, imgs, target(64 * GIB))
    assert build_plan(dataclasses.replace(lay, btrfs=(inside_only,)), imgs, target(64 * GIB)).steps == plain.steps
