"""The review: a plan in words, for a person at an 80x24 console at 3 a.m.

Plain text, no colour, no line over 79 columns. It says what will be
destroyed, what the new disk will look like beside the old one, what is
copied from where, and every warning, before anything is written.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Sequence
from typing import TYPE_CHECKING

from rescue.devices import partition_path
from rescue.formats.units import human
from rescue.plan.migrate import is_extended
from rescue.steps.luks import OpenLuks
from rescue.steps.md import MakeArray

if TYPE_CHECKING:
    from rescue.plan.model import DiskPlan, Migration, NewFilesystem, NewSwap, Plan

WIDTH = 79

PART_TYPES = {
    "83": "Linux",
    "82": "Linux swap",
    "5": "Extended",
    "f": "Extended LBA",
    "85": "Linux ext.",
    "ef": "EFI System",
    "b": "W95 FAT32",
    "c": "W95 FAT32 LBA",
    "7": "NTFS/exFAT",
    "8e": "Linux LVM",
    "fd": "Linux RAID",
    "0fc63daf-8483-4772-8e79-3d69d8477de4": "Linux",
    "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f": "Linux swap",
    "c12a7328-f81f-11d2-ba4b-00a0c93ec93b": "EFI System",
    "21686148-6449-6e6f-744e-656564454649": "BIOS boot",
    "4f68bce3-e8cd-4db1-96e7-fbcaf984b709": "Linux root",
    "933ac7e1-2eb4-4f13-b844-0e14e2aef915": "Linux home",
    "bc13c2ff-59e6-4262-a352-b275fd6f7172": "Linux /boot",
    "e6d6d379-f507-44c2-a23c-238f2a3df928": "Linux LVM",
    "a19d880f-05fc-4d3b-a006-743f0f84911e": "Linux RAID",
    "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7": "MS basic data",
}


def type_name(ptype: str) -> str:
    key = ptype.lower().removeprefix("0x")
    key = key.lstrip("0") or "0" if len(key) <= 2 else key
    return PART_TYPES.get(key, ptype if len(ptype) <= 12 else ptype[:8] + "…")


def render_review(plan: Plan) -> str:
    out: list[str] = []
    out.append(f"Restore plan for {plan.client}" + (f" (layout captured {plan.captured_at})" if plan.captured_at else ""))
    for d in plan.disks:
        t = d.target
        ident = " ".join(x for x in (t.model, f"serial {t.serial}" if t.serial else None) if x)
        out.append(_clip(f"  target    {t.device}  {human(t.size)}  {ident}".rstrip()))
        if t.by_id:
            out.append(_clip(f"            {t.by_id[0]}"))
        out.append(f"  replaces  captured disk {d.source.device}  {human(d.source.size)}")
    out += _wrap("  in short  " + _summary(plan), indent=" " * 12)
    out.append("")

    for d in plan.disks:
        out.append(f"WILL BE DESTROYED on {d.target.device}:")
        if d.destroyed:
            out += [_clip(f"  - {line}") for line in d.destroyed]
        else:
            out.append(f"  nothing: no partitions or signatures were found on {d.target.device}")
        out.append("")

    for d in plan.disks:
        out += _table(plan, d)
        out.append("")
        out += _changes(plan, d)
        out.append("")
    out += _filesystems(plan)
    out.append("")

    out.append("Steps")
    for i, step in enumerate(plan.steps, 1):
        out += _wrap(f"{i:3d}. {step.describe()}", indent="      ")
    warnings = plan.warnings + tuple(f"captured layout: {w}" for w in plan.layout_warnings)
    if warnings:
        out.append("")
        out.append(f"Warnings ({len(warnings)})")
        for w in warnings:
            out += _wrap(f"  ! {w}", indent="    ")
    out.append("")
    return "\n".join(out)


def _summary(plan: Plan) -> str:
    """One sentence for the top of the screen: the whole restore at a glance."""
    parts = [f"erase {d.target.device}, write a {d.new_table.label} table" for d in plan.disks]
    n = len(plan.filesystems)
    parts.append(f"make {n} filesystem{'s' if n != 1 else ''}" + (f" and {len(plan.swaps)} swap" if plan.swaps else ""))
    total = sum(c.bytes for c in plan.copies)
    parts.append(f"copy {human(total)} from {len(plan.copies)} vault{'s' if len(plan.copies) != 1 else ''}")
    for m in (m for d in plan.disks for m in d.migrations):
        if m.change in ("grows", "shrinks") and not m.container:
            parts.append(f"{_name(m)} {m.change} to {human(m.new_size * m.sector_size)}")
    if any(s.kind == "bootloader" for s in plan.steps):
        parts.append("install grub")
    text = ", ".join(parts)
    warnings = len(plan.warnings) + len(plan.layout_warnings)
    return text + (f"; {warnings} warning{'s' if warnings != 1 else ''} below" if warnings else "")


def _table(plan: Plan, d: DiskPlan) -> list[str]:
    old, new, ss = d.old_table, d.new_table, d.old_table.sector_size
    kept = "label-id, PARTUUIDs and names kept" if new.label == "gpt" else "label-id kept"
    lines = [
        f"Partition table of {d.target.device}: {new.label} ({kept})" if plan.more
        else f"Partition table: {new.label} ({kept})",
        f"  label-id {new.label_id or '-'}",
        f"  {'#':>2} {'type':<11}{'old start':>10}{'size':>9}  {'new start':>10}{'size':>9}  holds",
    ]
    new_by_number = {p.number: p for p in new.partitions}
    holds = _holds(plan, d)
    for p in sorted(old.partitions, key=lambda p: p.number):
        q = new_by_number.get(p.number)
        row = (
            f"  {p.number:>2} {_clip(type_name(p.type), 10):<11}"
            f"{human(p.start * ss):>10}{human(p.size * ss):>9}  "
            f"{human(q.start * ss) if q else '-':>10}{human(q.size * ss) if q else '-':>9}  "
            f"{holds.get(p.number, '')}"
        )
        lines.append(_clip(row.rstrip()))
    disk_old = human(d.source.size)
    lines.append(f"  disk {disk_old} -> {human(d.target.size)}"
                 + (f"; last-lba {new.last_lba} (recomputed)" if new.last_lba else ""))
    return lines


def _holds(plan: Plan, d: DiskPlan) -> dict[int, str]:
    holds: dict[int, str] = {}
    arrays = {m: s.device for s in plan.steps if isinstance(s, MakeArray) for m in s.present}
    for f in _on(d, plan.filesystems):  # a PV's partition shows every LV on it
        holds[f.number] = ", ".join(filter(None, (holds.get(f.number), f"{f.mountpoint or '(not mounted)'} {f.fstype}")))
    for s in _on(d, plan.swaps):
        holds[s.number] = ", ".join(filter(None, (holds.get(s.number), "swap")))
    opened = {s.device: s.name for s in plan.steps if isinstance(s, OpenLuks)}
    on_array = {f.device: f"{f.mountpoint or '(not mounted)'} {f.fstype}" for f in plan.filesystems}
    on_array |= {s.device: "swap" for s in plan.swaps}
    for p in d.new_table.partitions:  # an md member shows its array, then what lies on it
        node = partition_path(d.target.device, p.number)
        array = arrays.get(node)
        if (array or node) in opened:  # a LUKS container shows the name it is opened as, then what lies in it
            holds[p.number] = f"LUKS {opened[array or node]}: {holds.get(p.number, '(nothing)')}"
        if array:
            holds[p.number] = f"{os.path.basename(array)}: {on_array.get(array) or holds.get(p.number, '(nothing)')}"
    for p in d.old_table.partitions:
        if is_extended(d.old_table, p):
            holds[p.number] = "(logicals)"
    return holds


def _on(d: DiskPlan, made: Sequence[NewFilesystem | NewSwap]) -> list[NewFilesystem | NewSwap]:
    """What the plan makes on this target's partitions (or on arrays and LVs shown on them)."""
    return [f for f in made if f.device == partition_path(d.target.device, f.number) or f.shown_on == d.target.device]


def _changes(plan: Plan, d: DiskPlan) -> list[str]:
    lines = [f"Changes on {d.target.device}" if plan.more else "Changes"]
    changed = [m for m in d.migrations if m.change in ("grows", "shrinks") and not m.container]
    moved = [m for m in d.migrations if m.change == "moves" and not m.container]
    if not changed and not moved:
        lines.append("  none: every partition keeps its start and size (the table is replayed)")
        return lines
    for m in changed:
        lines += _wrap(f"  {_name(m)} {m.change} from {human(m.old_size * m.sector_size)} "
                       f"to {human(m.new_size * m.sector_size)} ({_why(plan, d, m)})", indent="    ")
    for m in d.migrations:
        if m.container and m.change in ("grows", "shrinks"):
            lines += _wrap(f"  extended partition {m.number} {m.change} with it, to "
                           f"{human(m.new_size * m.sector_size)}", indent="    ")
    for m in moved:
        lines += _wrap(f"  {_name(m)} moves: starts at {human(m.new_start * m.sector_size)} instead of "
                       f"{human(m.old_start * m.sector_size)}, same size", indent="    ")
    return lines


def _why(plan: Plan, d: DiskPlan, m: Migration) -> str:
    """Why a partition changes size, in the words of the option that would change it."""
    opts = plan.options
    names = {m.mountpoint, str(m.number)} | ({"swap"} if m.fstype == "swap" else set())
    if any(where in names for where, _ in opts.sizes):
        return "as asked with --size"
    if opts.grow and opts.grow.strip() in names:
        return "as asked with --grow"
    restored = any(f.number == m.number and f.vault for f in _on(d, plan.filesystems))
    if m.change == "grows":
        if opts.grow:
            return "so that the partitions hold their needs"
        return "its share of the new space, by captured size; choose with --grow or --size"
    if restored:
        return "to fit the disk; it still holds its used bytes + 10 % + 64 MiB; choose with --size"
    return "to fit the disk: it is made empty; choose with --size"


def _name(m: Migration) -> str:
    if m.mountpoint:
        return m.mountpoint
    if m.fstype == "swap":
        return f"swap (partition {m.number})"
    return f"partition {m.number}"


def _filesystems(plan: Plan) -> list[str]:
    lines = ["Filesystems (made new; UUIDs and labels kept so fstab and grub still work)"]
    for f in plan.filesystems:
        label = f"label {f.label}" if f.label else "no label"
        lines.append(_clip(f"  {f.mountpoint or '(not mounted)':<12} {f.fstype:<6} {f.device:<16} "
                           f"{human(f.size):>9}  {label}"))
        if f.vault:
            files = f", {f.files:,} files" if f.files else ""
            fill = f"copy {human(f.copy_bytes or 0)}{files} from vault {f.vault} ({f.image})"
        elif f.esp:
            fill = "filled by the bootloader step"
        else:
            fill = "left empty"
        lines += _wrap(f"{'':15}UUID {f.uuid or 'new'}; {fill}", indent=" " * 15)
    if plan.swaps:
        lines.append("Swap (UUID and label kept)")
        for s in plan.swaps:
            lines.append(_clip(f"  {s.device:<16} {human(s.size):>9}  " + (f"label {s.label}" if s.label else "no label")))
            lines.append(f"{'':15}UUID {s.uuid or 'new'}")
    total = sum(c.bytes for c in plan.copies)
    lines.append(f"Data to copy: {human(total)} from {len(plan.copies)} "
                 f"vault{'s' if len(plan.copies) != 1 else ''}")
    return lines


def _clip(text: str, width: int = WIDTH) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _wrap(text: str, indent: str) -> list[str]:
    return textwrap.wrap(text, WIDTH, subsequent_indent=indent, break_on_hyphens=False) or [""]


__all__ = ["render_review", "type_name"]
