"""Block maps of ext4 images: exactly the used blocks, bmaptool's format, verified copies."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from rescue.image import bmap
from rescue.run import run


@pytest.fixture()
def ext4_image(tmp_path: Path) -> Path:
    """A 32 MiB ext4 image made with mke2fs -d from a small tree (no mount, no root needed)."""
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "hostname").write_text("rescue\n")
    (tree / "big").write_bytes(os.urandom(3 << 20))
    (tree / "zeros").write_bytes(b"\0" * (1 << 20))  # used blocks that are all zero
    image = tmp_path / "root.img"
    run(["mke2fs", "-q", "-F", "-t", "ext4", "-L", "RESCUE", "-b", "4096", "-d", str(tree), str(image), "32M"])
    return image


def test_map_is_exactly_the_used_blocks_of_the_filesystem(ext4_image: Path):
    bm = bmap.create(ext4_image)
    out = run(["dumpe2fs", "-h", str(ext4_image)]).stdout
    total = int(re.search(r"Block count:\s+(\d+)", out).group(1))
    free = int(re.search(r"Free blocks:\s+(\d+)", out).group(1))
    assert bm.block_size == 4096 and bm.blocks == total
    assert bm.mapped_blocks == total - free
    # ranges are sorted, disjoint and inside the image
    prev = -1
    for r in bm.ranges:
        assert prev < r.first <= r.last < total
        prev = r.last


def test_bmap_file_round_trips_and_its_own_checksum_catches_edits(ext4_image: Path, tmp_path: Path):
    bm = bmap.create(ext4_image)
    path = tmp_path / "root.bmap"
    bmap.save(bm, path)
    assert bmap.load(path) == bm
    text = path.read_text()
    first = bm.ranges[0]
    path.write_text(text.replace(f"> {first.first}-{first.last} <", f"> {first.first}-{first.last + 1} <", 1))
    with pytest.raises(bmap.BmapError, match="checksum"):
        bmap.load(path)


def test_bmaptool_accepts_the_map_and_copies_a_working_filesystem(ext4_image: Path, tmp_path: Path):
    bm = bmap.create(ext4_image)
    bmap.save(bm, tmp_path / "root.bmap")
    dest = tmp_path / "dest.img"
    dest.write_bytes(b"\xff" * ext4_image.stat().st_size)  # an old partition full of garbage
    result = subprocess.run(["bmaptool", "copy", "--bmap", str(tmp_path / "root.bmap"), str(ext4_image), str(dest)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert subprocess.run(["e2fsck", "-fn", str(dest)], capture_output=True).returncode == 0


def test_copy_writes_only_mapped_blocks_and_the_copy_is_a_clean_filesystem(ext4_image: Path, tmp_path: Path):
    bm = bmap.create(ext4_image)
    dest = tmp_path / "dest.img"
    dest.write_bytes(b"\xff" * ext4_image.stat().st_size)
    stats = bmap.copy_image(ext4_image, bm, dest, verify=True)
    assert stats.bytes_written == bm.mapped_bytes < ext4_image.stat().st_size
    fsck = subprocess.run(["e2fsck", "-fn", str(dest)], capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout
    cat = run(["debugfs", "-R", "cat /etc/hostname", str(dest)]).stdout
    assert cat == "rescue\n"
    # a free block kept the old content: it was never written
    data = dest.read_bytes()
    free_block = next(b for b in range(bm.blocks) if not any(r.first <= b <= r.last for r in bm.ranges))
    assert data[free_block * 4096:(free_block + 1) * 4096] == b"\xff" * 4096


def test_a_changed_image_is_refused_while_copying(ext4_image: Path, tmp_path: Path):
    bm = bmap.create(ext4_image)
    last = bm.ranges[-1]
    with open(ext4_image, "r+b") as f:
        f.seek(last.first * bm.block_size)
        byte = f.read(1)
        f.seek(last.first * bm.block_size)
        f.write(bytes([byte[0] ^ 0xFF]))
    dest = tmp_path / "dest.img"
    dest.write_bytes(b"\0" * ext4_image.stat().st_size)
    with pytest.raises(bmap.BmapError, match="do not match the block map"):
        bmap.copy_image(ext4_image, bm, dest)


def test_a_target_smaller_than_the_image_is_refused_before_writing(ext4_image: Path, tmp_path: Path):
    bm = bmap.create(ext4_image)
    dest = tmp_path / "small.img"
    dest.write_bytes(b"\x11" * 4096)
    with pytest.raises(bmap.BmapError, match="holds 4096 bytes"):
        bmap.copy_image(ext4_image, bm, dest)
    assert dest.read_bytes() == b"\x11" * 4096


def test_not_an_ext4_image_is_a_clear_error(tmp_path: Path):
    junk = tmp_path / "junk.img"
    junk.write_bytes(b"\0" * (1 << 20))
    with pytest.raises(Exception) as e:
        bmap.create(junk)
    assert "dumpe2fs" in str(e.value) or "not an ext2/3/4" in str(e.value)
