"""/etc/fstab: the mounts a machine expects at boot (UUID=, LABEL=, PARTUUID=, /dev/...)."""

from __future__ import annotations

import re

from rescue.errors import LayoutError
from rescue.formats.escape import unescape as octal_unescape
from rescue.layout.model import FstabEntry
from rescue.layout.sfdisk import read_text


def unescape(field: str, file: str, line: int) -> str:
    """fstab and /proc files write space, tab, newline and backslash as \\040 \\011 \\012 \\134."""
    out = octal_unescape(field)
    if "\x00" in out:
        raise LayoutError(file, line, "a NUL in a field")
    return out


def parse_fstab(data: str | bytes, file: str = "fstab") -> tuple[FstabEntry, ...]:
    """Entries in file order; an empty fstab is an empty tuple (a machine may have none)."""
    text = read_text(data, file)
    entries = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) < 3 or len(fields) > 6:
            raise LayoutError(file, lineno, f"expected 3 to 6 fields (spec file type options dump pass), found {len(fields)}")
        spec, target, vfstype = (unescape(f, file, lineno) for f in fields[:3])
        options = unescape(fields[3], file, lineno) if len(fields) > 3 else "defaults"
        nums = []
        for name, value in zip(("dump", "pass"), fields[4:]):
            if not re.fullmatch(r"\d{1,4}", value):
                raise LayoutError(file, lineno, f"{name} field {value!r} is not a number")
            nums.append(int(value))
        while len(nums) < 2:
            nums.append(0)
        entries.append(FstabEntry(spec=spec, file=target, vfstype=vfstype, options=options, freq=nums[0], passno=nums[1]))
    return tuple(entries)
