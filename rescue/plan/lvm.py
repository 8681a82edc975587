"""The LVM volume groups of a restore: which captured VGs come back, on which new devices.

Pure: the captured VGs (with their vgcfgbackup texts), where each PV's device went in, steps
and refusals out. A VG comes back whole or not at all: every PV must be restored (a VG
spanning a disk that is not restored is refused, never made partial).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from rescue.errors import PlanRefused
from rescue.layout.model import Filesystem, LvmLv, LvmVg
from rescue.steps.lvm import DeactivateVolumeGroups, MakeVolumeGroup, ThinPool, ThinVolume, dm_name

# what vgcfgrestore makes exactly; thin pools need their metadata made by hand (vgcfgrestore
# would leave them unusable: they are made again by lvcreate), caches and VDO need more than a text file
EXACT_SEGMENTS = frozenset({"linear", "striped", "mirror", "raid1", "raid4", "raid5", "raid6", "raid10"})
THIN = frozenset({"thin-pool", "thin"})


@dataclass(frozen=True)
class VolumeGroupsOnDisk:
    """The captured VGs whose PVs are all restored, and what lies on their LVs."""

    vgs: tuple[LvmVg, ...] = ()
    pv_devices: Mapping[str, str] = dataclasses.field(default_factory=dict)  # captured PV -> captured node under it
    filesystems: tuple[Filesystem, ...] = ()  # on an LV (swap too)

    def lv_of(self, device: str) -> tuple[LvmVg, LvmLv] | None:
        for vg in self.vgs:
            for lv in vg.lvs:
                if device in (lv.path, lv.dm_path, f"/dev/mapper/{dm_name(vg.name, lv.name)}"):
                    return vg, lv
        return None


def volume_groups_on_disk(vgs: Sequence[LvmVg], filesystems: Sequence[Filesystem],
                          restored: Callable[[str], bool]) -> VolumeGroupsOnDisk:
    """VGs with a PV on a restored device (`restored`: captured device -> restored here?).

    A VG with some PVs restored and some not is refused."""
    on: list[LvmVg] = []
    pvs: dict[str, str] = {}
    for vg in vgs:
        here = [pv for pv in vg.pvs if restored(pv.device)]
        if not here:
            continue
        missing = [pv.device for pv in vg.pvs if pv not in here]
        if missing:
            raise PlanRefused(
                f"LVM volume group {vg.name} also lies on {', '.join(missing)}, which this restore does not make",
                why="a volume group comes back whole or not at all: without those PVs its LVs would be partial",
                fix="restore the disks that hold all of its PVs together (each captured disk onto its own target)",
            )
        on.append(vg)
        pvs.update({pv.device: pv.device for pv in here})
    found = VolumeGroupsOnDisk(tuple(on), pvs)
    seen: set[str] = set()
    held = []
    for fs in filesystems:
        hit = found.lv_of(fs.device)
        if hit is None or fs.fstype == "LVM2_member":
            continue
        key = f"{hit[0].name}/{hit[1].name}"
        if key not in seen:  # a swap shows as /dev/dm-1 and as /dev/mapper/vg-swap: one is made
            seen.add(key)
            held.append(fs)
    return dataclasses.replace(found, filesystems=tuple(held))


@dataclass(frozen=True)
class LvmRestore:
    steps: tuple[MakeVolumeGroup, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def off(self) -> DeactivateVolumeGroups | None:
        return DeactivateVolumeGroups(tuple((s.name, s.devices) for s in self.steps)) if self.steps else None


def plan_volume_groups(found: VolumeGroupsOnDisk, new_device: Mapping[str, str],
                       configs: Mapping[str, str]) -> LvmRestore:
    """One MakeVolumeGroup per VG (`new_device`: captured PV device -> its new device;
    `configs`: VG name -> its vgcfgbackup text)."""
    steps = []
    warnings = []
    for vg in found.vgs:
        odd = sorted({lv.segtype for lv in vg.lvs if lv.segtype not in EXACT_SEGMENTS | THIN})
        if odd:
            names = ", ".join(f"{lv.name} ({lv.segtype})" for lv in vg.lvs
                              if lv.segtype not in EXACT_SEGMENTS | THIN)
            raise PlanRefused(
                f"volume group {vg.name} has LVs rescue does not make yet: {names}",
                why="rescue makes a volume group again from its vgcfgbackup (exact for linear, striped, mirror "
                    "and raid LVs) and thin pools by lvcreate; " + ", ".join(odd) + " LVs need their own metadata made",
                fix=f"restore {vg.name} by hand: pvcreate --uuid --restorefile and vgcfgrestore --force from "
                    f"lvm-vgcfgbackup-{vg.name}.txt, then make those LVs again with the recorded sizes",
            )
        text = configs.get(vg.name)
        if not text:
            raise PlanRefused(
                f"the vgcfgbackup of volume group {vg.name} was not captured",
                why="rescue makes a volume group again, with every UUID, from that text",
                fix="run rescue capture again on the machine (as the dirvish hook) and make a new backup",
            )
        pools = tuple(lv for lv in vg.lvs if lv.segtype == "thin-pool")
        thins = tuple(lv for lv in vg.lvs if lv.segtype == "thin")
        if pools:
            # the pool, its hidden data and metadata LVs, the spare metadata LV and the thin LVs
            # are left out of vgcfgrestore and made by lvcreate after it (empty, as mkfs wants them)
            gone = {lv.name for lv in (*pools, *thins)} | {n for lv in pools for n in (lv.data_lv, lv.metadata_lv) if n}
            gone |= {lv.name for lv in vg.lvs if lv.name.endswith("_pmspare")}
            text = without_lvs(text, gone)
            warnings.append(
                f"volume group {vg.name}: thin pool {', '.join(p.name for p in pools)} is made again by lvcreate "
                f"with its recorded data, metadata and chunk sizes; its thin LVs ({', '.join(t.name for t in thins) or 'none'}) "
                "get new LV UUIDs (lvcreate cannot set one); the filesystems on them keep theirs")
        steps.append(MakeVolumeGroup(
            name=vg.name, uuid=vg.uuid, pvs=tuple((new_device[pv.device], pv.uuid) for pv in vg.pvs),
            config=text, lvs=tuple(lv.name for lv in vg.lvs if lv.path),
            pools=tuple(ThinPool(p.name, p.size, p.metadata_size, p.chunk_size) for p in pools),
            thin=tuple(ThinVolume(t.name, t.pool or "", t.size) for t in thins),
        ))
    return LvmRestore(tuple(steps), tuple(warnings))


def without_lvs(config: str, names: set[str]) -> str:
    """The vgcfgbackup text with these LVs' sections taken out of `logical_volumes { }`.

    The text format nests `name { ... }` blocks; strings are in double quotes (never with a
    brace in a name rescue removes, but quoted braces are skipped all the same)."""
    out, keep_from = [], 0
    for name, start, end in _blocks(config, "logical_volumes"):
        if name not in names:
            continue
        out.append(config[keep_from:start])
        keep_from = config.find("\n", end - 1) + 1 or len(config)
        if config[keep_from:keep_from + 1] == "\n":  # the blank line between sections
            keep_from += 1
    out.append(config[keep_from:])
    return "".join(out)


# -- a volume group fitted onto a smaller PV ----------------------------------------------------

SWAP_FLOOR = 128 << 20  # a swap LV shrinks down to this (or its captured size, if smaller)


@dataclass(frozen=True)
class LvFit:
    """One LV's extents: at least `least` (its filesystem's used bytes + margin), `captured` as it was."""

    name: str
    captured: int
    least: int


def growable(vg: LvmVg) -> bool:
    """Whether this VG's one PV can be made bigger in its text (its LVs keep their places)."""
    return len(vg.pvs) == 1 and vg.pvs[0].pe_start is not None and bool(vg.config)


def fittable(vg: LvmVg) -> bool:
    """Whether rescue can lay this VG out anew on a smaller PV: one PV, linear LVs only (a thin
    pool, a mirror or raid LV keeps its captured places: its PV keeps its size)."""
    return (len(vg.pvs) == 1 and vg.pvs[0].pe_start is not None and bool(vg.lvs)
            and all(lv.segtype == "linear" and lv.path for lv in vg.lvs) and bool(vg.config))


def lv_fits(vg: LvmVg, filesystems: Sequence[Filesystem], needed: Callable[[int, str], int]) -> tuple[LvFit, ...]:
    """Each LV's captured and least extents: a filesystem's used bytes + margin (`needed`), a
    swap's SWAP_FLOOR; an LV whose filesystem or use is unknown keeps its size."""
    ext = vg.extent_size
    found = VolumeGroupsOnDisk((vg,))
    on: dict[str, Filesystem] = {}
    for fs in filesystems:
        hit = found.lv_of(fs.device)
        if hit is not None:
            on.setdefault(hit[1].name, fs)
    fits = []
    for lv in vg.lvs:
        captured = -(-lv.size // ext)
        fs = on.get(lv.name)
        if fs is not None and fs.fstype == "swap":
            least = min(captured, -(-SWAP_FLOOR // ext))
        elif fs is not None and fs.used is not None:
            least = min(captured, -(-needed(fs.used, fs.fstype) // ext))
        else:
            least = captured
        fits.append(LvFit(lv.name, captured, least))
    return tuple(fits)


def least_pv_bytes(vg: LvmVg, fits: Sequence[LvFit]) -> int:
    """The smallest PV (partition) that holds the VG fitted: its metadata area and each LV at least."""
    pv = vg.pvs[0]
    return (pv.pe_start or 0) + sum(f.least for f in fits) * vg.extent_size


def share_extents(fits: Sequence[LvFit], extents: int) -> dict[str, int]:
    """Each LV's extents on a PV of `extents`: the captured size where all fit, else at least its
    least and the rest shared in proportion to what each gave up (never above captured)."""
    if sum(f.captured for f in fits) <= extents:
        return {f.name: f.captured for f in fits}
    spare = extents - sum(f.least for f in fits)
    if spare < 0:
        raise ValueError("the PV is smaller than the LVs' least sizes")  # the table fit refused it first
    give = sum(f.captured - f.least for f in fits)
    sizes = {f.name: f.least + (spare * (f.captured - f.least) // give if give else 0) for f in fits}
    return sizes


def refit_config(config: str, extents: Mapping[str, int], pe_count: int, dev_size: int) -> str:
    """The vgcfgbackup text of a fittable VG with each LV `extents[name]` long, laid out one after
    another from the PV's first extent in the order they lay, and the PV `pe_count` extents on a
    device of `dev_size` bytes. UUIDs, names, flags and tags stay as captured."""
    blocks = _blocks(config, "logical_volumes")
    firsts = {name: _first_extent(config[a:b]) for name, a, b in blocks}
    at, place = 0, {}
    for name in sorted((n for n, _, _ in blocks), key=lambda n: firsts[n]):
        place[name] = at
        at += extents[name]
    if at > pe_count:
        raise ValueError(f"{at} extents of LVs on a PV of {pe_count}")
    out, last = [], 0
    for name, a, b in blocks:
        out.append(config[last:a])
        out.append(_one_segment(config[a:b], extents[name], place[name]))
        last = b
    return resized_pv_config("".join(out) + config[last:], pe_count, dev_size)


def resized_pv_config(config: str, pe_count: int, dev_size: int) -> str:
    """The vgcfgbackup text of a one-PV VG with the PV `pe_count` extents on `dev_size` bytes:
    every LV keeps its extents and places, the new ones are free."""
    text = re.sub(r"(\n\s*pe_count = )\d+[^\n]*", rf"\g<1>{pe_count}", config, count=1)
    return re.sub(r"(\n\s*dev_size = )\d+[^\n]*", rf"\g<1>{dev_size // 512}", text, count=1)


def _blocks(config: str, section: str) -> list[tuple[str, int, int]]:
    """(name, start, end) of each `name { ... }` block directly inside `section { }`."""
    start = config.find(f"{section} {{")
    if start < 0:
        return []
    i = config.index("{", start) + 1
    depth, quoted, found, opened = 1, False, [], None
    while i < len(config) and depth > 0:
        ch = config[i]
        if ch == '"' and config[i - 1] != "\\":
            quoted = not quoted
        elif not quoted and ch == "{":
            if depth == 1:
                line = config.rfind("\n", 0, i) + 1
                opened = (config[line:i].strip(), line)
            depth += 1
        elif not quoted and ch == "}":
            depth -= 1
            if depth == 1 and opened:
                found.append((opened[0], opened[1], i + 1))
                opened = None
        i += 1
    return found


def _first_extent(block: str) -> int:
    m = re.search(r'stripes = \[\s*"[^"]*",\s*(\d+)', block)
    return int(m.group(1)) if m else 0


def _one_segment(block: str, extents: int, first: int) -> str:
    """An LV block with its segments replaced by one linear segment on pv0 from `first`."""
    head = block[:block.index("segment_count")]
    indent = head[head.rfind("\n") + 1:]
    inner = indent + "\t"
    pv = re.search(r'stripes = \[\s*"([^"]*)"', block)
    return (f"{head}segment_count = 1\n\n{indent}segment1 {{\n{inner}start_extent = 0\n"
            f"{inner}extent_count = {extents}\n\n{inner}type = \"striped\"\n{inner}stripe_count = 1\t# linear\n\n"
            f"{inner}stripes = [\n{inner}\t\"{pv.group(1) if pv else 'pv0'}\", {first}\n{inner}]\n{indent}}}\n"
            f"{indent[:-1]}}}")
