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

from rescue.formats.units import human
from rescue.backups import health
from rescue.backups import Backups, Image, ImageStatus, Machine, Vault, choose_image
from rescue.backups.source import add_source_arguments, source_from_args
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
CHECK_PROBLEMS = 8  # --check: some bank or machine misses a threshold (0: all well, 2: usage)
DEFAULT_LIMITS = health.Limits(max_age_days=2.0, min_nights=14.0, max_used_percent=90.0)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_source_arguments(p)
    p.add_argument("--config", type=Path, metavar="FILE",
                   help="a dirvish master.conf whose bank: list to read")
    p.add_argument("--client", metavar="NAME", help="the machine a --tree belongs to")
    p.add_argument("--image", metavar="DATE",
                   help="mark the images a restore at or before DATE would use (2026-1126-0300, 2026-11-26)")
    p.add_argument("--sizes", action="store_true",
                   help="add up the tree's file sizes where the image's log has no rsync statistics (slow)")
    p.add_argument("--json", action="store_true", help="print JSON (stable, versioned) instead of text")
    p.add_argument("--health", action="store_true",
                   help="per bank: how full (bytes, inodes), growth per night, nights left; per machine: "
                        "age of the newest good image, failed images, layout, mount points and btrfs subvolumes no vault "
                        "holds")
    p.add_argument("--measure", action="store_true",
                   help="with --health: measure the last images that lack rescue/added.json and write it "
                        "(one walk per image; this WRITES into the bank)")
    p.add_argument("--check", action="store_true",
                   help=f"for cron or monitoring: exit 0 when all is well, else {CHECK_PROBLEMS} with one line "
                        "per problem (thresholds default to --max-age 2d --min-nights 14 --max-used 90%%)")
    p.add_argument("--max-age", type=_days, default=None, metavar="AGE",
                   help="--check: the newest usable image of each machine is at most AGE old (2d, 36h)")
    p.add_argument("--min-nights", type=float, default=None, metavar="N",
                   help="--check: each bank has room for at least N more nights at its growth")
    p.add_argument("--max-used", type=_percent, default=None, metavar="PCT",
                   help="--check: each bank's bytes and inodes are at most PCT used (90%%)")


def _days(text: str) -> float:
    """2d, 36h, 90m or a plain number of days."""
    t = text.strip().lower()
    unit = {"d": 1.0, "h": 1 / 24, "m": 1 / 1440}.get(t[-1:], None)
    try:
        return float(t[:-1]) * unit if unit is not None else float(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an age (2d, 36h, 90m)") from None


def _percent(text: str) -> float:
    try:
        value = float(text.strip().rstrip("%"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a percentage (90%)") from None
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"{text!r} is not between 0% and 100%")
    return value


def run(args: argparse.Namespace) -> int:
    backups = source_from_args(args, required=False).find()
    if args.image is not None and not any(i.name == args.image for v in backups.vaults for i in v.images):
        date_limit(args.image)  # a date that cannot be read is an error, not "nothing chosen"
    if args.measure and not args.health:
        print("rescue list: --measure goes with --health", file=sys.stderr)
        return int(Exit.USAGE)
    if args.check:
        return _check(backups, args)
    if args.health:
        return _health(backups, args)
    sizes = _tree_sizes(backups) if args.sizes else {}
    if args.json:
        json.dump(as_json(backups, args.image, sizes), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(as_text(backups, args.image, sizes))
    return int(Exit.OK)


# --------------------------------------------------------------------------- health and check


def _figures(backups: Backups) -> tuple[list[health.BankHealth], list[health.MachineHealth]]:
    banks = [health.bank_health(bank, vs) for bank, vs in health.dirvish_banks(backups.vaults).items()]
    machines = [health.machine_health(m) for m in backups.machines]
    return banks, machines


def _limits(args: argparse.Namespace) -> health.Limits:
    given = any(x is not None for x in (args.max_age, args.min_nights, args.max_used))
    if not given:
        return DEFAULT_LIMITS
    return health.Limits(max_age_days=args.max_age, min_nights=args.min_nights, max_used_percent=args.max_used)


def _check(backups: Backups, args: argparse.Namespace) -> int:
    """One line per problem on stdout; exit CHECK_PROBLEMS when there is any."""
    banks, machines = _figures(backups)
    found = health.problems(banks, machines, _limits(args))
    if args.json:
        json.dump({"version": JSON_VERSION, "problems": found}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for line in found:
            print(line)
        if not found:
            print(f"ok: {len(banks)} bank(s), {len(machines)} machine(s) within the thresholds")
    return CHECK_PROBLEMS if found else int(Exit.OK)


def _health(backups: Backups, args: argparse.Namespace) -> int:
    if args.measure:
        todo = health.unmeasured_images(backups.vaults)
        for image in todo:
            try:
                health.record_added(image.path)
            except OSError as e:
                print(f"note: {shown(str(image.path))}: not measured ({e.strerror or e})", file=sys.stderr)
        print(f"measured {len(todo)} image(s); wrote rescue/added.json into each", file=sys.stderr)
    banks, machines = _figures(backups)
    if args.json:
        json.dump(health_json(banks, machines, list(backups.notes)), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(health_text(banks, machines, list(backups.notes)))
    return int(Exit.OK)


def health_json(banks: list[health.BankHealth], machines: list[health.MachineHealth], notes: list[str]) -> dict:
    return {"version": JSON_VERSION, "banks": [to_json(b) | {"used_percent": round(b.used_percent, 2),
                                                         "inodes_used_percent": round(b.inodes_used_percent, 2)}
                      for b in banks],
            "machines": [to_json(m) | {"complete": m.complete} for m in machines], "notes": notes}


def health_text(banks: list[health.BankHealth], machines: list[health.MachineHealth], notes: list[str]) -> str:
    lines: list[str] = []
    for b in banks:
        lines.append(f"Bank {shown(str(b.bank))}: {human_size(b.size)}, "
                     f"{human_size(b.used)} used ({b.used_percent:.1f}%), {human_size(b.free)} free; "
                     f"inodes {b.inodes_used} used ({b.inodes_used_percent:.1f}%), {b.inodes_free} free")
        for n in b.nights:
            lines.append(f"    {n.date}  added {human_size(n.bytes):>9}  {n.inodes:>9} inodes  "
                         f"({len(n.images)} image(s))")
        if b.growth_bytes is None:
            lines.append("  growth per night: unknown (no measured night after the first; "
                         "rescue list --health --measure)")
        else:
            if b.nights_left is not None:
                left = f"{b.nights_left:.1f}"
            elif b.steady_used is not None:
                left = (f"no limit: images expire after {b.retention_days:.0f} days, then the bank stays "
                        f"near {human_size(b.steady_used)} ({100.0 * b.steady_used / b.size:.0f}%)")
            else:
                left = "no limit"
            lines.append(f"  growth per night: {human_size(b.growth_bytes)}, {b.growth_inodes} inodes; "
                         f"nights left: {left}")
        if b.unmeasured:
            lines.append(f"  {b.unmeasured} recent image(s) not measured: rescue list --health --measure "
                         "(writes rescue/added.json into them)")
    for m in machines:
        if lines:
            lines.append("")
        age = f"{m.age_days:.1f} days old" if m.age_days is not None else "none"
        lines.append(f"Machine {shown(m.client) if m.client else '(no client named)'}: newest good image "
                     f"{shown(m.newest) if m.newest else '-'} ({age})")
        lines.append(f"  last {health.RECENT_NIGHTS} nights: {m.failed} failed, {m.incomplete} incomplete; "
                     f"layout captured: {'yes' if m.layout else 'NO'}")
        lines.extend(_incomplete(m))
    for note in notes:
        lines.append(f"note: {note}")
    return "\n".join(lines) + "\n"


def _incomplete(m: health.MachineHealth) -> list[str]:
    """What the machine's vaults leave out of its captured layout (the machine is then incomplete)."""
    lines = []
    if m.unheld:
        lines.append(f"  INCOMPLETE: mount points no vault holds: {', '.join(shown(x) for x in m.unheld)}")
    if m.unheld_subvolumes:
        lines.append(f"  INCOMPLETE: btrfs subvolumes no vault holds: {', '.join(shown(x) for x in m.unheld_subvolumes)}"
                     " (a vault with xdev copies a subvolume's folder empty: give each its own vault)")
    return lines


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
        cover = health.machine_health(m)
        machines.append({"client": m.client, "vaults": vaults, "complete": cover.complete,
                         "unheld": list(cover.unheld), "unheld_subvolumes": list(cover.unheld_subvolumes)})
    return {"version": JSON_VERSION, "machines": machines, "notes": list(backups.notes)}


def _source(v: Vault) -> str | None:
    for i in reversed(v.images):
        if i.source:
            return i.source
    return v.configured_source


# --------------------------------------------------------------------------- text


def human_size(n: int | None) -> str:
    """A size in the listing; '-' where the bank did not say."""
    return "-" if n is None else human(n)


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
             *(f"  from {w}" for w in where), *_incomplete(health.machine_health(m))]
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
