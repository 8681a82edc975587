"""`df` output: size and used bytes per mounted filesystem.

Capture runs `df -B1 --output=source,fstype,size,used,avail,target`. The
original hand-written hook saved plain `df` (1K-blocks, Use%, long device
names wrapped onto a second line); both forms are read, and the block size
is taken from the header.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rescue.errors import LayoutError
from rescue.layout.sfdisk import read_text


@dataclass(frozen=True)
class DfEntry:
    source: str
    target: str
    size: int  # bytes
    used: int  # bytes
    avail: int  # bytes
    fstype: str | None = None


_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_OUTPUT = re.compile(r"(?P<source>\S.*?)\s+(?P<fstype>\S+)\s+(?P<size>\d+|-)\s+(?P<used>\d+|-)\s+(?P<avail>\d+|-)\s+(?P<target>/.*)")
_CLASSIC = re.compile(r"(?P<source>\S.*?)\s+(?P<size>\d+|-)\s+(?P<used>\d+|-)\s+(?P<avail>\d+|-)\s+(?P<pct>\d+%|-)\s+(?P<target>/.*)")


def _block_size(header: str, file: str) -> int:
    m = re.search(r"\b(\d+)([KMGT]?)B?-blocks\b", header)
    if not m:
        if re.search(r"\bSize\b", header):  # df -h is not a byte count
            raise LayoutError(file, 1, "df sizes are human-readable (-h): byte counts are needed (df -B1)")
        raise LayoutError(file, 1, "no N-blocks column in the df header")
    return int(m.group(1)) * _UNITS[m.group(2)]


def parse_df(data: str | bytes, file: str = "df.txt") -> tuple[DfEntry, ...]:
    text = read_text(data, file)
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise LayoutError(file, None, "the file is empty: df printed nothing")
    header = lines[0]
    if not header.startswith("Filesystem"):
        raise LayoutError(file, 1, "not df output (the header should start with 'Filesystem')")
    unit = _block_size(header, file)
    with_type = re.search(r"\bType\b", header) is not None
    pattern = _OUTPUT if with_type else _CLASSIC
    entries = []
    pending: tuple[str, int] | None = None
    for lineno, raw in enumerate(lines[1:], 2):
        if not raw.strip():
            continue
        line = raw.strip()
        if pending is not None:  # old df wrapped a long source name onto its own line
            line = pending[0] + " " + line
            pending = None
        elif len(raw.split()) == 1 and not with_type:
            pending = (line, lineno)
            continue
        m = pattern.fullmatch(line)
        if not m:
            raise LayoutError(file, lineno, f"not a df line: {raw[:60]!r}")

        def num(key: str) -> int:
            v = m.group(key)
            return 0 if v == "-" else int(v) * unit

        entries.append(DfEntry(
            source=m.group("source"), target=m.group("target"), size=num("size"), used=num("used"),
            avail=num("avail"), fstype=m.group("fstype") if with_type else None,
        ))
    if pending is not None:
        raise LayoutError(file, pending[1], "the file ends in the middle of a wrapped df line")
    return tuple(entries)
