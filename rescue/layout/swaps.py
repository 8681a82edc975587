"""/proc/swaps: active swap areas (sizes there are KiB; here bytes)."""

from __future__ import annotations

import re

from rescue.errors import LayoutError
from rescue.layout.fstab import unescape
from rescue.layout.model import Swap
from rescue.layout.sfdisk import read_text

_LINE = re.compile(r"(?P<name>\S+)\s+(?P<type>partition|file)\s+(?P<size>\d+)\s+(?P<used>\d+)\s+(?P<prio>-?\d+)")


def parse_swaps(data: str | bytes, file: str = "swaps") -> tuple[Swap, ...]:
    text = read_text(data, file)
    lines = text.splitlines()
    if not lines:
        return ()  # no swap: /proc/swaps always has its header, but a capture may have none
    if not lines[0].startswith("Filename"):
        raise LayoutError(file, 1, "not /proc/swaps (the first line should be 'Filename Type Size Used Priority')")
    swaps = []
    for lineno, raw in enumerate(lines[1:], 2):
        if not raw.strip():
            continue
        m = _LINE.fullmatch(raw.strip())
        if not m:
            raise LayoutError(file, lineno, f"not a swap line: {raw[:60]!r}")
        swaps.append(Swap(
            device=unescape(m.group("name"), file, lineno),
            size=int(m.group("size")) * 1024,
            priority=int(m.group("prio")),
        ))
    return tuple(swaps)
