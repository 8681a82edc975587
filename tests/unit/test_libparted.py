"""libparted reads the target's geometry and, independently of sfdisk, every table the restore writes.

Image files only: libparted parses a file as a disk, no root needed.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
from pathlib import Path

from rescue import libparted
from rescue.layout.model import Partition, PartitionTable
from rescue.layout.sfdisk import render_sfdisk
from rescue.steps.partition import SFDISK_WRITE

MIB = 1 << 20
LINUX = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
SWAP = "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F"
ENV = {**os.environ, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}

GPT = PartitionTable(label="gpt", partitions=(
    Partition("/dev/sda1", 2048, 4096, LINUX, name="root fs"),
    Partition("/dev/sda2", 6144, 8192, SWAP, name="swap"),
))
DOS = PartitionTable(label="dos", label_id="0x1234abcd", partitions=(
    Partition("/dev/sda1", 2048, 4096, "83", bootable=True),
    Partition("/dev/sda2", 6144, 40960, "5"),
    Partition("/dev/sda5", 8192, 4096, "82"),
    Partition("/dev/sda6", 14336, 8192, "83"),
))


def image(tmp_path: Path, size: int = 64 * MIB) -> str:
    img = tmp_path / "disk.img"
    with open(img, "wb") as f:
        f.truncate(size)
    return str(img)


def write(img: str, table: PartitionTable) -> None:
    """As the restore writes it: its sfdisk script and arguments."""
    subprocess.run([*SFDISK_WRITE, "--no-tell-kernel", img], input=render_sfdisk(table, img),
                   text=True, check=True, capture_output=True, env=ENV)


def test_geometry_of_an_image_file(tmp_path):
    g = libparted.read_geometry(image(tmp_path, 64 * MIB))
    assert (g.logical_sector, g.physical_sector, g.sectors) == (512, 512, 64 * MIB // 512)
    assert g.align_grain >= 1 and g.align_offset >= 0
    assert (g.first_usable, g.last_usable) == (34, 64 * MIB // 512 - 34)  # gpt: header and 128 entries each end


def test_a_blank_disk_has_no_table(tmp_path):
    img = image(tmp_path)
    assert libparted.read_table(img) is None
    assert libparted.differences(GPT, None) == ["libparted finds no partition table"]


def test_gpt_and_dos_written_by_sfdisk_read_the_same_in_libparted(tmp_path):
    img = image(tmp_path)
    for table in (GPT, DOS):
        write(img, table)
        read = libparted.read_table(img)
        assert read is not None and read.label == table.label
        assert libparted.differences(table, read) == []


def test_each_difference_is_named(tmp_path):
    img = image(tmp_path)
    write(img, GPT)
    read = libparted.read_table(img)
    grown = dataclasses.replace(GPT, partitions=(GPT.partitions[0], dataclasses.replace(GPT.partitions[1], size=9000)))
    assert libparted.differences(grown, read) == ["libparted: partition 2 size 8192 instead of 9000"]
    renamed = dataclasses.replace(GPT, partitions=(dataclasses.replace(GPT.partitions[0], name="home"), GPT.partitions[1]))
    assert libparted.differences(renamed, read) == ["libparted: partition 1 name 'root fs' instead of 'home'"]
    assert libparted.differences(DOS, read)[0] == "libparted reads a gpt table, not dos"
    write(img, DOS)
    unbooted = dataclasses.replace(DOS, partitions=(dataclasses.replace(DOS.partitions[0], bootable=False),
                                                    *DOS.partitions[1:]))
    assert libparted.differences(unbooted, libparted.read_table(img)) == [
        "libparted: partition 1 bootable flag True instead of False"]


def test_every_reading_is_fresh_not_libparteds_cached_device(tmp_path):
    """libparted keeps devices by path; a second look after a rewrite must see the new table."""
    img = image(tmp_path)
    write(img, GPT)
    assert libparted.read_table(img).label == "gpt"
    write(img, DOS)
    assert libparted.read_table(img).label == "dos"
    os.truncate(img, 0)
    os.truncate(img, 128 * MIB)
    assert libparted.read_table(img) is None
    assert libparted.read_geometry(img).sectors == 128 * MIB // 512
