"""Block maps: which blocks of the rescue image hold data, with their checksums.

The map comes from the ext4 block bitmap (dumpe2fs), not from the image
file's holes: a block the filesystem uses but that happens to be zero (an
inode table mke2fs never wrote) must still be written over an old partition,
while a free block never needs to be. The file is in bmaptool's format
(version 2.0, sha256), so `bmaptool copy --bmap` reads the same map.

`copy_image()` writes only the mapped ranges to a partition, checking every
range against the map as it is read and reading the target back at the end.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import re
import time
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from rescue.errors import RescueError
from rescue.run import run

BMAP_VERSION = "2.0"
CHUNK = 8 << 20  # bytes per read/write: big enough for full speed, small enough for RAM
DEPTH = 3  # chunks in flight to the writer thread
ZERO_SUM = "0" * 64


class BmapError(RescueError):
    """A block map does not fit its image, or the data does not match the map."""


@dataclass(frozen=True)
class Range:
    """Blocks first..last (inclusive) and the sha256 of their bytes."""

    first: int
    last: int
    sha256: str

    @property
    def blocks(self) -> int:
        return self.last - self.first + 1


@dataclass(frozen=True)
class BlockMap:
    image_size: int
    block_size: int
    ranges: tuple[Range, ...]

    @property
    def blocks(self) -> int:
        return self.image_size // self.block_size

    @property
    def mapped_blocks(self) -> int:
        return sum(r.blocks for r in self.ranges)

    @property
    def mapped_bytes(self) -> int:
        return self.mapped_blocks * self.block_size


@dataclass(frozen=True)
class CopyStats:
    bytes_written: int
    seconds: float
    verified: bool


def _parse_ranges(text: str) -> list[tuple[int, int]]:
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        a, _, b = part.partition("-")
        out.append((int(a), int(b or a)))
    return out


def ext4_used_ranges(image: Path) -> tuple[int, int, list[tuple[int, int]]]:
    """(block size, block count, used block ranges) from the ext4 block bitmap."""
    out = run(["dumpe2fs", str(image)]).stdout
    bs = re.search(r"^Block size:\s+(\d+)", out, re.M)
    count = re.search(r"^Block count:\s+(\d+)", out, re.M)
    if not bs or not count:
        raise BmapError(f"{image} is not an ext2/3/4 filesystem image", why="dumpe2fs found no superblock")
    block_size, block_count = int(bs.group(1)), int(count.group(1))
    free: list[tuple[int, int]] = []
    for m in re.finditer(r"^\s+Free blocks: ?(.*)$", out, re.M):
        free.extend(_parse_ranges(m.group(1)))
    free.sort()
    used: list[tuple[int, int]] = []
    pos = 0
    for a, b in free:
        if a > pos:
            used.append((pos, a - 1))
        pos = max(pos, b + 1)
    if pos < block_count:
        used.append((pos, block_count - 1))
    return block_size, block_count, used


def _read_ranges(f: int, first: int, last: int, block_size: int) -> Iterator[bytes]:
    offset, end = first * block_size, (last + 1) * block_size
    while offset < end:
        data = os.pread(f, min(CHUNK, end - offset), offset)
        if not data:
            raise BmapError(f"short read at byte {offset}", why="the image is smaller than its block map says")
        offset += len(data)
        yield data


def create(image: Path) -> BlockMap:
    """The block map of an ext4 image: used ranges and their sha256."""
    block_size, block_count, used = ext4_used_ranges(image)
    size = image.stat().st_size
    if size != block_size * block_count:
        raise BmapError(f"{image}: file size {size} is not the filesystem size {block_size * block_count}")
    ranges = []
    fd = os.open(image, os.O_RDONLY)
    try:
        for first, last in used:
            h = hashlib.sha256()
            for data in _read_ranges(fd, first, last, block_size):
                h.update(data)
            ranges.append(Range(first, last, h.hexdigest()))
    finally:
        os.close(fd)
    return BlockMap(size, block_size, tuple(ranges))


def dumps(bmap: BlockMap) -> str:
    """bmaptool's XML (version 2.0) with its file checksum filled in."""
    lines = [
        '<?xml version="1.0" ?>',
        f'<bmap version="{BMAP_VERSION}">',
        f"    <ImageSize> {bmap.image_size} </ImageSize>",
        f"    <BlockSize> {bmap.block_size} </BlockSize>",
        f"    <BlocksCount> {bmap.blocks} </BlocksCount>",
        f"    <MappedBlocksCount> {bmap.mapped_blocks} </MappedBlocksCount>",
        "    <ChecksumType> sha256 </ChecksumType>",
        f"    <BmapFileChecksum> {ZERO_SUM} </BmapFileChecksum>",
        "    <BlockMap>",
    ]
    for r in bmap.ranges:
        span = f"{r.first}-{r.last}" if r.last != r.first else f"{r.first}"
        lines.append(f'        <Range chksum="{r.sha256}"> {span} </Range>')
    lines += ["    </BlockMap>", "</bmap>", ""]
    text = "\n".join(lines)
    digest = hashlib.sha256(text.encode()).hexdigest()
    return text.replace(f"<BmapFileChecksum> {ZERO_SUM} ", f"<BmapFileChecksum> {digest} ", 1)


def loads(text: str, source: str = "bmap") -> BlockMap:
    try:
        root = ET.fromstring(text)
        size = int(root.findtext("ImageSize", "").strip())
        block_size = int(root.findtext("BlockSize", "").strip())
        stored = root.findtext("BmapFileChecksum", "").strip()
        ranges = []
        for el in root.iter("Range"):
            first, last = _parse_ranges(el.text or "")[0]
            ranges.append(Range(first, last, el.get("chksum", "")))
    except (ET.ParseError, ValueError, IndexError) as e:
        raise BmapError(f"{source} is not a block map file", why=str(e)) from None
    zeroed = text.replace(stored, ZERO_SUM, 1)
    if hashlib.sha256(zeroed.encode()).hexdigest() != stored:
        raise BmapError(f"{source}: the block map's own checksum is wrong",
                        why="the file was changed or cut short", fix="build the image again (rescue-image build)")
    return BlockMap(size, block_size, tuple(ranges))


def save(bmap: BlockMap, path: Path) -> None:
    path.write_text(dumps(bmap))


def load(path: Path) -> BlockMap:
    return loads(path.read_text(), str(path))


Progress = Callable[[int, int], None]


def copy_image(image: Path, bmap: BlockMap, target: str | Path, *, verify: bool = True,
               progress: Progress | None = None) -> CopyStats:
    """Write the mapped blocks of `image` to `target` (a partition or file).

    Every range is checked against the map while it is read (a corrupt image
    is never written silently); with verify=True the written ranges are read
    back from the target, past the page cache, and compared with the image.
    Writes go around the page cache (O_DIRECT, aligned buffers) from a writer
    thread, so reading and hashing the next chunk overlaps with the write.
    """
    start = time.monotonic()
    target_size = _size_of(target)
    if target_size < bmap.image_size:
        raise BmapError(f"{target} holds {target_size} bytes, the image needs {bmap.image_size}",
                        fix="make the rescue partition at least as big as the image")
    src = os.open(image, os.O_RDONLY)
    dst = _open_direct(target)
    written = 0
    buffers = [mmap.mmap(-1, CHUNK) for _ in range(DEPTH + 1)]  # page-aligned, as O_DIRECT wants
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rescue-write")
    pending: deque[Future[None]] = deque()
    n = 0
    try:
        os.posix_fadvise(src, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        for r in bmap.ranges:
            h = hashlib.sha256()
            offset, end = r.first * bmap.block_size, (r.last + 1) * bmap.block_size
            while offset < end:
                while len(pending) >= DEPTH:
                    pending.popleft().result()
                buf = buffers[n % len(buffers)]
                n += 1
                size = min(CHUNK, end - offset)
                view = memoryview(buf)[:size]
                got = os.preadv(src, [view], offset)
                if got != size:
                    raise BmapError(f"short read at byte {offset} of {image}",
                                    why="the image is smaller than its block map says")
                h.update(view)
                pending.append(pool.submit(_pwrite_all, dst, view, offset))
                offset += size
                written += size
                if progress:
                    progress(written, bmap.mapped_bytes)
            if r.sha256 and h.hexdigest() != r.sha256:
                raise BmapError(f"{image}: blocks {r.first}-{r.last} do not match the block map",
                                why="the image file changed after it was built, or the disk holding it is failing",
                                fix="build the image again (rescue-image build)")
        while pending:
            pending.popleft().result()
        os.fsync(dst)
    finally:
        for f in pending:
            f.cancel()
        pool.shutdown(wait=True)
        os.close(dst)
        os.close(src)
    if verify:
        compare_target(image, bmap, target)
    return CopyStats(written, time.monotonic() - start, verify)


def _open_direct(target: str | Path) -> int:
    """O_DIRECT where the target allows it (block devices, most filesystems), else buffered."""
    try:
        return os.open(target, os.O_WRONLY | os.O_DIRECT)
    except OSError:
        return os.open(target, os.O_WRONLY)


def compare_target(image: Path, bmap: BlockMap, target: str | Path) -> None:
    """Read the mapped ranges back from the target and compare them with the image.

    The image was checked against the map while it was copied, so equal
    bytes mean the target holds what the map says; comparing bytes is many
    times cheaper than hashing them again.
    """
    src = os.open(image, os.O_RDONLY)
    dst = os.open(target, os.O_RDONLY)
    try:
        # Drop cached pages so the check reads what reached the device.
        os.posix_fadvise(dst, 0, 0, os.POSIX_FADV_DONTNEED)
        for r in bmap.ranges:
            offset = r.first * bmap.block_size
            for data in _read_ranges(src, r.first, r.last, bmap.block_size):
                back = os.pread(dst, len(data), offset)
                if back != data:
                    raise BmapError(f"{target}: blocks {r.first}-{r.last} read back differently than written",
                                    why="the target disk did not store what was written",
                                    fix="the disk may be failing: try another one")
                offset += len(data)
    finally:
        os.close(dst)
        os.close(src)


def verify_target(target: str | Path, bmap: BlockMap) -> None:
    """Read the mapped ranges back from the target and compare checksums."""
    fd = os.open(target, os.O_RDONLY)
    try:
        # Drop cached pages so the check reads what reached the device.
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        for r in bmap.ranges:
            h = hashlib.sha256()
            for data in _read_ranges(fd, r.first, r.last, bmap.block_size):
                h.update(data)
            if r.sha256 and h.hexdigest() != r.sha256:
                raise BmapError(f"{target}: blocks {r.first}-{r.last} read back differently than written",
                                why="the target disk did not store what was written",
                                fix="the disk may be failing: try another one")
    finally:
        os.close(fd)


def _pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


def _size_of(target: str | Path) -> int:
    fd = os.open(target, os.O_RDONLY)
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)
