"""`rescue list`: the machines, vaults and images a restore can use.

Sizes come from rsync's own statistics at the end of each image's log
("Total file size"), read from the last few KiB of the file: free, and the
same number dirvish reported that night. Walking a tree to add up file sizes
takes minutes on a real bank (millions of files per image), so it is done
only when asked (--sizes), and only for images whose log gives no figure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from rescue.backups import Backups, Image, ImageStatus, Machine, Vault, choose_image, find_backups
from rescue.backups.discover import date_limit
from rescue.backups.dirvish import printable, shown
from rescue.errors import BackupError, Exit
from rescue.jsonform import to_json

NAME = "list"
ORDER = 10
HELP = "show machines, vaults and images in dirvish banks, rsnapshot roots or folders"
DESCRIPTION = (
    "List what can be restored: per machine (client) its vaults and their images, with date, "
    "status, size and whether a disk layout was captured. '*' marks the image a restore would "
    "use. Without --bank, --rsnapshot or --tree, the banks of /etc/dirvish/master.conf are read."
)
JSON_VERSION = 1


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bank", action="append", type=Path, default=[], metavar="DIR",
                   help="a dirvish bank (the folder holding the vaults); may be repeated")
    p.add_argument("--config", type=Path, metavar="FILE",
                   help="a dirvish master.conf whose bank: list to read")
    p.add_argument("--rsnapshot", action="append", type=Path, default=[], metavar="ROOT",
                   help="an rsnapshot snapshot_root; may be repeated")
    p.add_argument("--tree", action="append", type=Path, default=[], metavar="DIR",
                   help="a plain folder holding a copy of a whole machine; may be repeated")
    p.add_argument("--client", metavar="NAME", help="the machine a --tree belongs to")
    p.add_argument("--image", metavar="DATE",
                   help="mark the images a restore at or before DATE would use (2026-1126-0300, 2026-11-26)")
    p.add_argument("--sizes", action="store_true",
                   help="add up the tree's file sizes where the image's log has no rsync statistics (slow)")
    p.add_argument("--json", action="store_true", help="print JSON (stable, versioned) instead of text")


def run(args: argparse.Namespace) -> int:
    backups = find_backups(args.bank, args.config, args.rsnapshot, args.tree, client=args.client)
    if args.image is not None and not any(i.name == args.image for v in backups.vaults for i in v.images):
        date_limit(args.image)  # a date that cannot be read is an error, not "nothing chosen"
    sizes = _tree_sizes(backups) if args.sizes else {}
    if args.json:
        json.dump(as_json(backups, args.image, sizes), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(as_text(backups, args.image, sizes))
    return int(Exit.OK)


# --------------------------------------------------------------------------- choosing, sizes


def _chosen(vault: Vault, at: str | None) -> str | None:
    try:
        return choose_image(vault, at).name
    except BackupError:
        return None


def _tree_sizes(backups: Backups) -> dict[Path, int]:
    """Apparent size of trees whose log gave none (hard links counted once per tree)."""
    out: dict[Path, int] = {}
    for v in backups.vaults:
        for i in v.images:
            if i.size is None and i.tree.is_dir():
                out[i.path] = _apparent_size(i.tree)
    return out


def _apparent_size(top: Path) -> int:
    total = 0
    seen: set[tuple[int, int]] = set()
    for root, dirs, files in os.walk(top):
        for name in files:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            if st.st_nlink > 1:
                key = (st.st_dev, st.st_ino)
                if key in seen:
                    continue
                seen.add(key)
            total += st.st_size
    return total


def _size(image: Image, sizes: dict[Path, int]) -> int | None:
    return image.size if image.size is not None else sizes.get(image.path)


# --------------------------------------------------------------------------- JSON


def as_json(backups: Backups, at: str | None = None, sizes: dict[Path, int] | None = None) -> dict:
    """The stable JSON form: {version, machines: [{client, vaults: [{..., images}]}], notes}."""
    sizes = sizes or {}
    machines = []
    for m in backups.machines:
        vaults = []
        for v in m.vaults:
            images = []
            for i in v.images:
                item = to_json(i)
                item["size"] = _size(i, sizes)
                item["layout"] = i.layout_dir is not None
                images.append(item)
            vaults.append({
                "name": v.name,
                "kind": v.kind.value,
                "bank": str(v.bank),
                "client": v.client,
                "source": _source(v),
                "chosen": _chosen(v, at),
                "images": images,
            })
        machines.append({"client": m.client, "vaults": vaults})
    return {"version": JSON_VERSION, "machines": machines, "notes": list(backups.notes)}


def _source(v: Vault) -> str | None:
    for i in reversed(v.images):
        if i.source:
            return i.source
    return v.configured_source


# --------------------------------------------------------------------------- text


def human_size(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _when(image: Image) -> str:
    return (image.created or "-").replace("T", " ")[:16]


def _layout(image: Image) -> str:
    if image.layout_dir is None:
        return "no"
    return "legacy" if image.layout_dir == image.path else "yes"


def _machine_text(m: Machine, at: str | None, sizes: dict[Path, int]) -> list[str]:
    name = shown(m.client) if m.client else "(no client named)"
    where = sorted({f"{v.kind.value} {shown(str(v.bank))}" for v in m.vaults})
    lines = [f"Machine {name}: {len(m.vaults)} vault{'s' if len(m.vaults) != 1 else ''}",
             *(f"  from {w}" for w in where)]
    for v in m.vaults:
        chosen = _chosen(v, at)
        lines.append(f"  vault {shown(v.name)}, source {shown(_source(v) or '?')}")
        if not v.images:
            lines.append("      no images yet")
            continue
        lines.append(f"      {'IMAGE':<16} {'MADE':<16}  {'STATUS':<10} {'SIZE':>9}  LAYOUT")
        for i in v.images:
            mark = "*" if i.name == chosen else " "
            status = i.status.value if i.status is ImageStatus.SUCCESS else i.status.value.upper()
            lines.append(f"    {mark} {shown(i.name):<16} {_when(i):<16}  {status:<10} "
                         f"{human_size(_size(i, sizes)):>9}  {_layout(i)}")
            if i.status is not ImageStatus.SUCCESS and i.status_text:
                lines.append(f"        {printable(i.status_text)[:70]}")
        if chosen is None:
            when = f" at or before {shown(at)}" if at else ""
            lines.append(f"      no usable image{when}: a restore of this vault is refused")
    return lines


def as_text(backups: Backups, at: str | None = None, sizes: dict[Path, int] | None = None) -> str:
    sizes = sizes or {}
    if not backups.vaults:
        lines = ["No vaults found."]
    else:
        lines = []
        for m in backups.machines:
            if lines:
                lines.append("")
            lines.extend(_machine_text(m, at, sizes))
        lines.append("")
        lines.append("* = the image a restore would use (newest success"
                     + (f" at or before {shown(at)})" if at else ")"))
    for note in backups.notes:
        lines.append(f"note: {note}")
    return "\n".join(lines) + "\n"
