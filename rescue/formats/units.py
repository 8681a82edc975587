"""Byte sizes and durations as a person reads them, the same in every face."""

from __future__ import annotations

import hashlib
from pathlib import Path

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def human(size: float | None) -> str:
    """Bytes in binary units a person reads at a glance: 512 MiB, 1.5 GiB."""
    if size is None:
        return "?"
    value = float(size)
    for unit in _UNITS:
        if abs(value) < 1024 or unit == _UNITS[-1]:
            if unit == "B":
                return f"{int(value)} B"
            text = f"{value:.1f}".rstrip("0").rstrip(".")
            return f"{text} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def duration(seconds: float | None) -> str:
    """ETA and elapsed time as h:mm:ss or m:ss."""
    if seconds is None:
        return "--:--"
    s = max(0, int(round(seconds)))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def sha256_file(path: Path | str) -> str:
    """A file's or a block device's sha256 (hashlib reads it in chunks, never whole)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
