"""`lsblk -J -b -O` output: the block devices of a machine as a tree.

Without udev (build hosts, some containers) lsblk reports no FSTYPE, UUID,
LABEL or PARTTYPE at all; capture then asks `blkid -p` per partition (see
rescue.capture). An empty answer here therefore never means "no filesystem".
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from rescue.errors import LayoutError
from rescue.layout.sfdisk import read_text

MAX_DEPTH = 8  # disk > partition > crypt > lvm > ...: deeper is garbage


@dataclass(frozen=True)
class BlockDevice:
    name: str
    path: str
    type: str  # disk, part, loop, rom, lvm, crypt, ...
    size: int  # bytes
    fstype: str | None = None
    uuid: str | None = None
    label: str | None = None
    partuuid: str | None = None
    parttype: str | None = None
    partlabel: str | None = None
    pttype: str | None = None
    ptuuid: str | None = None
    model: str | None = None
    serial: str | None = None
    log_sec: int | None = None
    ro: bool = False
    mountpoints: tuple[str, ...] = ()
    children: tuple[BlockDevice, ...] = ()


def load_json(data: str | bytes, file: str) -> Any:
    """JSON of a captured command, or a LayoutError (never a JSON or recursion error)."""
    text = read_text(data, file)
    if not text.strip():
        raise LayoutError(file, None, "the file is empty")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise LayoutError(file, e.lineno, f"not valid JSON: {e.msg}") from None
    except RecursionError:
        raise LayoutError(file, None, "JSON nested too deeply") from None


def _opt_str(item: dict, key: str, file: str, where: str) -> str | None:
    value = item.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise LayoutError(file, None, f"{where}: {key} is not a string")
    return value or None


def _size(value: Any, file: str, where: str) -> int:
    if isinstance(value, bool):
        raise LayoutError(file, None, f"{where}: size is not a number of bytes")
    if isinstance(value, int) and value >= 0:
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)  # older lsblk prints numbers as strings
    raise LayoutError(file, None, f"{where}: size {value!r} is not a number of bytes (was lsblk run with -b?)")


def _device(item: Any, file: str, depth: int) -> BlockDevice:
    if depth > MAX_DEPTH:
        raise LayoutError(file, None, "block devices nested too deeply")
    if not isinstance(item, dict):
        raise LayoutError(file, None, "a block device entry is not an object")
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise LayoutError(file, None, "a block device has no name")
    where = f"device {name}"
    path = _opt_str(item, "path", file, where) or "/dev/" + name
    dtype = _opt_str(item, "type", file, where)
    if dtype is None:
        raise LayoutError(file, None, f"{where} has no type")
    if "size" not in item:
        raise LayoutError(file, None, f"{where} has no size")
    size = _size(item["size"], file, where)
    mps: list[str] = []
    raw_mps = item.get("mountpoints", [item.get("mountpoint")])
    if not isinstance(raw_mps, list):
        raise LayoutError(file, None, f"{where}: mountpoints is not a list")
    for mp in raw_mps:
        if mp is None:
            continue
        if not isinstance(mp, str):
            raise LayoutError(file, None, f"{where}: a mount point is not a string")
        mps.append(mp)
    log_sec = item.get("log-sec")
    if log_sec is not None:
        log_sec = _size(log_sec, file, where)
    children = item.get("children", [])
    if not isinstance(children, list):
        raise LayoutError(file, None, f"{where}: children is not a list")
    return BlockDevice(
        name=name, path=path, type=dtype, size=size,
        fstype=_opt_str(item, "fstype", file, where), uuid=_opt_str(item, "uuid", file, where),
        label=_opt_str(item, "label", file, where), partuuid=_opt_str(item, "partuuid", file, where),
        parttype=_opt_str(item, "parttype", file, where), partlabel=_opt_str(item, "partlabel", file, where),
        pttype=_opt_str(item, "pttype", file, where), ptuuid=_opt_str(item, "ptuuid", file, where),
        model=(_opt_str(item, "model", file, where) or "").strip() or None,
        serial=(_opt_str(item, "serial", file, where) or "").strip() or None,
        log_sec=log_sec, ro=item.get("ro") is True or item.get("ro") == "1",
        mountpoints=tuple(mps),
        children=tuple(_device(c, file, depth + 1) for c in children),
    )


def parse_lsblk(data: str | bytes, file: str = "lsblk.json") -> tuple[BlockDevice, ...]:
    doc = load_json(data, file)
    if not isinstance(doc, dict) or not isinstance(doc.get("blockdevices"), list):
        raise LayoutError(file, None, 'expected {"blockdevices": [...]} (lsblk -J)')
    return tuple(_device(item, file, 0) for item in doc["blockdevices"])


def walk(devices: tuple[BlockDevice, ...]) -> Iterator[BlockDevice]:
    """Every device, parents before children."""
    for d in devices:
        yield d
        yield from walk(d.children)
