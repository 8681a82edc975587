"""Every table the restore writes is read back by libparted, independently of sfdisk, on a loop disk.

The host kernel here has no msdos/efi partition parsers; libparted parses the
disk itself, so its reading does not depend on the kernel's.
"""

from __future__ import annotations

import dataclasses

import pytest

from rescue import libparted
from rescue.devices import loop_disk
from rescue.errors import StepFailed
from rescue.layout.model import Partition, PartitionTable
from rescue.steps import partition

MiB = 1 << 20
LINUX = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"

GPT = PartitionTable(label="gpt", partitions=(
    Partition("/dev/x1", 2048, 8192, LINUX, name="root"),
    Partition("/dev/x2", 10240, 16384, LINUX, name="home"),
))
DOS = PartitionTable(label="dos", partitions=(
    Partition("/dev/x1", 2048, 8192, "83", bootable=True),
    Partition("/dev/x2", 10240, 40960, "5"),
    Partition("/dev/x5", 12288, 8192, "82"),
))


def test_libparted_reads_each_written_table_as_planned(tmp_path):
    with loop_disk(tmp_path / "d.img", 64 * MiB) as dev:
        g = libparted.read_geometry(dev)
        assert (g.logical_sector, g.sectors, g.last_usable) == (512, 64 * MiB // 512, 64 * MiB // 512 - 34)
        for table in (GPT, DOS, GPT):
            partition.write_table(dev, table)  # raises when libparted reads something else
            assert libparted.differences(table, libparted.read_table(dev)) == []


def test_a_table_libparted_reads_differently_fails_the_write(tmp_path, monkeypatch):
    """The check can fail: a table changed behind sfdisk's back is named, partition by partition."""
    with loop_disk(tmp_path / "d.img", 64 * MiB) as dev:
        partition.write_table(dev, GPT)
        shrunk = dataclasses.replace(GPT, partitions=(GPT.partitions[0],
                                                      dataclasses.replace(GPT.partitions[1], size=8192)))
        real = partition.render_sfdisk
        monkeypatch.setattr(partition, "render_sfdisk", lambda t, d: real(shrunk, d))
        with pytest.raises(StepFailed) as e:
            partition.write_table(dev, GPT)
        assert "libparted: partition 2 size 8192 instead of 16384" in e.value.why
