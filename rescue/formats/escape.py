"""The octal escapes of fstab, mountinfo and /proc/swaps (\\040 for a space)."""

from __future__ import annotations

import re

_OCTAL = re.compile(r"\\([0-3][0-7]{2})")


def unescape(field: str) -> str:
    """The kernel and getmntent write space, tab, newline and backslash as \\040 \\011 \\012 \\134."""
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)
