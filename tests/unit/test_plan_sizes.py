"""Issue 15: a plan fits any disk the data fits. The issue's own machine (a dos table with
/boot, then /, swap, btrfs /home and a small /tmp that no vault holds, as logicals; dump made
by real sfdisk) onto bigger, smaller and too small disks, and --size."""

from __future__ import annotations

import argparse
import dataclasses

import pytest
from plan_fixtures import GIB, MIB, images, layout, table, target

from rescue.errors import PlanRefused
from rescue.plan import Plan, PlanOptions, build_plan
from rescue.plan.migrate import check_fits, needed_bytes

OLD = {p.number: p for p in table("issue15").partitions}
NEEDS_MIB = {1: 108, 5: 284, 6: 64, 7: 130, 8: 48}  # used + 10 % + 64 MiB; swap 64; /tmp keeps its 48
NEEDS_IN_ALL_MIB = 1 + NEEDS_MIB[1] + sum(1 + NEEDS_MIB[n] for n in (5, 6, 7, 8))  # alignment, EBRs


def issue15(size: int, **opts) -> Plan:
    lay = layout("issue15")
    imgs = images(lay, skip=("/tmp",))  # vaults boot, root and home; none holds /tmp
    return build_plan(lay, imgs, target(size), PlanOptions(**opts))


def new_sizes(plan: Plan) -> dict[int, int]:
    return {p.number: p.size * 512 for p in plan.new_table.partitions}


def test_the_needs_are_worked_out_by_hand():
    assert needed_bytes(40 * MIB, "ext4") == 108 * MIB
    assert needed_bytes(200 * MIB, "ext4") == 284 * MIB
    assert needed_bytes(60 * MIB, "btrfs") == 130 * MIB
    assert NEEDS_IN_ALL_MIB == 639


def test_bigger_disk_grows_the_restored_filesystems_not_tmp_or_swap():
    plan = issue15(GIB + 600 * MIB)
    check_fits(plan.new_table, (GIB + 600 * MIB) // 512)
    got = new_sizes(plan)
    grown = {n: got[n] - OLD[n].size * 512 for n in (1, 5, 6, 7, 8)}
    assert grown[8] == 0 and grown[6] == 0  # /tmp (no vault) and swap keep their size
    assert sum(grown.values()) == 600 * MIB  # all of what the disk grew, none of the free 15 MiB
    # in proportion to the captured sizes 128 : 400 : 300 MiB, in whole MiB
    assert (grown[1], grown[5], grown[7]) == (93 * MIB, 290 * MIB, 217 * MIB)
    review = " ".join(plan.review().split())
    assert "/home grows from 300 MiB to 517 MiB (its share of the new space, by captured size" in review
    assert "/tmp grows" not in review and "/tmp moves" in review


def test_bigger_disk_with_grow_gives_it_all_to_that_one():
    plan = issue15(GIB + 600 * MIB, grow="/")
    grown = {n: new_sizes(plan)[n] - OLD[n].size * 512 for n in (1, 5, 6, 7, 8)}
    assert grown == {1: 0, 5: 600 * MIB, 6: 0, 7: 0, 8: 0}


@pytest.mark.parametrize("size_mib", [850, 700, NEEDS_IN_ALL_MIB])
def test_smaller_disks_the_data_fits_get_a_valid_plan(size_mib):
    plan = issue15(size_mib * MIB)
    check_fits(plan.new_table, size_mib * MIB // 512)
    got = new_sizes(plan)
    for n, need in NEEDS_MIB.items():
        assert got[n] >= need * MIB, f"partition {n} gets less than it needs"
    assert got[8] == 48 * MIB  # /tmp: small already, it keeps its size
    ext = next(p for p in plan.new_table.partitions if p.number == 2)
    assert all(ext.start < p.start and p.end <= ext.end for p in plan.new_table.partitions if p.number >= 5)
    assert [(p.number, p.type, p.bootable) for p in plan.new_table.partitions] == \
        [(p.number, p.type, p.bootable) for p in table("issue15").partitions]
    assert plan.new_table.label_id == "0x15151515"
    if size_mib == 850:  # room enough: swap keeps its 128 MiB, the rest is shared
        assert got[6] == 128 * MIB
        assert sum(got.values()) - got[2] == 850 * MIB - 5 * MIB  # 1 MiB before p1, 4 EBRs
    if size_mib == NEEDS_IN_ALL_MIB:  # exactly the needs: every partition at its need
        assert {n: got[n] // MIB for n in NEEDS_MIB} == NEEDS_MIB


def test_grow_on_a_smaller_disk_keeps_the_others_when_it_can():
    plan = issue15(950 * MIB, grow="/")
    got = new_sizes(plan)
    assert (got[1], got[6], got[7], got[8]) == (128 * MIB, 128 * MIB, 300 * MIB, 48 * MIB)
    assert got[5] == 950 * MIB - 5 * MIB - (128 + 128 + 300 + 48) * MIB
    # 850 MiB cannot keep them all and still give / its 284 MiB: those later in the table give way
    got = new_sizes(issue15(850 * MIB, grow="/"))
    assert (got[1], got[5], got[6], got[7], got[8]) == (128 * MIB, 284 * MIB, 128 * MIB, 257 * MIB, 48 * MIB)


def test_too_small_disk_is_refused_with_the_true_total_shortfall():
    with pytest.raises(PlanRefused) as e:
        issue15(32 * MIB)
    assert e.value.what == "/dev/sdb is 607 MiB short: the filesystems need 639 MiB in all, the disk holds 32 MiB"
    for words in ("partition 1 /boot (ext4) 108 MiB", "partition 5 / (ext4) 284 MiB", "partition 6 swap /dev/sda6 64 MiB",
                  "partition 7 /home (btrfs) 130 MiB", "partition 8 /tmp (ext4), made empty 48 MiB"):
        assert words in e.value.why
    with pytest.raises(PlanRefused, match="is 1 MiB short"):
        issue15((NEEDS_IN_ALL_MIB - 1) * MIB)


def test_size_sets_a_partition_exactly_and_the_others_share_the_rest():
    plan = issue15(850 * MIB, sizes=(("/home", 200 * MIB), ("swap", 100 * MIB)))
    got = new_sizes(plan)
    assert got[7] == 200 * MIB and got[6] == 100 * MIB
    assert got[1] >= 108 * MIB and got[5] >= 284 * MIB
    big = issue15(4 * GIB, sizes=(("/home", 200 * MIB),))
    assert new_sizes(big)[7] == 200 * MIB and new_sizes(big)[5] > 400 * MIB
    assert "(as asked with --size)" in " ".join(big.review().split())


def test_size_below_the_need_is_refused_naming_the_need():
    with pytest.raises(PlanRefused) as e:
        issue15(850 * MIB, sizes=(("/home", 100 * MIB),))
    assert e.value.what == "--size /home=100 MiB is too small: /home (btrfs) needs 130 MiB"
    assert "at least 130 MiB" in e.value.fix


def test_size_that_does_not_fit_counts_in_the_shortfall():
    with pytest.raises(PlanRefused) as e:
        issue15(850 * MIB, sizes=(("/home", 400 * MIB),))
    assert e.value.what.startswith(f"/dev/sdb is {639 - 130 + 400 - 850} MiB short")


def test_size_and_grow_on_one_partition_or_naming_nothing_are_refused():
    with pytest.raises(PlanRefused, match="name the same partition"):
        issue15(GIB, grow="/home", sizes=(("/home", 200 * MIB),))
    with pytest.raises(PlanRefused, match="--size /srv names no partition") as e:
        issue15(GIB, sizes=(("/srv", 200 * MIB),))
    assert "/home" in e.value.why


def test_without_any_vault_the_filesystems_with_used_bytes_share_the_space():
    lay = layout("issue15")
    lay = dataclasses.replace(lay, filesystems=tuple(
        dataclasses.replace(f, used=0) if f.mountpoint == "/boot" else f for f in lay.filesystems))
    plan = build_plan(lay, images(lay), target(2 * GIB), PlanOptions(skip_vaults=("boot", "root", "home", "tmp")))
    grown = {n: new_sizes(plan)[n] - OLD[n].size * 512 for n in (1, 5, 6, 7, 8)}
    assert grown[1] == grown[6] == 0 and grown[5] > 0 and grown[7] > 0
    assert grown[8] > 0  # /tmp had 20 KiB in use: with no vault at all, df's count decides


def test_equal_disk_replays_the_captured_table_byte_for_byte():
    plan = issue15(GIB)
    assert [(p.number, p.start, p.size) for p in plan.new_table.partitions] == \
        [(p.number, p.start, p.size) for p in table("issue15").partitions]


def test_a_nearly_full_filesystem_keeps_its_size_and_the_table_replays():
    """/boot holds 120 of its 128 MiB: used + margin would be 196 MiB, but the data fitted in 128."""
    lay = layout("issue15")
    lay = dataclasses.replace(lay, filesystems=tuple(
        dataclasses.replace(f, used=120 * MIB) if f.mountpoint == "/boot" else f for f in lay.filesystems))
    plan = build_plan(lay, images(lay, skip=("/tmp",)), target(GIB))
    assert [(p.number, p.start, p.size) for p in plan.new_table.partitions] == \
        [(p.number, p.start, p.size) for p in table("issue15").partitions]
    small = build_plan(lay, images(lay, skip=("/tmp",)), target(700 * MIB))
    assert new_sizes(small)[1] == 128 * MIB  # it cannot shrink, the others give way


# -- the option in the CLI, rescue restore and the unattended config ------------------


def test_parse_sizes_takes_binary_units():
    from rescue.commands.plan import parse_sizes

    assert parse_sizes(["/home=200G", "swap=1.5G", "3=512M", "/x=10MiB", "/y=1t"]) == (
        ("/home", 200 * GIB), ("swap", 3 * GIB // 2), ("3", 512 * MIB), ("/x", 10 * MIB), ("/y", 1024 * GIB))


@pytest.mark.parametrize("bad", ["/home", "/home=200", "/home=abc", "=1G", "/home=0G"])
def test_rescue_plan_refuses_a_size_it_cannot_read(tmp_path, capsys, bad):
    from rescue.cli import main
    from rescue.errors import Exit

    code = main(["plan", "--bank", str(tmp_path), "--client", "demo", "--target", "/dev/null", "--size", bad])
    assert code == Exit.ERROR
    err = capsys.readouterr().err
    assert f"--size {bad!r} is not MOUNTPOINT=SIZE" in err and "--size /home=200G" in err


def test_rescue_restore_takes_size_like_grow():
    from rescue.commands import restore

    p = argparse.ArgumentParser()
    restore.add_arguments(p)
    args = p.parse_args(["--bank", "/b", "--client", "c", "--target", "/dev/sdb",
                         "--size", "/home=200G", "--size", "swap=1G", "--grow", "/"])
    assert args.size == ["/home=200G", "swap=1G"] and args.grow == "/"


def test_unattended_size_table_becomes_size_options(tmp_path):
    from rescue.unattended import ConfigError, load_config, restore_options

    base = 'bank = "/b"\nclient = "x"\n{}[target]\ndevice = "/dev/sdb"\n'
    path = tmp_path / "rescue-unattended.toml"
    path.write_text(base.format('[size]\n"/home" = "200G"\nswap = "1G"\n'))
    assert restore_options(load_config(path)).sizes == (("/home", 200 * GIB), ("swap", GIB))
    path.write_text(base.format('[size]\n"/home" = "lots"\n'))
    with pytest.raises(ConfigError, match=r"\[size\]"):
        load_config(path)
