"""Target facts on real loop disks: blank, partitioned, mounted, a partition,
the disk holding a bank (directly and through a loop image on it), swap.

Every disk here is a loop device over an image file in the test's tmp dir;
every mount, swap and loop is released in a finally, even on failure.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rescue.devices import attached, loop_disk, make_image_file, partition_path, rescan
from rescue.errors import UnsafeTarget
from rescue.probe import disks_under, list_disks, probe_disk
from rescue.run import run, spawn
from rescue.safety import assert_still_safe, check_target

MiB = 1024 * 1024


@contextlib.contextmanager
def mounted(device: str, where: Path) -> Iterator[Path]:
    where.mkdir(parents=True, exist_ok=True)
    run(["mount", device, str(where)])
    try:
        yield where
    finally:
        run(["umount", str(where)])


def partitioned(dev: str) -> None:
    run(["sfdisk", "-q", dev], input="label: gpt\n,40M\n,\n")
    run(["partprobe", dev])
    from rescue.devices import rescan
    rescan(dev)
    run(["mkfs.ext4", "-q", "-L", "probedata", partition_path(dev, 1)])
    run(["mkswap", "-L", "probeswap", partition_path(dev, 2)])


def test_blank_disk(tmp_path):
    with loop_disk(tmp_path / "blank.img", 64 * MiB) as dev:
        d = probe_disk(dev)
        assert d.device == dev and d.size == 64 * MiB and d.sector_size == 512
        assert d.whole_disk and not d.read_only
        assert d.pttype is None and d.partitions == () and d.signatures == ()
        assert d.empty and d.unsafe_reasons == ()
        assert d.backing_file == str(tmp_path / "blank.img")
        assert not (d.holds_root or d.holds_backup or d.swap_active or d.mounted)
        check_target(d)
        assert dev in [x.device for x in list_disks()]


def test_partitioned_disk_with_ext4_and_swap(tmp_path):
    with loop_disk(tmp_path / "used.img", 64 * MiB) as dev:
        partitioned(dev)
        d = probe_disk(dev)
        assert d.pttype == "gpt"
        assert any(s.startswith("gpt at ") for s in d.signatures)
        assert not d.empty
        p1, p2 = d.partitions
        uuid = run(["blkid", "-p", "-s", "UUID", "-o", "value", partition_path(dev, 1)]).stdout.strip()
        assert (p1.device, p1.size, p1.fstype, p1.label, p1.uuid) == (
            partition_path(dev, 1), 40 * MiB, "ext4", "probedata", uuid)
        assert (p2.fstype, p2.label) == ("swap", "probeswap")
        check_target(d)  # used but idle: safe, and the review will show what is destroyed


def test_mounted_disk_is_unsafe_and_rechecked(tmp_path):
    with loop_disk(tmp_path / "m.img", 64 * MiB) as dev:
        partitioned(dev)
        assert_still_safe(dev)
        where = tmp_path / "mnt"
        with mounted(partition_path(dev, 1), where):
            d = probe_disk(dev)
            assert d.mounted == (str(where),)
            assert d.partitions[0].mountpoints == (str(where),)
            with pytest.raises(UnsafeTarget, match=f"has mounted filesystems: {where}") as e:
                check_target(d)
            assert "umount" in e.value.fix
            with pytest.raises(UnsafeTarget):
                assert_still_safe(dev)  # the engine's last look before writing
        assert probe_disk(dev).mounted == ()


def test_active_swap_is_unsafe(tmp_path):
    with loop_disk(tmp_path / "s.img", 64 * MiB) as dev:
        partitioned(dev)
        run(["swapon", partition_path(dev, 2)])
        try:
            d = probe_disk(dev)
            assert d.swap_active
            with pytest.raises(UnsafeTarget, match="has active swap"):
                check_target(d)
        finally:
            run(["swapoff", partition_path(dev, 2)])
        assert not probe_disk(dev).swap_active


def test_a_partition_is_not_a_whole_disk(tmp_path):
    with loop_disk(tmp_path / "p.img", 64 * MiB) as dev:
        partitioned(dev)
        d = probe_disk(partition_path(dev, 1))
        assert not d.whole_disk and d.size == 40 * MiB
        with pytest.raises(UnsafeTarget, match="is a partition, not a whole disk") as e:
            check_target(d)
        assert "give the disk itself" in e.value.fix


def test_disk_holding_the_bank(tmp_path):
    """The bank directly on the disk, and on a loop image stored on the disk."""
    with loop_disk(tmp_path / "backup.img", 96 * MiB) as dev:
        run(["sfdisk", "-q", dev], input="label: dos\n,\n")
        from rescue.devices import rescan
        rescan(dev)
        run(["mkfs.ext4", "-q", partition_path(dev, 1)])
        with mounted(partition_path(dev, 1), tmp_path / "backup") as mnt:
            bank = mnt / "dirvish"
            bank.mkdir()
            assert disks_under(bank) >= {Path(dev).name}
            d = probe_disk(dev, backup_sources=[bank])
            assert d.holds_backup and d.mounted == (str(mnt),)
            with pytest.raises(UnsafeTarget, match="holds the backup being restored"):
                check_target(d)
            assert not probe_disk(dev).holds_backup  # only when it is the source

            inner_img = make_image_file(mnt / "inner.img", 32 * MiB)
            with attached(inner_img) as inner:
                run(["mkfs.ext4", "-q", inner])
                with mounted(inner, tmp_path / "inner") as inner_mnt:
                    inner_bank = inner_mnt / "bank"
                    inner_bank.mkdir()
                    # the bank lives in a loop whose backing file lives on dev: dev holds it too
                    assert probe_disk(dev, backup_sources=[inner_bank]).holds_backup
                    assert probe_disk(inner, backup_sources=[inner_bank]).holds_backup


def test_the_running_root(tmp_path):
    roots = disks_under(Path("/"))
    assert roots, "the disk under / could not be found through /sys (needed for holds_root)"
    d = probe_disk(f"/dev/{sorted(roots)[0]}")  # read-only probing: nothing is written
    assert d.holds_root and "/" in d.mounted
    with pytest.raises(UnsafeTarget, match="holds the running system"):
        check_target(d)
    with loop_disk(tmp_path / "other.img", 16 * MiB) as dev:
        assert not probe_disk(dev).holds_root


def test_a_mount_in_another_namespace_is_seen_as_claimed(tmp_path):
    """mountinfo shows only our namespace; an exclusive open sees every mount of the device."""
    from rescue.devices import is_claimed, loop_disk, wait_released

    with loop_disk(tmp_path / "d.img", 64 << 20) as dev:
        run(["sfdisk", "-q", dev], input="type=83\n")
        rescan(dev)
        part = partition_path(dev, 1)
        run(["mkfs.ext4", "-q", part])
        assert not is_claimed(part)
        where = tmp_path / "m"
        where.mkdir()
        # a private namespace that mounts the partition and keeps it for two seconds
        holder = spawn(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                        f"mount {part} {where} && sleep 2"])
        try:
            deadline = time.monotonic() + 10
            while not is_claimed(part) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert is_claimed(part)
            assert not os.path.ismount(where)  # invisible from here
            assert wait_released(dev, timeout=20) == []
        finally:
            holder.wait()
