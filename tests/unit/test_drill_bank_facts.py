"""The bank drill's reading of a captured layout: which disk to rebuild, what to expect."""

from __future__ import annotations

import pytest

from rescue.drill.bank import _facts, _root_disk
from rescue.errors import BackupError
from rescue.layout.model import Disk, Filesystem, Layout, Swap
from rescue.qemu import Firmware

GiB = 1 << 30


def _layout(disks: tuple[Disk, ...], root_dev: str = "/dev/sda2") -> Layout:
    return Layout(
        client="web1", captured_at="2026-11-26T03:00:00Z", hostname="web1",
        disks=disks,
        filesystems=(
            Filesystem(root_dev, "ext4", uuid="u-root", mountpoint="/"),
            Filesystem("/dev/sda3", "xfs", uuid="u-home", mountpoint="/home"),
            Filesystem("/dev/sda4", "swap", uuid="u-swap"),
            Filesystem("/dev/sda5", "ext4", uuid=None, mountpoint="/scratch"),
        ),
        swaps=(Swap("/dev/sda4", 1 << 30, uuid="u-swap"),),
    )


def test_the_disk_holding_root_is_the_one_rebuilt() -> None:
    layout = _layout((Disk("/dev/sdb", 4 * GiB), Disk("/dev/sda", 20 * GiB)))
    assert _root_disk(layout) == ("/dev/sda", 20 * GiB)


def test_nvme_partition_names_find_their_disk() -> None:
    layout = _layout((Disk("/dev/nvme0n1", 8 * GiB),), root_dev="/dev/nvme0n1p2")
    assert _root_disk(layout) == ("/dev/nvme0n1", 8 * GiB)


def test_without_a_root_filesystem_two_disks_are_ambiguous() -> None:
    layout = _layout((Disk("/dev/sdb", 4 * GiB), Disk("/dev/sdc", 20 * GiB)), root_dev="/dev/sda2")
    with pytest.raises(BackupError, match="which disk holds /"):
        _root_disk(layout)


def test_expected_facts_come_from_the_capture_and_skip_what_has_no_uuid() -> None:
    facts = _facts(_layout((Disk("/dev/sda", 20 * GiB),)), Firmware.UEFI)
    assert facts.hostname == "web1" and facts.firmware == "uefi"
    assert [(f.mountpoint, f.uuid) for f in facts.filesystems] == [("/", "u-root"), ("/home", "u-home")]
    assert facts.swap_uuid == "u-swap"
    assert facts.data_sum == ""
