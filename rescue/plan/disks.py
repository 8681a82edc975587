"""Which captured disk goes onto which target: `--target OLD=NEW`, or automatic.

A machine with several disks is restored onto several targets in one go. Each
captured disk with a partition table is either mapped to exactly one target or
left out by name (`--skip-disk OLD`); anything else is refused before planning,
so no disk is written on a guess.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rescue.errors import PlanRefused
from rescue.formats.units import human
from rescue.layout.model import Disk, DiskIdentity, Layout


@dataclass(frozen=True)
class TargetSpec:
    """One `--target` as the person wrote it: NEW alone, or OLD=NEW."""

    new: str
    old: str | None = None

    @classmethod
    def parse(cls, text: str) -> TargetSpec:
        """'/dev/sdc' or '/dev/sdb=/dev/sdc' (OLD may be a by-id name or a serial)."""
        old, sep, new = text.strip().rpartition("=")
        if not new or (sep and not old):
            raise PlanRefused(
                f"--target {text!r} names no disk",
                why="--target takes the new disk (NEW), or the captured disk and its new disk (OLD=NEW)",
                fix="write e.g. --target /dev/sdc, or --target /dev/sdb=/dev/sdc for each captured disk",
            )
        return cls(new=new, old=old or None)


@dataclass(frozen=True)
class DiskPair:
    """A captured disk and the target that replaces it."""

    old: Disk
    new: str  # the target's device, as named in --target


@dataclass(frozen=True)
class CapturedDisk:
    """A captured disk with a partition table as a person picks its new disk: what it was and held."""

    device: str
    size: int
    model: str | None = None
    serial: str | None = None
    mountpoints: tuple[str, ...] = ()  # what was mounted from it (through its arrays and VGs too)
    whole: bool = False  # alone it holds the whole machine (a mirror's half): the others may be left out

    def shown(self) -> str:
        """'/dev/sdb (8 GiB, WD-XYZ: /srv)', as the wizard asks for its new disk."""
        what = ", ".join(x for x in (human(self.size), self.serial or self.model) if x)
        held = " ".join(self.mountpoints) or "no mounted filesystems"
        return f"{self.device} ({what}: {held})"


@dataclass(frozen=True)
class DiskMap:
    pairs: tuple[DiskPair, ...]
    skipped: tuple[Disk, ...] = ()  # captured disks the person left out


def names_of(disk: Disk, layout: Layout) -> tuple[str, ...]:
    """Every name OLD may use for a captured disk: its device, by-id names, serial and WWN."""
    names = [disk.device]
    ident = _identity(disk, layout)
    if ident is not None:
        for by_id in ident.by_id:
            names += [by_id, by_id.rsplit("/", 1)[-1]]
        names += [n for n in (ident.serial, ident.wwn) if n]
    if disk.serial:
        names.append(disk.serial)
    return tuple(dict.fromkeys(names))


def _identity(disk: Disk, layout: Layout) -> DiskIdentity | None:
    if layout.layers is None:
        return None
    return next((d for d in layout.layers.disks if d.device == disk.device), None)


def map_disks(layout: Layout, targets: Sequence[TargetSpec], skip: Sequence[str] = (),
              describe: Callable[[Disk], str] | None = None) -> DiskMap:
    """Pair each captured disk that has a table with one target, or refuse and say why.

    Automatic only when it cannot be wrong: one captured disk with a table and one
    target. Every other captured disk must be mapped or left out with --skip-disk.
    `describe` shows a captured disk in a refusal (default: its device and size)."""
    disks = [d for d in layout.disks if d.table is not None]
    if not disks:
        raise PlanRefused(
            f"the layout captured for {layout.client} holds no partition table",
            why="rescue rebuilds each disk from its captured sfdisk dump",
            fix="run rescue capture as the dirvish post-server hook; see scripts/dirvish-master.conf.example",
        )
    shown = ", ".join(describe(d) if describe else f"{d.device} ({human(d.size)})" for d in disks)
    if not targets:
        raise PlanRefused("no target disk was named", why="rescue writes only to a disk named for it",
                          fix="name it with --target NEW (one disk) or --target OLD=NEW per captured disk")
    _refuse_twice([t.new for t in targets], "target", "each target receives one captured disk")
    skipped = [_find(layout, disks, name, "--skip-disk", shown) for name in skip]
    plain = [t for t in targets if t.old is None]
    if plain and len(targets) > 1:
        raise PlanRefused(
            f"--target {plain[0].new} does not say which captured disk it replaces",
            why="with several targets each one must name its captured disk",
            fix=f"write --target OLD={plain[0].new}; the captured disks are {shown}",
        )
    left = [d for d in disks if d not in skipped]
    if plain:
        if len(left) != 1:
            raise PlanRefused(
                f"{layout.client} had {len(disks)} disks with a partition table: {shown}",
                why=f"rescue cannot tell which of them {plain[0].new} replaces",
                fix="name each with --target OLD=NEW (OLD: the captured device, its by-id name or serial), "
                    "and leave out a disk you do not restore with --skip-disk OLD",
            )
        return DiskMap(pairs=(DiskPair(left[0], plain[0].new),), skipped=tuple(skipped))
    pairs = [DiskPair(_find(layout, disks, t.old or "", "--target", shown), t.new) for t in targets]
    _refuse_twice([p.old.device for p in pairs], "captured disk", "a captured disk goes onto one target")
    both = [p.old.device for p in pairs if p.old in skipped]
    if both:
        raise PlanRefused(f"{both[0]} is both mapped with --target and left out with --skip-disk",
                          why="a disk is either restored or left out", fix="drop one of the two")
    unmapped = [d for d in left if all(p.old != d for p in pairs)]
    if unmapped:
        names = ", ".join(f"{d.device} ({human(d.size)})" for d in unmapped)
        raise PlanRefused(
            f"no target for the captured disk(s) {names}",
            why="every captured disk is restored onto a target or left out on purpose; "
                "its filesystems would otherwise be lost without a word",
            fix="add --target OLD=NEW for it, or leave it out with --skip-disk OLD "
                "(its vaults are then not restored)",
        )
    order = {d.device: i for i, d in enumerate(disks)}
    return DiskMap(pairs=tuple(sorted(pairs, key=lambda p: order[p.old.device])), skipped=tuple(skipped))


def _find(layout: Layout, disks: Sequence[Disk], name: str, option: str, shown: str) -> Disk:
    """The captured disk `name` means: its device, a by-id name or a serial."""
    found = [d for d in disks if name in names_of(d, layout)]
    if len(found) == 1:
        return found[0]
    if found:
        raise PlanRefused(f"{option} {name} matches several captured disks: "
                          + ", ".join(d.device for d in found),
                          why="a serial or by-id name must pick one disk", fix="name the captured device instead")
    raise PlanRefused(
        f"{option} {name} is not a captured disk of {layout.client}",
        why=f"the captured disks are {shown}",
        fix="name one by its captured device (/dev/sdb), its /dev/disk/by-id name or its serial",
    )


def _refuse_twice(names: Sequence[str], what: str, why: str) -> None:
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise PlanRefused(f"the {what} {twice[0]} is named twice", why=why,
                          fix="name each disk once")
