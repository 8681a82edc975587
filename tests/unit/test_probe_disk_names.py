"""The disk lister: blkinfo's whole disks, loop devices from sysfs, the rest of sysfs only without lsblk."""

from __future__ import annotations

import sys
import types

import pytest

from rescue import probe


@pytest.fixture
def fake_sys(tmp_path, monkeypatch):
    """A /sys/block with a disk, an LVM volume, an md array, zram, and two loops (one attached)."""
    block = tmp_path / "block"
    for name, size in (("sda", "1000"), ("dm-0", "500"), ("md0", "800"), ("zram0", "100"), ("sdb", "0")):
        (block / name).mkdir(parents=True)
        (block / name / "size").write_text(size)
    (block / "loop0" / "loop").mkdir(parents=True)
    (block / "loop0" / "loop" / "backing_file").write_text("/tmp/disk.img\n")
    (block / "loop1").mkdir()
    monkeypatch.setattr(probe, "SYS", tmp_path)
    return block


def fake_blkinfo(monkeypatch, disks=None, error=None):
    class BlkDiskInfo:
        def __init__(self):
            if error:
                raise error

        def get_disks(self, filters):
            assert filters == {"type": "disk"}
            return [{"name": n} for n in disks]

    monkeypatch.setitem(sys.modules, "blkinfo", types.SimpleNamespace(BlkDiskInfo=BlkDiskInfo))


def test_blkinfo_lists_the_disks_and_sysfs_adds_attached_loops(fake_sys, monkeypatch):
    fake_blkinfo(monkeypatch, disks=["sda", "zram0"])
    assert probe.disk_names() == ["sda", "loop0"]  # no dm or md volume offered as a target disk


def test_without_lsblk_sysfs_lists_every_whole_device(fake_sys, monkeypatch):
    fake_blkinfo(monkeypatch, error=FileNotFoundError("lsblk"))
    assert probe.disk_names() == ["dm-0", "loop0", "md0", "sda"]
