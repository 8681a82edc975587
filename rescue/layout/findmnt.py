"""`findmnt -J`: what is mounted where, flattened from findmnt's tree."""

from __future__ import annotations

from typing import Any

from rescue.errors import LayoutError
from rescue.layout.lsblk import MAX_DEPTH, load_json
from rescue.layout.model import Mount


def _walk(items: Any, file: str, depth: int, out: list[Mount]) -> None:
    if depth > 4 * MAX_DEPTH:
        raise LayoutError(file, None, "mounts nested too deeply")
    if not isinstance(items, list):
        raise LayoutError(file, None, "filesystems/children is not a list")
    for item in items:
        if not isinstance(item, dict):
            raise LayoutError(file, None, "a mount entry is not an object")
        values = {}
        for key in ("target", "source", "fstype", "options"):
            v = item.get(key, "" if key == "options" else None)
            if not isinstance(v, str) or (key == "target" and not v):
                raise LayoutError(file, None, f"a mount entry has no usable {key}")
            values[key] = v
        out.append(Mount(**values))
        if "children" in item:
            _walk(item["children"], file, depth + 1, out)


def parse_findmnt(data: str | bytes, file: str = "findmnt.json") -> tuple[Mount, ...]:
    doc = load_json(data, file)
    if not isinstance(doc, dict) or "filesystems" not in doc:
        raise LayoutError(file, None, 'expected {"filesystems": [...]} (findmnt -J)')
    out: list[Mount] = []
    _walk(doc["filesystems"], file, 0, out)
    return tuple(out)


def source_device(source: str) -> str:
    """findmnt names btrfs subvolumes /dev/sda2[/@home]: the device is before the bracket."""
    return source.split("[", 1)[0]
