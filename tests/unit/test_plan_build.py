"""Plans onto equal, bigger and smaller targets, from tables made by real sfdisk."""

from __future__ import annotations

import dataclasses
import json

import pytest
from plan_fixtures import GIB, MIB, SIZES, images, layout, table, target, used_target

from rescue.errors import PlanRefused
from rescue.layout.model import Boot, BootMode
from rescue.plan import Plan, PlanOptions, build_plan, vault_mountpoint
from rescue.plan.migrate import needed_bytes
from rescue.steps import (
    CopyTree, Fixups, InstallBootloader, MakeFilesystem, MakeSwap, MountFilesystem, UnmountAll, Verify,
    WipeSignatures, WritePartitionTable,
)


def plan_for(name: str, size: int, **opts) -> Plan:
    lay = layout(name)
    return build_plan(lay, images(lay), target(size), PlanOptions(**opts))


def sizes(plan: Plan) -> dict[int, int]:
    return {p.number: p.size for p in plan.new_table.partitions}


def starts(plan: Plan) -> dict[int, int]:
    return {p.number: p.start for p in plan.new_table.partitions}


@pytest.mark.parametrize("name", ["gpt", "dos", "ext"])
def test_equal_size_replays_the_table(name):
    plan = plan_for(name, SIZES[name])
    old = table(name)
    assert [(p.start, p.size) for p in plan.new_table.partitions] == [(p.start, p.size) for p in old.partitions]
    assert all(m.change == "stays" for m in plan.migrations)
    assert plan.new_table.label_id == old.label_id
    assert plan.new_table.device == "/dev/sdb"
    assert [p.node for p in plan.new_table.partitions] == [f"/dev/sdb{p.number}" for p in old.partitions]
    for a, b in zip(old.partitions, plan.new_table.partitions):
        assert (a.type, a.uuid, a.name, a.attrs, a.bootable) == (b.type, b.uuid, b.name, b.attrs, b.bootable)


def test_gpt_last_lba_is_recomputed_for_the_target():
    assert plan_for("gpt", 12 * GIB).new_table.last_lba == 25165790  # what sfdisk wrote for this disk
    assert plan_for("gpt", 20 * GIB).new_table.last_lba == 20 * GIB // 512 - 34
    assert plan_for("gpt", 20 * GIB).new_table.first_lba == 2048
    assert plan_for("dos", 16 * GIB).new_table.last_lba is None


def test_bigger_gpt_shares_what_the_disk_grew_among_the_restored_filesystems_by_captured_size():
    plan = plan_for("gpt", 20 * GIB)
    old = {p.number: p for p in table("gpt").partitions}
    grown = {n: sizes(plan)[n] - old[n].size for n in old}
    assert sum(grown.values()) == 8 * GIB // 512
    assert grown[1] == grown[2] == grown[4] == 0  # BIOS boot, ESP, swap
    restored = {3: old[3].size, 5: old[5].size, 6: old[6].size}  # /, /tmp, /home: each has a vault
    for n, captured in restored.items():
        assert grown[n] % 2048 == 0
        assert abs(grown[n] - 8 * GIB // 512 * captured / sum(restored.values())) <= 2048
    assert all(p.start % 2048 == 0 for p in plan.new_table.partitions)


def test_bigger_gpt_with_grow_gives_all_the_growth_to_that_partition():
    plan = plan_for("gpt", 20 * GIB, grow="/home")
    old = {p.number: p for p in table("gpt").partitions}
    assert sizes(plan)[6] == old[6].size + 8 * GIB // 512
    assert all(sizes(plan)[n] == old[n].size for n in (1, 2, 3, 4, 5))
    assert starts(plan) == {n: p.start for n, p in old.items()}
    home = next(m for m in plan.migrations if m.number == 6)
    assert (home.change, home.mountpoint, home.fstype) == ("grows", "/home", "xfs")


def test_bigger_dos_grows_root_not_the_swap_behind_it():
    plan = plan_for("dos", 16 * GIB)
    old = {p.number: p for p in table("dos").partitions}
    assert sizes(plan)[1] == old[1].size + 8 * GIB // 512
    assert sizes(plan)[2] == old[2].size
    assert starts(plan)[2] == old[2].start + 8 * GIB // 512
    assert [m.change for m in plan.migrations] == ["grows", "moves"]
    assert plan.new_table.partitions[0].bootable


def test_growing_the_last_logical_grows_the_extended_partition_too():
    plan = plan_for("ext", 18 * GIB, grow="/home")
    old = {p.number: p for p in table("ext").partitions}
    grow = 8 * GIB // 512
    assert sizes(plan)[7] == old[7].size + grow
    assert sizes(plan)[2] == old[2].size + grow
    assert starts(plan) == {n: p.start for n, p in old.items()}


def test_grow_a_chosen_logical_in_the_middle_moves_the_ones_after_it():
    plan = plan_for("ext", 14 * GIB, grow="/")
    old = {p.number: p for p in table("ext").partitions}
    grow = 4 * GIB // 512
    assert sizes(plan)[5] == old[5].size + grow
    assert sizes(plan)[2] == old[2].size + grow
    assert starts(plan)[6] == old[6].start + grow and starts(plan)[7] == old[7].start + grow
    assert sizes(plan)[7] == old[7].size
    assert plan_for("ext", 14 * GIB, grow="5").new_table == plan.new_table


def test_smaller_gpt_shrinks_home_when_its_data_fits():
    plan = plan_for("gpt", 10 * GIB)
    old = {p.number: p for p in table("gpt").partitions}
    assert sizes(plan)[6] < old[6].size
    assert sizes(plan)[6] * 512 >= needed_bytes(2 * GIB, "xfs")
    assert plan.new_table.partitions[-1].end <= plan.new_table.last_lba + 1
    assert next(m for m in plan.migrations if m.number == 6).change == "shrinks"


def test_smaller_extended_layout_shrinks_the_restored_filesystems_and_the_extended_partition():
    plan = plan_for("ext", 8 * GIB)
    assert plan.new_table.partitions[1].end >= plan.new_table.partitions[-1].end
    assert max(p.end for p in plan.new_table.partitions) <= 8 * GIB // 512
    # swap keeps its size (there is room); /boot, / and /home give up room in proportion
    assert {m.number: m.change for m in plan.migrations} == {
        1: "shrinks", 2: "shrinks", 5: "shrinks", 6: "moves", 7: "shrinks"}
    assert sizes(plan)[6] == table("ext").partitions[3].size


def test_smaller_extended_layout_with_grow_shrinks_only_that_one():
    plan = plan_for("ext", 8 * GIB, grow="/home")
    assert {m.number: m.change for m in plan.migrations} == {1: "stays", 2: "shrinks", 5: "stays", 6: "stays", 7: "shrinks"}


def test_unaligned_old_table_is_aligned_to_one_mib():
    plan = plan_for("old", 4 * GIB)
    assert all(p.start % 2048 == 0 for p in plan.new_table.partitions)
    assert starts(plan)[1] == 2048
    assert max(p.end for p in plan.new_table.partitions) <= 4 * GIB // 512
    assert next(m for m in plan.migrations if m.number == 3).change == "shrinks"  # the shift costs /home a little


def test_steps_come_in_restore_order():
    plan = plan_for("gpt", 20 * GIB)
    kinds = [type(s) for s in plan.steps]
    assert kinds == [
        WipeSignatures, WritePartitionTable, MakeFilesystem, MakeFilesystem, MakeFilesystem, MakeFilesystem,
        MakeSwap, MountFilesystem, MountFilesystem, MountFilesystem, MountFilesystem,
        CopyTree, CopyTree, CopyTree, Fixups, InstallBootloader, Verify, UnmountAll,
    ]
    assert plan.mount_order == ("/", "/home", "/tmp", "/boot/efi")
    mkfs = {s.device: s for s in plan.steps if isinstance(s, MakeFilesystem)}
    assert mkfs["/dev/sdb6"].uuid == "00000006-1111-4222-8333-000000000006"
    assert mkfs["/dev/sdb6"].label == "home" and mkfs["/dev/sdb6"].fstype == "xfs"
    assert mkfs["/dev/sdb2"].uuid == "ABCD-1234"
    swap = next(s for s in plan.steps if isinstance(s, MakeSwap))
    assert (swap.device, swap.uuid, swap.label) == ("/dev/sdb4", "00000004-1111-4222-8333-000000000004", "swap")
    boot = next(s for s in plan.steps if isinstance(s, InstallBootloader))
    assert (boot.disk, boot.mode, boot.esp) == ("/dev/sdb", BootMode.UEFI, "/boot/efi")
    copies = {c.mountpoint: c for c in plan.copies}
    assert copies["/home"].bytes == 2 * GIB and copies["/home"].vault == "home"
    assert str(copies["/home"].source) == "/srv/backup/bank/home/2026-1126-0300/tree"
    fix = next(s for s in plan.steps if isinstance(s, Fixups))
    assert any(r.mountpoint == "/tmp" and r.mode == 0o1777 for r in fix.roots)
    verify = next(s for s in plan.steps if isinstance(s, Verify))
    assert verify.check_boot and len(verify.copies) == 3


def test_mount_order_puts_parents_before_children():
    plan = plan_for("ext", 10 * GIB)
    order = plan.mount_order
    for i, mp in enumerate(order):
        for child in order[:i]:
            assert not child.startswith(mp.rstrip("/") + "/"), f"{child} mounted before its parent {mp}"


def test_vaults_of_a_capture_made_under_root_map_to_mount_points():
    lay = layout("gpt", root="/mnt/demo")
    plan = build_plan(lay, images(lay, root="/mnt/demo"), target(12 * GIB))
    assert {c.mountpoint for c in plan.copies} == {"/", "/home", "/tmp"}
    assert vault_mountpoint("/mnt/demo", "/mnt/demo") == "/"
    assert vault_mountpoint("/mnt/demo/home/", "/mnt/demo/") == "/home"
    assert vault_mountpoint("/mnt/other/home", "/mnt/demo") is None
    assert vault_mountpoint("/mnt/demox", "/mnt/demo") is None


def test_a_filesystem_without_vault_is_made_empty_with_a_warning_but_not_the_esp():
    lay = layout("gpt")
    imgs = tuple(i for i in images(lay) if i.vault != "tmp")
    plan = build_plan(lay, imgs, target(12 * GIB))
    assert any("no vault holds /tmp" in w for w in plan.warnings)
    assert not any("/boot/efi" in w for w in plan.warnings)
    assert "/tmp" in plan.mount_order and "/tmp" not in {c.mountpoint for c in plan.copies}


def test_no_grub_captured_means_no_bootloader_step_and_a_warning():
    lay = layout("dos", boot=Boot(mode=BootMode.BIOS, has_grub=False))
    plan = build_plan(lay, images(lay), target(8 * GIB))
    assert not any(isinstance(s, InstallBootloader) for s in plan.steps)
    assert any("no grub was captured" in w for w in plan.warnings)
    assert not next(s for s in plan.steps if isinstance(s, Verify)).check_boot
    asked = build_plan(lay, images(lay), target(8 * GIB), PlanOptions(bootloader=False))
    assert any("as asked" in w for w in asked.warnings)


def test_what_will_be_destroyed_comes_from_the_target_facts():
    lay = layout("dos")
    plan = build_plan(lay, images(lay), used_target(8 * GIB))
    assert plan.destroyed[0] == "the dos partition table of /dev/sdb"
    assert "/dev/sdb1: 5 GiB ntfs label DATA UUID 0123456789ABCDEF" in plan.destroyed
    assert build_plan(lay, images(lay), target(8 * GIB)).destroyed == ()


def test_skipped_vault_is_left_out_with_a_warning():
    lay = layout("dos")
    plan = build_plan(lay, images(lay), target(8 * GIB), PlanOptions(skip_vaults=("root",)))
    assert plan.copies == ()
    assert any("left out" in w for w in plan.warnings)


def test_plan_json_round_trips():
    plan = plan_for("ext", 18 * GIB)
    data = json.loads(plan.dumps())
    assert data["steps"][0]["kind"] == "wipe"
    assert data["steps"][1]["table"]["partitions"][1]["type"] == "5"
    assert Plan.from_json(data) == plan
    assert Plan.from_json(data).fingerprint == plan.fingerprint


def test_the_margin_is_ten_percent_plus_64_mib_and_the_fs_minimum():
    assert needed_bytes(1000 * MIB, "ext4") == 1000 * MIB + 100 * MIB + 64 * MIB
    assert needed_bytes(0, "xfs") == 300 * MIB
    assert needed_bytes(100 * MIB, "btrfs") == 174 * MIB


def test_copy_counts_come_from_the_image_log_when_it_has_them():
    lay = layout("dos")
    imgs = (dataclasses.replace(images(lay)[0], size=1234 * MIB, files=56789),)
    plan = build_plan(lay, imgs, target(8 * GIB))
    assert (plan.copies[0].bytes, plan.copies[0].files) == (1234 * MIB, 56789)
    assert "copy 1.2 GiB, 56,789 files from vault root" in " ".join(plan.review().split())
    # without df's used bytes, the image's count decides whether a shrink fits
    no_df = dataclasses.replace(lay, filesystems=(dataclasses.replace(lay.filesystems[0], used=None),) + lay.filesystems[1:])
    assert build_plan(no_df, imgs, target(4 * GIB)).filesystems[0].size < 6 * GIB
    small = (dataclasses.replace(imgs[0], size=3 * GIB),)
    with pytest.raises(PlanRefused, match="MiB short"):
        build_plan(no_df, small, target(3 * GIB))


def test_dos_table_on_a_disk_over_2_tib_stops_at_2_tib_with_a_warning():
    plan = plan_for("dos", 3 * 1024 * GIB)
    assert max(p.end for p in plan.new_table.partitions) <= 2**32
    assert any("only the first 2 TiB" in w for w in plan.warnings)


def test_4096_byte_sector_disks_align_to_1_mib_and_recompute_last_lba():
    lay = layout("gpt")
    t = lay.disks[0].table
    t4k = dataclasses.replace(t, sector_size=4096, first_lba=256, partitions=tuple(
        dataclasses.replace(p, start=p.start // 8, size=p.size // 8) for p in t.partitions))
    lay = dataclasses.replace(lay, disks=(dataclasses.replace(lay.disks[0], sector_size=4096, table=t4k),))
    plan = build_plan(lay, images(lay), target(20 * GIB, sector_size=4096), PlanOptions(grow="/home"))
    assert plan.new_table.last_lba == 20 * GIB // 4096 - 6  # 4 sectors of entries + header
    assert all(p.start % 256 == 0 for p in plan.new_table.partitions)
    home = plan.new_table.partitions[-1]
    assert home.size == t4k.partitions[-1].size + 8 * GIB // 4096


def test_an_image_with_vanished_files_is_planned_with_a_warning():
    from rescue.backups.model import ImageStatus

    lay = layout("dos")
    imgs = images(lay)
    warned = dataclasses.replace(imgs[0], status=ImageStatus.WARNING,
                                 status_text="warning (24) -- file vanished on sender")
    plan = build_plan(lay, (warned, *imgs[1:]), target(8 * GIB), PlanOptions())
    assert any("file vanished" in w and warned.vault in w for w in plan.warnings)
