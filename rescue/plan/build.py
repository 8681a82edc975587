"""build_plan: captured layout + chosen images + target facts -> a complete Plan.

A pure function: it reads nothing and writes nothing, so every decision can be
tested without root and shown to a person before any byte is written.
Refusals come first and say what is wrong and what to do.
"""

from __future__ import annotations

import dataclasses
import posixpath
from collections.abc import Sequence

from rescue.formats.units import human
from rescue.backups.model import Image, ImageStatus
from rescue.devices import disk_of, partition_path
from rescue.errors import PlanRefused
from rescue.layout.model import (
    BootMode,
    BtrfsMount,
    BtrfsVolume,
    Disk,
    Filesystem,
    Layout,
    LvmVg,
    MdArray,
    PartitionTable,
    Subvolume,
)
from rescue.plan.lvm import (
    VolumeGroupsOnDisk,
    fittable,
    growable,
    least_pv_bytes,
    lv_fits,
    plan_volume_groups,
    refit_config,
    resized_pv_config,
    share_extents,
    volume_groups_on_disk,
)
from rescue.plan.luks import ContainersOnDisk, containers_on_disk, open_name, plan_containers
from rescue.plan.md import ArraysOnDisk, arrays_on_disk, plan_arrays
from rescue.plan.migrate import (
    FS_MIN_BYTES,
    GIB,
    MIB,
    Need,
    Role,
    is_extended,
    migrate_table,
    needed_bytes,
)
from rescue.plan.disks import CapturedDisk, TargetSpec, map_disks, names_of
from rescue.plan.model import DiskPlan, NewFilesystem, NewSwap, Plan, PlanOptions
from rescue.safety import check_target
from rescue.steps import (
    CopyTree,
    Fixups,
    InstallBootloader,
    MakeFilesystem,
    MakeSwap,
    MountFilesystem,
    Step,
    UnmountAll,
    Verify,
    WipeSignatures,
    WritePartitionTable,
)
from rescue.steps.lvm import dm_name
from rescue.steps.subvolumes import MakeReadOnly, MakeSubvolumes
from rescue.target import TargetDisk

SUPPORTED_FSTYPES = ("ext2", "ext3", "ext4", "xfs", "btrfs", "vfat")
ESP_TYPES = frozenset({"c12a7328-f81f-11d2-ba4b-00a0c93ec93b", "ef"})
HOOK_HINT = "run rescue capture as the dirvish post-server hook; see scripts/dirvish-master.conf.example"


def build_plan(
    layout: Layout | None,
    images: Sequence[Image],
    target: TargetDisk | Sequence[TargetDisk],
    options: PlanOptions = PlanOptions(),
) -> Plan:
    """The whole restore as ordered steps, or a refusal (PlanRefused / UnsafeTarget).

    `target` is one disk, or one per `options.disk_map` entry (in its order) for a machine
    with several. Its phases, in order: refusals that need no planning; which captured disk
    goes onto which target; per target what is restored there, its new partition table and
    the filesystems and swap on it; the steps."""
    targets = (target,) if isinstance(target, TargetDisk) else tuple(target)
    layout = _refuse_before_planning(layout, images, targets)
    warnings: list[str] = [
        f"vault {i.vault} image {i.name}: {i.status_text.strip()} (files deleted while the backup ran are missing)"
        for i in images if i.status is ImageStatus.WARNING
    ]
    pairs = _disk_pairs(layout, targets, options, warnings)
    parts: list[_DiskPart] = []
    for disk, t in pairs:  # what lies on a mirror or a VG of several disks is made once, by the first
        taken = {f.captured_device for p in parts for f in (*p.filesystems, *p.swaps) if f.captured_device}
        parts.append(_plan_disk(layout, disk, [d for d, _ in pairs if d is not disk], images, t, options,
                                warnings, taken))
    mount_order, copies, steps = _steps(parts, options, warnings)
    if layout.source == "legacy":
        warnings.append(
            "this layout comes from the old df/sfdisk files: filesystem types, UUIDs and labels "
            "may be guesses; check them below"
        )
    first = parts[0]
    return Plan(
        client=layout.client,
        images=tuple(images),
        target=first.target,
        source=first.src.disk,
        old_table=first.src.table,
        new_table=first.table.table,
        migrations=first.table.migrations,
        filesystems=tuple(f for part in parts for f in part.filesystems),
        swaps=tuple(s for part in parts for s in part.swaps),
        mount_order=mount_order,
        copies=copies,
        destroyed=destroyed(first.target),
        warnings=tuple(dict.fromkeys(warnings)),  # a vault's note is made once per target
        steps=steps,
        options=options,
        captured_at=layout.captured_at,
        layout_warnings=layout.warnings,
        more=tuple(DiskPlan(target=p.target, source=p.src.disk, old_table=p.src.table, new_table=p.table.table,
                            migrations=p.table.migrations, destroyed=destroyed(p.target)) for p in parts[1:]),
        snapshots=_snapshot_paths(layout, [f for part in parts for f in part.filesystems]),
    )


def _disk_pairs(layout: Layout, targets: Sequence[TargetDisk], options: PlanOptions,
                warnings: list[str]) -> list[tuple[Disk, TargetDisk]]:
    """Each captured disk to restore with its target, in captured order (rescue.plan.disks decides).

    One target for a machine of mirrored disks, each holding all of it: the one grub was on is
    restored (its arrays come back degraded, to be completed by adding a disk later)."""
    if options.disk_map:
        if len(options.disk_map) != len(targets):
            raise ValueError("build_plan wants one target per disk_map entry, in its order")
        specs = [TargetSpec(old=old or None, new=t.device) for (old, _), t in zip(options.disk_map, targets)]
    elif options.source_disk:  # the older way: this captured disk only, the others left out
        specs = [TargetSpec(old=options.source_disk, new=targets[0].device)]
    else:
        specs = [TargetSpec(new=t.device) for t in targets]
    skip = options.skip_disks
    mirrored = _mirrored_choice(layout, targets, options)
    if mirrored is not None:
        chosen_disk, rest = mirrored
        warnings.append(
            f"{layout.client} had {len(rest) + 1} disks, each holding the whole machine (with one member of each "
            f"mirror): {chosen_disk.device} is restored onto {targets[0].device}, {', '.join(rest)} not; name "
            "another with --source-disk, or give each its own disk with --target OLD=NEW")
        skip = (*skip, *rest)
    def describe(d: Disk) -> str:
        return f"{d.device} ({human(d.size)}: {' '.join(_mountpoints_on(layout, d)) or 'no mounted filesystems'})"

    if options.source_disk and not options.disk_map:
        chosen = map_disks(layout, specs, skip=[d.device for d in layout.disks if d.table is not None
                                                and options.source_disk not in names_of(d, layout)],
                           describe=describe)
    else:
        chosen = map_disks(layout, specs, skip=skip, describe=describe)
    by_device = {t.device: t for t in targets}
    return [(pair.old, by_device[pair.new]) for pair in chosen.pairs]


def captured_disks(layout: Layout) -> tuple[CapturedDisk, ...]:
    """The captured disks with a partition table, each a disk the restore maps to a target or leaves out."""
    out = []
    for d in layout.disks:
        if d.table is None:
            continue
        ident = next((i for i in layout.layers.disks if i.device == d.device), None) if layout.layers else None
        out.append(CapturedDisk(device=d.device, size=d.size, model=d.model or (ident.model if ident else None),
                                serial=d.serial or (ident.serial if ident else None),
                                mountpoints=_mountpoints_on(layout, d), whole=_carries_everything(layout, d)))
    return tuple(out)


def _mirrored_choice(layout: Layout, targets: Sequence[TargetDisk],
                     options: PlanOptions) -> tuple[Disk, list[str]] | None:
    """(disk restored, disks left out) when one target replaces mirrored disks, else None."""
    if options.disk_map or options.source_disk or len(targets) != 1:
        return None
    disks = [d for d in layout.disks if d.table is not None and d.device not in options.skip_disks]
    whole = [d for d in disks if _carries_everything(layout, d)] if len(disks) > 1 else []
    if not whole:
        return None
    chosen = next((d for d in whole if d.device == layout.boot.grub_disk), whole[0])
    return chosen, [d.device for d in disks if d is not chosen]


@dataclasses.dataclass(frozen=True)
class _DiskPart:
    """One target's share of the restore: the captured disk it replaces, what goes there, its table."""

    src: _Captured
    what: _Restored
    target: TargetDisk
    table: _NewTable
    filesystems: list[NewFilesystem]
    swaps: tuple[NewSwap, ...]


def _plan_disk(layout: Layout, disk: Disk, others: Sequence[Disk], images: Sequence[Image], target: TargetDisk,
               options: PlanOptions, warnings: list[str], taken: set[str] = frozenset()) -> _DiskPart:
    """One captured disk onto its target: what is restored there, the new table, the filesystems on it.

    `others` are the captured disks restored onto the other targets: their vaults are theirs.
    `taken`: captured devices on a mirror or VG an earlier target's part makes already."""
    src = _captured_disk(layout, disk, target)
    options = _options_for(src, options, several=bool(others))
    elsewhere = {mp for d in others for mp in _mountpoints_on(layout, d)}
    what = _what_is_restored(src, images, options, elsewhere, warnings, others, taken)
    table = _new_table(src, what, target, options, warnings)
    new_filesystems, new_swaps = _new_filesystems(src, what, table, target, warnings)
    return _DiskPart(src=src, what=what, target=target, table=table, filesystems=new_filesystems, swaps=new_swaps)


def _options_for(src: _Captured, options: PlanOptions, several: bool) -> PlanOptions:
    """With several targets, --grow and --size name mount points, each applied on the disk holding it."""
    if not several:
        return options
    named = [w for w in (options.grow, *(w for w, _ in options.sizes)) if w]
    loose = [w for w in named if not w.startswith("/")]
    if loose:
        raise PlanRefused(
            f"--grow/--size {loose[0]} names a partition by number or as swap, but there are several targets",
            why="a partition number or 'swap' does not say which disk it means",
            fix="name the partition by its mount point (/srv), which says its disk",
        )
    mine = set(_mountpoints_on(src.layout, src.disk))
    return dataclasses.replace(
        options,
        grow=options.grow if options.grow and posixpath.normpath(options.grow) in mine else None,
        sizes=tuple((w, n) for w, n in options.sizes if posixpath.normpath(w) in mine),
    )


@dataclasses.dataclass(frozen=True)
class _Captured:
    """The captured disk whose table is replayed, and how its partitions are numbered."""

    layout: Layout
    disk: Disk
    table: PartitionTable
    sector_size: int
    number_of: dict[str, int]

    def number(self, fs: Filesystem) -> int | None:
        return _number(fs, self.number_of, self.disk, self.table)


@dataclasses.dataclass(frozen=True)
class _Restored:
    """What goes where: the filesystems made anew, the swaps, and the image each one is filled from."""

    on_disk: list[Filesystem]
    filesystems: list[Filesystem]
    swaps: list[_SwapPart]
    copies_for: dict[str, Image]
    esp_numbers: set[int | None]
    md: ArraysOnDisk = ArraysOnDisk()  # arrays with members on this disk, and the filesystems on them
    lvm: VolumeGroupsOnDisk = VolumeGroupsOnDisk()  # VGs on this disk's partitions or arrays, and theirs
    luks: ContainersOnDisk = ContainersOnDisk()  # LUKS on this disk's partitions or arrays, and what they hold


@dataclasses.dataclass(frozen=True)
class _NewTable:
    table: PartitionTable
    migrations: tuple
    new_size: dict[int, int]  # bytes of each partition on the target
    # VGs laid out anew on a smaller PV: name -> (extents of each LV, PV extents, PV bytes)
    vg_fits: dict[str, tuple[dict[str, int], int, int]] = dataclasses.field(default_factory=dict)


def _refuse_before_planning(layout: Layout | None, images: Sequence[Image],
                            targets: Sequence[TargetDisk]) -> Layout:
    """The refusals that need no planning: an unsafe target (any of them), unusable images, no layout."""
    for target in targets:
        refuse_unsafe(target)
    _refuse_unusable_images(images)
    if layout is None:
        raise PlanRefused(
            "no disk layout was captured for this machine",
            why="without the captured partition table and filesystems rescue cannot rebuild the disk",
            fix=HOOK_HINT + ", and make a new backup",
        )
    return layout


@dataclasses.dataclass(frozen=True)
class _BtrfsRestore:
    """How btrfs subvolumes come back: the steps that make them, and the mounts that use them."""

    steps: tuple[Step, ...] = ()
    options: dict[str, str] = dataclasses.field(default_factory=dict)  # mount point -> "subvol=@home"
    mounts: dict[str, NewFilesystem] = dataclasses.field(default_factory=dict)  # subvolume mount -> its btrfs
    inside: tuple[str, ...] = ()  # subvolumes seen inside a mounted one (/var/lib/machines): filled, not mounted
    readonly: tuple[Step, ...] = ()  # restored read-only snapshots, made read-only after the copies
    left_out: tuple[str, ...] = ()  # where the machine showed snapshots left out whose files a tree holds: copied empty


def _btrfs_volume(layout: Layout, fs: Filesystem) -> BtrfsVolume | None:
    """The captured btrfs of `fs` when it is mounted by subvolume (or has a default subvolume)."""
    if fs.fstype != "btrfs":
        return None
    for vol in layout.btrfs:
        if (vol.uuid and vol.uuid == fs.uuid) or vol.device == fs.device:
            if vol.default_id != 5 or any(_subvol_of(vol, m) for m in vol.mounts):
                return vol
    return None


def _subvol_of(vol: BtrfsVolume, m: BtrfsMount) -> str | None:
    """The path of the subvolume a mount uses ("@home"), None: the top level or the default."""
    if m.subvol is not None:
        return m.subvol.strip("/") or None
    if m.subvolid is not None and m.subvolid != 5:
        return next((s.path for s in vol.subvolumes if s.id == m.subvolid), None)
    return None


def _subvolume_targets(layout: Layout, filesystems: Sequence[Filesystem]) -> dict[str, Filesystem]:
    """Mount points of subvolumes (/home from @home) that lie on one of `filesystems`
    but are not that filesystem's own mount point."""
    own = {fs.mountpoint for fs in layout.filesystems if fs.mountpoint}
    found: dict[str, Filesystem] = {}
    for fs in filesystems:
        vol = _btrfs_volume(layout, fs)
        if vol is None:
            continue
        for m in vol.mounts:
            if m.mounted and m.target not in own:
                found[m.target] = fs
        for sv in vol.subvolumes:  # a subvolume seen inside another (/var/lib/machines): a vault may hold it
            if sv.seen_at and not sv.snapshot and not sv.mounted and sv.seen_at not in own:
                found.setdefault(sv.seen_at, fs)
    return found


def _btrfs_subvolumes(layout: Layout, new_filesystems: Sequence[NewFilesystem], warnings: list[str],
                      choice: str = "leave-out", copies_for: dict[str, Image] | None = None) -> _BtrfsRestore:
    """Subvolumes made at their paths (parents first), the default set by path, nocow folders
    marked, and each subvolume mounted as it was. Snapshots as `choice` says: left out (listed),
    or made as subvolumes the copy fills when a vault's tree holds their files (read-only again
    after the copy when they were)."""
    steps: list[Step] = []
    readonly: list[Step] = []
    options: dict[str, str] = {}
    mounts: dict[str, NewFilesystem] = {}
    inside: list[str] = []
    left_out: list[str] = []
    own = {fs.mountpoint for fs in layout.filesystems if fs.mountpoint}
    for nf in new_filesystems:
        fs = next((f for f in layout.filesystems if f.device == nf.captured_device and f.mountpoint == nf.mountpoint), None)
        vol = _btrfs_volume(layout, fs) if fs is not None else None
        if vol is None:
            continue
        by_id = {s.id: s for s in vol.subvolumes}
        default = by_id[vol.default_id].path if vol.default_id in by_id else None
        snaps = [s for s in vol.subvolumes if s.snapshot and s.path != default]
        held = {s.path: _snapshot_source(s, copies_for or {}) for s in snaps}
        restored = [s for s in snaps if choice == "restore" and held[s.path][0] is not None]
        gone = [s.path for s in snaps if s not in restored]
        # a snapshot inside one left out goes with it (its folder is not made)
        restored = [s for s in restored if not any(s.path.startswith(p + "/") for p in gone)]
        gone = [s.path for s in snaps if s not in restored]
        kept = [s.path for s in vol.subvolumes
                if s.path not in gone and not any(s.path.startswith(p + "/") for p in gone)]
        where = f"btrfs snapshots on {nf.device} ({nf.mountpoint})"
        if restored:
            warnings.append(f"{where} restored as subvolumes holding their data: "
                            + ", ".join(f"{s.path}{' (read-only)' if s.readonly else ''}" for s in restored))
        if gone and choice == "restore":
            warnings.append(f"{where} left out, their files are in no vault: "
                            + ", ".join(f"{p} ({held[p][1]})" for p in gone))
        elif gone:
            warnings.append(f"{where} left out (as chosen): {', '.join(gone)} (the subvolumes they were taken "
                            "from are restored; --btrfs-snapshots restore makes those whose files a vault holds)")
        left_out += [s.seen_at for s in snaps if s.path in gone and s.seen_at and held[s.path][0] is not None]
        for m in vol.mounts:
            if m.fstab_options and any(o.startswith("subvolid=") and o != "subvolid=5"
                                       for o in m.fstab_options.split(",")):
                warnings.append(
                    f"fstab mounts {m.target} by subvolume id ({m.fstab_options}): the restored subvolumes get "
                    f"new ids, so that fstab line must name subvol={_subvol_of(vol, m) or '?'} instead "
                    "(fix it in the restored /etc/fstab)"
                )
            if not m.mounted:
                continue
            subvol = _subvol_of(vol, m)
            if m.target == nf.mountpoint or m.target not in own:
                if subvol:
                    options[m.target] = f"subvol={subvol}"
                elif m.subvolid == 5 and default:
                    options[m.target] = "subvolid=5"
                if m.target != nf.mountpoint:
                    mounts[m.target] = nf
        inside += [sv.seen_at for sv in vol.subvolumes
                   if sv.seen_at and sv.path in kept and not sv.mounted and sv.seen_at not in own]
        nocow = tuple(_top_level_path(vol, p, default) for p in vol.nocow
                      if not any(_top_level_path(vol, p, default).startswith(g + "/") for g in gone))
        steps.append(MakeSubvolumes(device=nf.device, subvolumes=tuple(sorted(kept, key=lambda p: (p.count("/"), p))),
                                    default=default, nocow=nocow))
        ro = tuple(s.path for s in restored if s.readonly)
        if ro:
            readonly.append(MakeReadOnly(device=nf.device, subvolumes=ro))
    return _BtrfsRestore(steps=tuple(steps), options=options, mounts=mounts, inside=tuple(inside),
                         readonly=tuple(readonly), left_out=tuple(left_out))


def _snapshot_paths(layout: Layout, new_filesystems: Sequence[NewFilesystem]) -> tuple[str, ...]:
    """The snapshots of the btrfs filesystems restored (not a default subvolume): what
    --btrfs-snapshots decides about, so the review shows that choice only when there are some."""
    out: list[str] = []
    for nf in new_filesystems:
        fs = next((f for f in layout.filesystems if f.device == nf.captured_device and f.mountpoint == nf.mountpoint), None)
        vol = _btrfs_volume(layout, fs) if fs is not None else None
        if vol is not None:
            out += [s.path for s in vol.subvolumes if s.snapshot and s.id != vol.default_id]
    return tuple(out)


def _snapshot_source(sv: Subvolume, copies_for: dict[str, Image]) -> tuple[Image | None, str]:
    """The image whose tree holds a snapshot's files (None when none does), and what to say.

    The machine shows it at seen_at; the copy of the nearest mount point above fills that
    folder. A vault that stays on one filesystem (dirvish's xdev) holds it empty."""
    if not sv.seen_at:
        return None, "the machine showed it nowhere"
    above = [mp for mp in copies_for if mp == sv.seen_at or _below(sv.seen_at, mp)]
    if not above:
        return None, f"no vault holds {sv.seen_at}"
    mp = max(above, key=len)
    image = copies_for[mp]
    folder = image.tree / posixpath.relpath(sv.seen_at, mp)
    try:
        holds = folder.is_dir() and any(folder.iterdir())
    except OSError:
        holds = False
    if not holds:
        return None, f"its folder {sv.seen_at} is empty in vault {image.vault}"
    return image, f"vault {image.vault}"


def _top_level_path(vol: BtrfsVolume, path: str, default: str | None) -> str:
    """Where a folder of the machine (/srv/vm) lies from the btrfs's top level (@/srv/vm):
    under the subvolume mounted at the nearest mount point above it."""
    best: BtrfsMount | None = None
    for m in vol.mounts:
        if m.mounted and (path == m.target or _below(path, m.target)) and (best is None or len(m.target) > len(best.target)):
            best = m
    base = (_subvol_of(vol, best) if best else None) or (default if best is None or best.subvolid != 5 else None)
    rel = path[len(best.target):] if best else path
    return posixpath.join(base or "", rel.strip("/")) or "."


def _count_subvolume_vaults(layout: Layout, filesystems: Sequence[Filesystem], copies_for: dict[str, Image],
                            needs: dict[int, Need], number_of: dict[str, int], disk: Disk,
                            table: PartitionTable) -> None:
    """A btrfs holds the vaults of all its subvolume mounts (/ and /home on one partition):
    when df's used bytes were not captured, its need is what they all counted."""
    for target, fs in _subvolume_targets(layout, filesystems).items():
        n = _number(fs, number_of, disk, table)
        image = copies_for.get(target)
        if n is None or image is None or image.size is None or fs.used is not None:
            continue
        need = needs[n]
        used = (_used(fs, copies_for.get(fs.mountpoint or "")) or 0) if need.role is Role.DATA else 0
        extra = sum(i.size or 0 for t, f in _subvolume_targets(layout, filesystems).items()
                    if f is fs and (i := copies_for.get(t)) is not None)
        needs[n] = dataclasses.replace(need, minimum=needed_bytes(used + extra, fs.fstype), role=Role.DATA,
                                    floor=FS_MIN_BYTES.get(fs.fstype, 0))


def _subvolume_copy_bytes(mp: str, by_mount: dict[str | None, NewFilesystem], copies_for: dict[str, Image]) -> int:
    if mp in by_mount:
        return by_mount[mp].copy_bytes or 0
    return copies_for[mp].size or 0


def _captured_disk(layout: Layout, disk: Disk, target: TargetDisk) -> _Captured:
    """The captured disk to replay; its sectors must be the target's."""
    table = disk.table
    assert table is not None  # map_disks only pairs disks with a table
    ss = table.sector_size or disk.sector_size
    if ss != target.sector_size:
        raise PlanRefused(
            f"{target.device} has {target.sector_size}-byte sectors; the captured disk "
            f"{disk.device} had {ss}-byte sectors",
            why="the captured partition table is written in sectors and rescue does not convert it",
            fix=f"restore onto a disk with {ss}-byte sectors",
        )
    return _Captured(layout=layout, disk=disk, table=table, sector_size=ss, number_of=_partition_numbers(table))


def _what_is_restored(src: _Captured, images: Sequence[Image], options: PlanOptions, elsewhere: set[str],
                      warnings: list[str], others: Sequence[Disk] = (), taken: set[str] = frozenset()) -> _Restored:
    layout, disk, table, number_of = src.layout, src.disk, src.table, src.number_of
    md = _arrays(src)
    luks = _containers(src, md)
    lvm = _volume_groups(src, md, others, luks)
    md = dataclasses.replace(md, filesystems=tuple(fs for fs in md.filesystems if fs.device not in taken))
    lvm = dataclasses.replace(lvm, filesystems=tuple(fs for fs in lvm.filesystems if fs.device not in taken))
    # an array's member, a container and a PV are made by their layer; any other member signature stays a refusal
    members = set(md.members) | set(lvm.pv_devices) | set(luks.devices)
    on_disk = [fs for fs in layout.filesystems if src.number(fs) is not None and fs.device not in members]
    swaps = _swaps(layout, on_disk, number_of, disk, table)
    made = _override_fstypes([fs for fs in [*on_disk, *md.filesystems, *lvm.filesystems, *luks.filesystems]
                              if fs.fstype != "swap"],
                             options, layout, warnings)
    _refuse_unsupported(made, disk)
    copies_for = _map_vaults(layout, images, options, disk, made, elsewhere, warnings)
    filesystems = [fs for fs in made if md.array_of(fs.device) is None and lvm.lv_of(fs.device) is None
                   and luks.container_of(fs.device) is None]
    luks = dataclasses.replace(luks, filesystems=(*(fs for fs in made if luks.container_of(fs.device)),
                                                  *(fs for fs in luks.filesystems if fs.fstype == "swap")))
    md = dataclasses.replace(md, filesystems=(*(fs for fs in made if md.array_of(fs.device)),
                                              *(fs for fs in md.filesystems if fs.fstype == "swap")))
    lvm = dataclasses.replace(lvm, filesystems=(*(fs for fs in made if lvm.lv_of(fs.device)),
                                                *(fs for fs in lvm.filesystems if fs.fstype == "swap")))
    esp_numbers = {src.number(fs) for fs in filesystems if _is_esp(fs, layout, table, number_of, disk)}
    return _Restored(on_disk=on_disk, filesystems=filesystems, swaps=swaps, copies_for=copies_for,
                     esp_numbers=esp_numbers, md=md, lvm=lvm, luks=luks)


def _arrays(src: _Captured) -> ArraysOnDisk:
    """The md arrays with a member among this disk's partitions, and what lies on them."""
    layout = src.layout
    if layout.layers is None or not layout.layers.md:
        return ArraysOnDisk()
    return arrays_on_disk(layout.layers.md, _with_swaps(layout), lambda dev: src.number(Filesystem(device=dev, fstype="")))


def _containers(src: _Captured, md: ArraysOnDisk) -> ContainersOnDisk:
    """The LUKS containers on this disk's partitions or its arrays, and what lies inside them."""
    layout = src.layout
    if layout.layers is None or not layout.layers.luks:
        return ContainersOnDisk()
    return containers_on_disk(
        layout.layers.luks, _with_swaps(layout),
        lambda dev: src.number(Filesystem(device=dev, fstype="")) is not None or md.array_of(dev) is not None)


def _volume_groups(src: _Captured, md: ArraysOnDisk, others: Sequence[Disk] = (),
                   luks: ContainersOnDisk = ContainersOnDisk()) -> VolumeGroupsOnDisk:
    """The VGs with a PV on this disk's partitions, its arrays or its opened LUKS containers, and
    what lies on their LVs. Their other PVs may lie on `others` (disks restored onto the other targets)."""
    layout = src.layout
    if layout.layers is None or not layout.layers.vgs:
        return VolumeGroupsOnDisk()

    def here(dev: str) -> bool:
        return (src.number(Filesystem(device=dev, fstype="")) is not None or md.array_of(dev) is not None
                or luks.container_of(dev) is not None)

    def elsewhere(dev: str) -> bool:
        for d in others:
            assert d.table is not None
            numbers = _partition_numbers(d.table)

            def number(x: str, d: Disk = d, numbers: dict[str, int] = numbers) -> int | None:
                return _number(Filesystem(device=x, fstype=""), numbers, d, d.table)  # type: ignore[arg-type]

            if number(dev) is not None or arrays_on_disk(layout.layers.md, (), number).array_of(dev) is not None:
                return True
        return False

    mine = [vg for vg in layout.layers.vgs if any(here(pv.device) for pv in vg.pvs)]
    return volume_groups_on_disk(mine, _with_swaps(layout), lambda dev: here(dev) or elsewhere(dev))


def _with_swaps(layout: Layout) -> list[Filesystem]:
    """The captured filesystems, and each active swap blkid did not list among them."""
    known = {fs.device for fs in layout.filesystems}
    return [*layout.filesystems, *(Filesystem(device=sw.device, fstype="swap", uuid=sw.uuid, label=sw.label)
                                   for sw in layout.swaps if sw.device not in known)]


def _new_table(src: _Captured, what: _Restored, target: TargetDisk, options: PlanOptions,
               warnings: list[str]) -> _NewTable:
    """The captured table migrated onto the target: every partition holds its needs and fits the disk."""
    table, disk, ss, number_of = src.table, src.disk, src.sector_size, src.number_of
    filesystems, swaps = what.filesystems, what.swaps
    needs = _needs(filesystems, swaps, what.copies_for, what.esp_numbers, number_of, disk, table)
    for member, n in what.md.members.items():  # an array keeps its members' sizes: the same size, exactly
        needs[n] = Need(f"md member {member}", None, Role.FIXED)
    for c in what.luks.containers:  # a container too: its kept header says where its data starts and ends
        n = src.number(Filesystem(device=c.device, fstype=""))
        if n is not None:
            needs[n] = Need(f"LUKS {c.device}", None, Role.FIXED)
    for pv in what.lvm.pv_devices:  # a PV too: vgcfgrestore places every extent where it was
        n = src.number(Filesystem(device=pv, fstype=""))
        if n is not None:
            needs[n] = Need(f"LVM PV {pv}", None, Role.FIXED)
    _count_subvolume_vaults(src.layout, filesystems, what.copies_for, needs, number_of, disk, table)
    grow = _choose_grow(options, table, filesystems, number_of, disk)
    old_sectors = disk.size // ss if disk.size else _table_end(table)
    pv_grows = _growing_pv(src, what, target, options, old_sectors * ss)
    if pv_grows is not None:  # the new room goes to the VG, not to /boot beside it
        grow = pv_grows[0]
        needs[grow] = Need(f"LVM PV {pv_grows[1].pvs[0].device}", None, Role.DATA)
    needs = _apply_sizes(options, needs, grow, table, filesystems, swaps, number_of, disk)
    try:
        new_table, migrations = migrate_table(
            table, old_sectors, target.device, target.size // ss, needs, grow,
        )
        fitted: dict[int, tuple[LvmVg, tuple]] = {}
    except PlanRefused:
        # too small with every PV at its captured size: a VG of linear LVs on one PV is laid
        # out anew, each LV down to its filesystem's used bytes + margin (else refused as before)
        fitted = _fittable_pvs(src, what)
        if not fitted:
            raise
        for n, (vg, fits) in fitted.items():
            needs[n] = Need(f"LVM PV {vg.pvs[0].device} (volume group {vg.name})",
                            least_pv_bytes(vg, fits) + MIB, Role.DATA)
        new_table, migrations = migrate_table(
            table, old_sectors, target.device, target.size // ss, needs, grow,
        )
    _check_geometry(target, new_table, warnings)
    new_size = {m.number: m.new_size * ss for m in migrations}
    vg_fits: dict[str, tuple[dict[str, int] | None, int, int]] = {}
    if pv_grows is not None and not fitted:
        n, vg = pv_grows
        pe_count = (new_size[n] - (vg.pvs[0].pe_start or 0)) // vg.extent_size
        captured = next(p.size for p in table.partitions if p.number == n) * ss
        if new_size[n] > captured:
            vg_fits[vg.name] = (None, pe_count, new_size[n])
            warnings.append(
                f"volume group {vg.name}: its PV (partition {n} of {target.device}) takes the new room, "
                f"{human(new_size[n] - captured)} left free in the VG; every LV keeps its size and place "
                f"(lvextend -r -L +SIZE {vg.name}/LV gives an LV more, once the machine runs)")
    for n, (vg, fits) in fitted.items():
        pe_count = (new_size[n] - (vg.pvs[0].pe_start or 0)) // vg.extent_size
        extents = share_extents(fits, pe_count)
        vg_fits[vg.name] = (extents, pe_count, new_size[n])
        shrunk = [f"{f.name} {human(f.captured * vg.extent_size)} -> {human(extents[f.name] * vg.extent_size)}"
                  for f in fits if extents[f.name] < f.captured]
        warnings.append(
            f"volume group {vg.name} is laid out anew on the smaller partition {n} of {target.device} "
            f"({human(new_size[n])}): {', '.join(shrunk) or 'no LV shrinks'}; every name and UUID is kept, "
            "each LV still holds its filesystem's used bytes with room to spare")
    fs_by_number = {src.number(fs): fs for fs in filesystems}
    migrations = tuple(
        dataclasses.replace(
            m,
            mountpoint=fs_by_number[m.number].mountpoint if m.number in fs_by_number else None,
            fstype=(fs_by_number[m.number].fstype if m.number in fs_by_number
                    else "swap" if any(s.number == m.number for s in swaps)
                    else "linux_raid_member" if m.number in what.md.members.values()
                    else "crypto_LUKS" if m.number in _luks_numbers(src, what)
                    else "LVM2_member" if m.number in _pv_numbers(src, what) else None),
        )
        for m in migrations
    )
    layered = {*what.md.members.values(), *_pv_numbers(src, what)}
    free = (target.size // ss - _table_end(new_table)) * ss
    if layered and layered >= {p.number for p in new_table.partitions} and free >= max(GIB, target.size // 10):
        # nothing on this disk may grow (grow is None for layers): say where the new room is
        warnings.append(
            f"{target.device}: {human(free)} stay free at the end of the disk: md members and LVM PVs keep "
            "their captured sizes; to use the room later, add a partition, or grow the last one and then "
            "the array (mdadm --grow /dev/mdN --size=max) or the PV (pvresize) and an LV (lvextend -r)")
    if table.label == "dos" and target.size // ss > 2**32:
        warnings.append(
            f"a dos partition table reaches only the first {human(2**32 * ss)} of "
            f"{target.device}; the rest stays unused (convert to gpt later to use it)"
        )
    return _NewTable(table=new_table, migrations=migrations, new_size=new_size, vg_fits=vg_fits)


def _growing_pv(src: _Captured, what: _Restored, target: TargetDisk, options: PlanOptions,
                old_bytes: int) -> tuple[int, LvmVg] | None:
    """(partition, VG) of the one PV on this disk that takes a bigger target's new room, when the
    person did not choose with --grow or --size and the PV lies on a plain partition."""
    if options.grow or options.sizes or target.size <= old_bytes:
        return None
    pvs = [(n, vg) for vg in what.lvm.vgs if growable(vg)
           for n in [src.number(Filesystem(device=vg.pvs[0].device, fstype=""))] if n is not None]
    return pvs[0] if len(pvs) == 1 else None


def _fittable_pvs(src: _Captured, what: _Restored) -> dict[int, tuple[LvmVg, tuple]]:
    """The PV partitions of this disk whose VG can be laid out anew (rescue.plan.lvm.fittable),
    with each LV's least and captured extents."""
    out = {}
    for vg in what.lvm.vgs:
        n = src.number(Filesystem(device=vg.pvs[0].device, fstype="")) if fittable(vg) else None
        if n is not None:
            out[n] = (vg, lv_fits(vg, what.lvm.filesystems, needed_bytes))
    return out


def _new_filesystems(src: _Captured, what: _Restored, table: _NewTable, target: TargetDisk,
                     warnings: list[str]) -> tuple[list[NewFilesystem], tuple[NewSwap, ...]]:
    """The filesystems and swap made on the target, each with what the person must know about it."""
    new_filesystems: list[NewFilesystem] = []
    for fs in sorted(what.filesystems, key=lambda f: src.number(f) or 0):
        n = src.number(fs)
        assert n is not None
        size = table.new_size[n]
        minimum = FS_MIN_BYTES.get(fs.fstype, 0)
        if size < minimum:
            raise PlanRefused(
                f"partition {n} ({fs.mountpoint or fs.device}) would be {human(size)}, "
                f"but mkfs.{fs.fstype} makes nothing under {human(minimum)}",
                why=f"rescue makes every filesystem new, and today's mkfs.{fs.fstype} has that minimum",
                fix=f"restore onto a bigger disk, or let partition {n} grow with --grow {fs.mountpoint or n}",
            )
        image = what.copies_for.get(fs.mountpoint or "")
        esp = n in what.esp_numbers
        new = NewFilesystem(
            device=partition_path(target.device, n), number=n, fstype=fs.fstype, size=size,
            uuid=fs.uuid, label=fs.label, mountpoint=fs.mountpoint, captured_device=fs.device,
            used=fs.used, vault=image.vault if image else None, image=image.name if image else None,
            esp=esp, copy_bytes=_copy_bytes(fs, image), files=image.files if image else None,
        )
        if fs.mountpoint is None:
            warnings.append(_not_mounted(new))
        elif image is None and not esp:
            warnings.append(
                f"no vault holds {fs.mountpoint}: it is made empty ({fs.fstype} on "
                f"{partition_path(target.device, n)})"
            )
        if fs.uuid is None:
            warnings.append(
                f"the UUID of {fs.mountpoint or fs.device} was not captured: it gets a new one; "
                "fstab or grub lines naming the old UUID must be fixed by hand"
            )
        if (fs.options and any(o.startswith("subvol=") and o not in ("subvol=/",) for o in fs.options.split(","))
                and _btrfs_volume(src.layout, fs) is None):
            warnings.append(
                f"{fs.mountpoint} was mounted from a btrfs subvolume ({fs.options}); rescue "
                "copies into the top level and does not recreate subvolumes"
            )
        new_filesystems.append(new)
    new_swaps = tuple(
        NewSwap(device=partition_path(target.device, s.number), number=s.number,
                size=table.new_size[s.number], uuid=s.uuid, label=s.label, captured_device=s.captured_device)
        for s in sorted(what.swaps, key=lambda s: s.number)
    )
    layered, layered_swaps = _on_layers(src, what, table)
    new_filesystems += [dataclasses.replace(f, shown_on=target.device) for f in layered]
    new_swaps += tuple(dataclasses.replace(s, shown_on=target.device) for s in layered_swaps)
    for fs in src.layout.filesystems:
        if fs.fstype == "swap" and fs not in what.on_disk and not fs.device.startswith("/dev/"):
            warnings.append(f"swap file {fs.device} is not recreated; make it again after the restore")
    return new_filesystems, new_swaps


def _not_mounted(fs: NewFilesystem) -> str:
    return f"{fs.captured_device} ({fs.fstype}) was not mounted when captured: it is made empty on {fs.device} and not restored"


def _luks_numbers(src: _Captured, what: _Restored) -> set[int]:
    numbers = {src.number(Filesystem(device=c.device, fstype="")) for c in what.luks.containers}
    return {n for n in numbers if n is not None}


def _pv_numbers(src: _Captured, what: _Restored) -> set[int]:
    numbers = {src.number(Filesystem(device=pv, fstype="")) for pv in what.lvm.pv_devices}
    return {n for n in numbers if n is not None}


def _pv_number(src: _Captured, what: _Restored, pv: str) -> int | None:
    """The partition of this disk a captured PV lies on: itself, or its array's first member here
    (through the LUKS container it lies in)."""
    container = what.luks.container_of(pv)
    if container is not None:
        pv = container.device
    array = what.md.array_of(pv)
    if array is not None:
        return what.md.first_member(array) if any(m.device in what.md.members for m in array.members) else None
    return src.number(Filesystem(device=pv, fstype=""))


def _on_layers(src: _Captured, what: _Restored,
               table: _NewTable) -> tuple[list[NewFilesystem], tuple[NewSwap, ...]]:
    """The filesystems and swaps made on md arrays and LVs: on the array's or the LV's device,
    the size it had (members and PVs keep their sizes); shown on the partition under it."""
    filesystems: list[NewFilesystem] = []
    swaps: list[NewSwap] = []
    for fs in [*what.md.filesystems, *what.luks.filesystems, *what.lvm.filesystems]:
        device, n, size = _layer_device(src, what, table, fs)
        if fs.fstype == "swap":
            swaps.append(NewSwap(device=device, number=n, size=size, uuid=fs.uuid, label=fs.label,
                                 captured_device=fs.device))
            continue
        image = what.copies_for.get(fs.mountpoint or "")
        filesystems.append(NewFilesystem(
            device=device, number=n, fstype=fs.fstype, size=size, uuid=fs.uuid, label=fs.label,
            mountpoint=fs.mountpoint, captured_device=fs.device, used=fs.used,
            vault=image.vault if image else None, image=image.name if image else None,
            copy_bytes=_copy_bytes(fs, image), files=image.files if image else None,
        ))
    return filesystems, tuple(swaps)


def _layer_device(src: _Captured, what: _Restored, table: _NewTable, fs: Filesystem) -> tuple[str, int, int]:
    """(new device, partition shown, bytes) of a filesystem on an array, in a LUKS container or on an LV."""
    array = what.md.array_of(fs.device)
    if array is not None:
        n = what.md.first_member(array)
        return array.device, n, array.size or table.new_size[n]
    container = what.luks.container_of(fs.device)
    if container is not None:
        n, size = _under(src, what, table, container.device)
        return f"/dev/mapper/{open_name(container)}", n, size - (container.data_offset or 0)
    hit = what.lvm.lv_of(fs.device)
    assert hit is not None
    vg, lv = hit
    # shown on this disk's first PV (a VG may also lie on another target's disk)
    n = next(n for pv in vg.pvs if (n := _pv_number(src, what, pv.device)) is not None)
    extents = table.vg_fits.get(vg.name, (None,))[0]
    return f"/dev/mapper/{dm_name(vg.name, lv.name)}", n, extents[lv.name] * vg.extent_size if extents else lv.size


def _under(src: _Captured, what: _Restored, table: _NewTable, device: str) -> tuple[int, int]:
    """(partition shown, bytes) of a captured partition, array or opened container that a layer lies on."""
    container = what.luks.container_of(device)
    if container is not None:
        n, size = _under(src, what, table, container.device)
        return n, size - (container.data_offset or 0)
    array = what.md.array_of(device)
    if array is not None:
        n = what.md.first_member(array)
        return n, array.size or table.new_size[n]
    n = src.number(Filesystem(device=device, fstype=""))
    assert n is not None
    return n, table.new_size[n]


def _steps(parts: Sequence[_DiskPart], options: PlanOptions,
           warnings: list[str]) -> tuple[tuple[str, ...], tuple[CopyTree, ...], tuple[Step, ...]]:
    """The restore's steps in order: (mount order, copies, all steps). Every target is partitioned
    first, then every filesystem made, mounted into one tree and filled as one machine."""
    layout = parts[0].src.layout
    copies_for = {mp: image for part in parts for mp, image in part.what.copies_for.items()}
    new_filesystems = [f for part in parts for f in part.filesystems]
    new_swaps = [s for part in parts for s in part.swaps]
    mounted = [f for f in new_filesystems if f.mountpoint]
    mount_order = tuple(f.mountpoint for f in sorted(mounted, key=lambda f: _mount_key(f.mountpoint)))  # type: ignore[arg-type]
    mkfs_steps = tuple(
        MakeFilesystem(device=f.device, fstype=f.fstype, uuid=f.uuid, label=f.label, mountpoint=f.mountpoint)
        for f in new_filesystems
    )
    mkswap_steps = tuple(MakeSwap(device=s.device, uuid=s.uuid, label=s.label) for s in new_swaps)
    by_mount = {f.mountpoint: f for f in mounted}
    btrfs = _btrfs_subvolumes(layout, new_filesystems, warnings, options.btrfs_snapshots, copies_for)
    if btrfs.mounts:
        mount_order = tuple(sorted(set(mount_order) | set(btrfs.mounts), key=_mount_key))
    carrier = {**by_mount, **btrfs.mounts}
    mount_steps = tuple(
        MountFilesystem(device=carrier[mp].device, mountpoint=mp, fstype=carrier[mp].fstype,
                        options=btrfs.options.get(mp, ""))
        for mp in mount_order
    )
    copies = tuple(
        CopyTree(
            vault=copies_for[mp].vault, image=copies_for[mp].name, source=copies_for[mp].tree,
            mountpoint=mp, bytes=_subvolume_copy_bytes(mp, by_mount, copies_for),
            files=by_mount[mp].files or 0 if mp in by_mount else copies_for[mp].files or 0,
            part=copies_for[mp].whole_machine,
            skip=_skip_below(mp, copies_for[mp], layout, btrfs.left_out, set(copies_for)),
        )
        for mp in sorted(set(mount_order) | set(btrfs.inside), key=_mount_key) if mp in copies_for
    )
    roots = tuple(
        fs.root for fs in sorted((f for part in parts for f in part.what.filesystems),
                                 key=lambda f: _mount_key(f.mountpoint or "/"))
        if fs.root is not None and fs.mountpoint in by_mount
    )

    boot_part = _boot_part(layout, parts)
    bootloader = _bootloader(layout, options, boot_part.src.disk, boot_part.target, by_mount, warnings)
    if bootloader is not None:
        bootloader = _on_every_member(bootloader, layout, parts, by_mount, warnings)
    arrays = plan_arrays(_all_arrays(parts), {old: partition_path(p.target.device, n)
                                              for p in parts for old, n in p.what.md.members.items()})
    warnings.extend(arrays.warnings)
    lvm = _all_volume_groups(parts)
    fits = {name: fit for p in parts for name, fit in p.table.vg_fits.items()}
    luks = plan_containers(_all_containers(parts), {c.device: _new_pv_device(parts, c.device)
                                                    for p in parts for c in p.what.luks.containers},
                           new_key=options.luks_new_key)
    warnings.extend(luks.warnings)
    groups = plan_volume_groups(lvm, {pv: _new_pv_device(parts, pv) for pv in lvm.pv_devices},
                                {vg.name: _vg_text(vg, fits.get(vg.name)) for vg in lvm.vgs})
    warnings.extend(groups.warnings)
    steps: list[Step] = [*luks.checks]  # a wrong key is said before anything is written
    for part in parts:
        steps += [WipeSignatures(disk=part.target.device),
                  WritePartitionTable(disk=part.target.device, table=part.table.table)]
    steps += arrays.steps
    steps += luks.make
    steps += groups.steps
    steps += mkfs_steps
    steps += mkswap_steps
    steps += btrfs.steps
    steps += mount_steps
    steps += copies
    steps += btrfs.readonly  # a read-only snapshot cannot be filled: made read-only once copied
    steps += luks.keyfiles  # a new master key: crypttab's keyfiles are files of the copied system
    if mount_steps:
        steps.append(Fixups(roots=roots, fstab=layout.fstab,
                            pvs=tuple(pv for group in groups.steps for pv in group.pvs)))
    if bootloader:
        steps.append(bootloader)
    steps.append(Verify(
        disk=boot_part.target.device, copies=copies, filesystems=mkfs_steps, swaps=mkswap_steps,
        mode=layout.boot.mode, check_boot=bootloader is not None,
    ))
    steps.append(UnmountAll())
    if groups.off:
        steps.append(groups.off)
    if luks.close:
        steps.append(luks.close)
    if arrays.stop:
        steps.append(arrays.stop)
    return mount_order, copies, tuple(steps)


def _vg_text(vg: LvmVg, fit: tuple[dict[str, int] | None, int, int] | None) -> str:
    """The vgcfgbackup text vgcfgrestore gets: as captured, its PV grown, or laid out anew."""
    if fit is None:
        return vg.config or ""
    extents, pe_count, size = fit
    if extents is None:
        return resized_pv_config(vg.config or "", pe_count, size)
    return refit_config(vg.config or "", extents, pe_count, size)


def _all_arrays(parts: Sequence[_DiskPart]) -> tuple[MdArray, ...]:
    """Each array with a member on some target, once (a mirror across two targets is one array)."""
    return tuple({a.device: a for p in parts for a in p.what.md.arrays}.values())


def _all_volume_groups(parts: Sequence[_DiskPart]) -> VolumeGroupsOnDisk:
    """The VGs of every target, each once, with every PV and what lies on their LVs."""
    return VolumeGroupsOnDisk(
        vgs=tuple({vg.name: vg for p in parts for vg in p.what.lvm.vgs}.values()),
        pv_devices={pv: node for p in parts for pv, node in p.what.lvm.pv_devices.items()},
        filesystems=tuple({fs.device: fs for p in parts for fs in p.what.lvm.filesystems}.values()))


def _all_containers(parts: Sequence[_DiskPart]) -> ContainersOnDisk:
    """The LUKS containers of every target, each once (one on a mirror across two targets too)."""
    return ContainersOnDisk(
        containers=tuple({c.uuid: c for p in parts for c in p.what.luks.containers}.values()),
        filesystems=tuple({fs.device: fs for p in parts for fs in p.what.luks.filesystems}.values()),
        holding=frozenset(u for p in parts for u in p.what.luks.holding))


def _new_pv_device(parts: Sequence[_DiskPart], pv: str) -> str:
    """Where a captured PV (or LUKS container) goes: its partition on its target, its array (made
    under its own name) or its opened container (under its crypttab name)."""
    for part in parts:
        container = part.what.luks.container_of(pv)
        if container is not None:
            return f"/dev/mapper/{open_name(container)}"
        array = part.what.md.array_of(pv)
        if array is not None:
            return array.device
        n = part.src.number(Filesystem(device=pv, fstype=""))
        if n is not None:
            return partition_path(part.target.device, n)
    raise AssertionError(f"PV {pv} lies on no restored disk")  # volume_groups_on_disk refused it


def _boot_part(layout: Layout, parts: Sequence[_DiskPart]) -> _DiskPart:
    """The target that replaces the disk which held grub's boot code (the first one when unknown)."""
    return next((p for p in parts if p.src.disk.device == layout.boot.grub_disk), parts[0])


def _on_every_member(bootloader: InstallBootloader, layout: Layout, parts: Sequence[_DiskPart],
                     by_mount: dict[str | None, NewFilesystem], warnings: list[str]) -> InstallBootloader:
    """Boot code on every target holding a member of the mirror /boot (or /) lies on, so the
    machine boots from either disk when the other dies, as it did: BIOS grub in each MBR;
    under UEFI, each ESP on those disks that was not the mounted one gets its copy."""
    if len(parts) < 2:
        return bootloader
    mirrored = _mirror_targets(parts, by_mount)
    if bootloader.mode is BootMode.BIOS:
        also = [t for t in mirrored if t != bootloader.disk]
        return dataclasses.replace(bootloader, also=tuple(also)) if also else bootloader
    esp = by_mount.get(bootloader.esp)
    if esp is None or not any(esp in p.filesystems and p.target.device in mirrored for p in parts):
        return bootloader  # the ESP grub goes into is not on the mirrored disks: no copy of it boots them
    copies = [f for p in parts if p.target.device in mirrored for f in p.filesystems
              if f.esp and f.fstype == "vfat" and f.device != esp.device]
    for f in copies:
        unmounted = _not_mounted(f)
        if unmounted in warnings:
            warnings.remove(unmounted)
        warnings.append(f"{f.captured_device} (vfat) was not mounted when captured: an ESP of the mirrored "
                        f"boot disks, made again on {f.device} (UUID and label kept) and given a copy of "
                        f"{bootloader.esp} once grub is installed, so either disk boots alone")
    return dataclasses.replace(bootloader, esp_copies=tuple(f.device for f in copies)) if copies else bootloader


def _mirror_targets(parts: Sequence[_DiskPart], by_mount: dict[str | None, NewFilesystem]) -> list[str]:
    """The targets holding a member of the array /boot (or /) lies on, or of an array under
    the VG its LV lies in; none when it is on no array."""
    boot = by_mount.get("/boot") or by_mount.get("/")
    if boot is None or boot.captured_device is None:
        return []
    holding = [p.target.device for p in parts
               if (array := p.what.md.array_of(boot.captured_device)) is not None
               and any(m.device in p.what.md.members for m in array.members)]
    if not holding and boot.device.startswith("/dev/mapper/"):
        # / on an LV: boot code goes where the VG's PVs are mirrored
        lv = _all_volume_groups(parts).lv_of(boot.captured_device)
        pvs = [pv.device for pv in lv[0].pvs] if lv else []
        holding = [p.target.device for p in parts
                   if any((a := p.what.md.array_of(pv)) is not None
                          and any(m.device in p.what.md.members for m in a.members) for pv in pvs)]
    return holding


# -- refusals -------------------------------------------------------------------


def refuse_unsafe(target: TargetDisk) -> None:
    """UnsafeTarget listing every reason the disk must not be written, and what to do.

    The rules and their words live in rescue.safety, shared with the engine's
    last check before the first write."""
    check_target(target)


def _refuse_unusable_images(images: Sequence[Image]) -> None:
    if not images:
        raise PlanRefused(
            "no images were chosen to restore",
            why="a restore copies the files of at least one image",
            fix="check the bank and client with rescue list",
        )
    bad = [i for i in images if not i.usable]
    if bad:
        names = ", ".join(
            f"{i.vault}/{i.name} ({i.status.value}{': ' + i.status_text if i.status_text else ''})" for i in bad
        )
        raise PlanRefused(
            f"these images are not complete successful backups: {names}",
            why="an image whose summary Status is not success may be missing files",
            fix="pick an older image with --image DATE (rescue list shows each image's status)",
        )
    seen: dict[str, Image] = {}
    for i in images:
        if i.vault in seen:
            raise PlanRefused(
                f"two images of vault {i.vault} were chosen: {seen[i.vault].name} and {i.name}",
                why="each vault is restored from one image",
                fix="choose one image per vault",
            )
        seen[i.vault] = i


def _carries_everything(layout: Layout, disk: Disk) -> bool:
    """Whether this captured disk alone holds every mounted filesystem and swap of the machine:
    on its partitions, on md arrays with a member on it that can run degraded from it, in LUKS
    containers on those, or on volume groups whose PVs all lie there."""
    if disk.table is None or layout.layers is None or not layout.layers.md:
        return False  # without mirrors no disk holds another's filesystems
    table = disk.table
    number_of = _partition_numbers(table)

    def number(dev: str) -> int | None:
        return _number(Filesystem(device=dev, fstype=""), number_of, disk, table)

    arrays = arrays_on_disk(layout.layers.md, (), number)
    luks = containers_on_disk(layout.layers.luks, (),
                              lambda dev: number(dev) is not None or arrays.array_of(dev) is not None)
    try:
        plan_arrays(arrays.arrays, dict.fromkeys(arrays.members, "x"))  # each can run from this disk's members
        vgs = volume_groups_on_disk(layout.layers.vgs, (),
                                    lambda dev: number(dev) is not None or arrays.array_of(dev) is not None
                                    or luks.container_of(dev) is not None)
    except PlanRefused:
        return False
    needed = [fs.device for fs in layout.filesystems if fs.mountpoint and fs.fstype != "swap"]
    needed += [sw.device for sw in layout.swaps if not sw.device.startswith("/dev/dm-")]
    return all(number(dev) is not None or arrays.array_of(dev) is not None or vgs.lv_of(dev) is not None
               or luks.container_of(dev) is not None for dev in needed)


def _refuse_unsupported(filesystems: Sequence[Filesystem], disk: Disk) -> None:
    bad = [fs for fs in filesystems if fs.fstype not in SUPPORTED_FSTYPES]
    if bad:
        names = ", ".join(f"{fs.device} ({fs.fstype or 'unknown type'}, {fs.mountpoint or 'not mounted'})" for fs in bad)
        example = next((fs.mountpoint for fs in bad if fs.mountpoint), bad[0].device)
        raise PlanRefused(
            f"rescue cannot make these filesystems of {disk.device}: {names}",
            why="the restore makes " + ", ".join(SUPPORTED_FSTYPES) + " and swap",
            fix=f"choose a type it can make, e.g. --fstype {example}=ext4 (files are copied one by one, "
                "so the type may change; fstab is then fixed to match), or restore this disk by hand",
        )


def _override_fstypes(
    filesystems: list[Filesystem], options: PlanOptions, layout: Layout, warnings: list[str],
) -> list[Filesystem]:
    """Apply --fstype MOUNTPOINT=TYPE: for unknown (legacy) or unsupported captured types."""
    if not options.fstypes:
        return filesystems
    wanted = dict(options.fstypes)
    out = []
    used = set()
    for fs in filesystems:
        key = fs.mountpoint if fs.mountpoint in wanted else fs.device if fs.device in wanted else None
        if key is None:
            out.append(fs)
            continue
        used.add(key)
        new = wanted[key]
        if new not in SUPPORTED_FSTYPES:
            raise PlanRefused(
                f"--fstype {key}={new}: rescue cannot make {new}",
                why="the restore makes " + ", ".join(SUPPORTED_FSTYPES) + " and swap",
                fix=f"name one of those, e.g. --fstype {key}=ext4",
            )
        if new != fs.fstype:
            warnings.append(
                f"{fs.mountpoint or fs.device} is made {new} instead of the captured "
                f"{fs.fstype or 'unknown type'} (as asked); fstab lines naming {fs.fstype or 'the old type'} must match"
            )
            fs = dataclasses.replace(fs, fstype=new)
        out.append(fs)
    unknown = [k for k in wanted if k not in used]
    if unknown:
        known = sorted(fs.mountpoint or fs.device for fs in filesystems)
        raise PlanRefused(
            "--fstype names no captured filesystem of this disk: " + ", ".join(unknown),
            why=f"its filesystems are {', '.join(known) or 'none'}",
            fix="name a mount point (or captured device) from that list",
        )
    return out


def _map_vaults(
    layout: Layout, images: Sequence[Image], options: PlanOptions, disk: Disk,
    filesystems: Sequence[Filesystem], elsewhere: set[str], warnings: list[str],
) -> dict[str, Image]:
    """Mount point -> the image that fills it. A vault that fits no filesystem is refused;
    one of a disk restored onto another target (`elsewhere`) is that target's."""
    subvolume_mounts = _subvolume_targets(layout, filesystems)
    mine = {fs.mountpoint for fs in filesystems if fs.mountpoint} | set(subvolume_mounts)
    known = sorted({fs.mountpoint for fs in layout.filesystems if fs.mountpoint and fs.fstype != "swap"}
                   | set(subvolume_mounts))
    result: dict[str, Image] = {}
    unmapped = []
    for image in images:
        if image.vault in options.skip_vaults:
            warnings.append(f"vault {image.vault} is left out, as asked")
            continue
        if image.client and image.client != layout.client:
            warnings.append(f"vault {image.vault} names client {image.client}, the layout {layout.client}")
        # a whole-machine image is the machine's own / (a capture's --root is where it was mounted
        # for the capture, not part of the copy's paths)
        mp = posixpath.normpath(image.source) if image.whole_machine else vault_mountpoint(image.source, layout.root)
        if mp is None or (layout.filesystem_at(mp) is None and mp not in subvolume_mounts):
            unmapped.append(f"{image.vault} (tree {image.source})")
            continue
        if mp not in mine and mp in elsewhere:
            continue
        if mp not in mine:
            warnings.append(
                f"vault {image.vault} holds {mp}, which lived on another disk: not restored onto this target"
            )
            continue
        if mp in result:
            raise PlanRefused(
                f"vaults {result[mp].vault} and {image.vault} both hold {mp}",
                why="each filesystem is filled from one vault",
                fix="restore one of them and copy what you need from the other by hand",
            )
        result[mp] = image
    _spread_whole_images(result, mine, layout)
    if unmapped:
        root = f" under {layout.root}" if layout.root != "/" else ""
        raise PlanRefused(
            "these vaults match no captured filesystem: " + ", ".join(unmapped),
            why=f"a vault's tree: must be a mount point{root} of the captured machine; "
                f"the captured mount points are {', '.join(known) or 'none'}",
            fix="restore that vault by hand with rsync after the restore; to plan without it, "
                "leave it out with --skip-vault NAME",
        )
    return result


def _spread_whole_images(result: dict[str, Image], mine: set[str | None], layout: Layout) -> None:
    """A whole-machine image (rsnapshot, a plain folder) also fills the mount points below its own.

    Its tree holds /home's files under home/: each filesystem of this disk that no
    other vault fills is copied from the matching folder of the nearest such image
    (not a vfat ESP, which the bootloader step fills)."""
    vfat = {fs.mountpoint for fs in layout.filesystems if fs.fstype == "vfat"}
    for mp in sorted((m for m in mine if m), key=_mount_key):
        if mp in result or mp in vfat:  # an ESP keeps no owners or modes: grub-install fills it anew
            continue
        above = [m for m in result if result[m].whole_machine and _below(mp, m)]
        if not above:
            continue
        base = max(above, key=len)
        image = result[base]
        rel = posixpath.relpath(mp, base)
        result[mp] = dataclasses.replace(image, tree=image.tree / rel, size=None, files=None,
                                         source=posixpath.join(image.source, rel))


def _below(mp: str, base: str) -> bool:
    return mp != base and (base == "/" or mp.startswith(base.rstrip("/") + "/"))


def _skip_below(mp: str, image: Image, layout: Layout, snapshots: Sequence[str] = (),
                copied: set[str] | None = None) -> tuple[str, ...]:
    """The folders below `mp`, relative to it, whose files the copy of `mp` leaves out.

    When `image` holds a whole machine: the captured mount points below `mp`. Their files are
    in the image's tree but belong on their own filesystems (or on another disk). And the
    snapshots left out whose files the tree holds (a vault that crosses into subvolumes), when
    `mp` is the nearest copy above them: they would come back as plain folders. The copy
    makes these folders, empty."""
    below: set[str] = set()
    if image.whole_machine:
        below = {fs.mountpoint for fs in layout.filesystems if fs.mountpoint and fs.fstype != "swap"}
        below |= set(_subvolume_targets(layout, layout.filesystems))  # /home from @home: its own copy
    for seen in snapshots:
        above = [m for m in (copied or {mp}) if m == seen or _below(seen, m)]
        if above and max(above, key=len) == mp and seen != mp:
            below.add(seen)
    return tuple(sorted(posixpath.relpath(m, mp) for m in below if _below(m, mp)))


def vault_mountpoint(source: str, root: str) -> str | None:
    """The mount point a vault's tree is, seen from the captured system ('/mnt/demo/home' -> '/home')."""
    if not source.startswith("/"):
        return None
    src = posixpath.normpath(source)
    base = posixpath.normpath(root or "/")
    if base == "/":
        return src
    if src == base:
        return "/"
    if src.startswith(base + "/"):
        return src[len(base):]
    return None


def _bootloader(
    layout: Layout, options: PlanOptions, disk: Disk, target: TargetDisk,
    by_mount: dict[str | None, NewFilesystem], warnings: list[str],
) -> InstallBootloader | None:
    boot = layout.boot
    if not options.bootloader:
        warnings.append("no bootloader is installed (as asked): the restored disk will not boot by itself")
        return None
    if not boot.has_grub:
        warnings.append(
            "no grub was captured on this machine: no bootloader is installed, so the restored "
            "disk will not boot until you install one"
        )
        return None
    if boot.grub_disk and boot.grub_disk != disk.device:
        warnings.append(
            f"grub lived on {boot.grub_disk}, not on {disk.device}: it is installed when that disk is restored"
        )
        return None
    if boot.mode is BootMode.UEFI and boot.esp and boot.esp not in by_mount:
        warnings.append(
            f"the machine boots by UEFI but its ESP ({boot.esp}) is not on this disk: grub is not installed"
        )
        return None
    return InstallBootloader(disk=target.device, mode=boot.mode, esp=boot.esp if boot.mode is BootMode.UEFI else None)


# -- helpers --------------------------------------------------------------------


def destroyed(target: TargetDisk) -> tuple[str, ...]:
    """What is on the target now, in words: all of it will be lost."""
    lines = []
    if target.pttype:
        lines.append(f"the {target.pttype} partition table of {target.device}")
    for p in target.partitions:
        what = p.fstype or "no filesystem found"
        label = f" label {p.label}" if p.label else ""
        uuid = f" UUID {p.uuid}" if p.uuid else ""
        lines.append(f"{p.device}: {human(p.size)} {what}{label}{uuid}")
    for sig in target.signatures:
        line = f"{target.device}: {sig} signature"
        if line not in lines and not (target.pttype and sig == target.pttype):
            lines.append(line)
    return tuple(lines)


def _used(fs: Filesystem, image: Image | None) -> int | None:
    """Bytes the new filesystem must hold: df's used bytes, else what rsync counted in the image."""
    if fs.used is not None:
        return fs.used
    return image.size if image is not None else None


def _check_geometry(target: TargetDisk, table: PartitionTable, warnings: list[str]) -> None:
    """libparted's reading of the target must agree with the plan's own sector arithmetic.

    Two implementations of the usable range agreeing is the proof the table
    fits; partitions off the disk's optimal I/O alignment still work, slower.
    """
    if target.usable is not None and table.label == "gpt" and (table.table_length or 128) == 128:
        first, last = target.usable
        outside = [p.number for p in table.partitions if p.start < first or p.end - 1 > last]
        if table.last_lba != last or outside:
            raise PlanRefused(
                f"the planned table does not fit {target.device} as libparted reads it",
                why=f"libparted: sectors {first} to {last} are usable; the plan ends the table at "
                    f"{table.last_lba}" + (f" and places partition(s) {outside} outside" if outside else ""),
                fix="report it with the captured layout.json and the target's size; restore by hand meanwhile",
            )
    if target.io_align is not None:
        offset, grain = target.io_align
        off = [p.number for p in table.partitions if grain > 1 and (p.start - offset) % grain]
        if off:
            warnings.append(f"partition(s) {', '.join(map(str, off))} start off {target.device}'s optimal I/O "
                            f"alignment ({grain} sectors) as captured; they work, writes may be slower")


def _copy_bytes(fs: Filesystem, image: Image | None) -> int | None:
    """Bytes the copy reads, for progress: the image's own count first, else df's used bytes."""
    if image is None:
        return None
    return image.size if image.size is not None else fs.used


def _partition_numbers(table: PartitionTable) -> dict[str, int]:
    return {p.node: p.number for p in table.partitions}


def _number(fs: Filesystem, number_of: dict[str, int], disk: Disk, table: PartitionTable) -> int | None:
    """Which partition of the captured disk holds fs (by node, then PARTUUID)."""
    if fs.device in number_of:
        return number_of[fs.device]
    if fs.partuuid:
        for p in table.partitions:
            if p.uuid and p.uuid.lower() == fs.partuuid.lower():
                return p.number
    if disk_of(fs.device) == disk.device:
        n = _trailing_number(fs.device)
        if n in number_of.values():
            return n
    return None


def _trailing_number(device: str) -> int:
    digits = ""
    for ch in reversed(device):
        if not ch.isdigit():
            break
        digits = ch + digits
    return int(digits) if digits else -1


@dataclasses.dataclass(frozen=True)
class _SwapPart:
    number: int
    captured_device: str
    uuid: str | None
    label: str | None


def _swaps(
    layout: Layout, on_disk: Sequence[Filesystem], number_of: dict[str, int], disk: Disk, table: PartitionTable,
) -> list[_SwapPart]:
    found: dict[int, _SwapPart] = {}
    for fs in on_disk:
        if fs.fstype == "swap":
            n = _number(fs, number_of, disk, table)
            assert n is not None
            found[n] = _SwapPart(n, fs.device, fs.uuid, fs.label)
    for sw in layout.swaps:
        fake = Filesystem(device=sw.device, fstype="swap", uuid=sw.uuid)
        n = _number(fake, number_of, disk, table)
        if n is None:
            continue
        old = found.get(n)
        found[n] = _SwapPart(n, sw.device, (old and old.uuid) or sw.uuid, (old and old.label) or sw.label)
    return list(found.values())


def _is_esp(fs: Filesystem, layout: Layout, table: PartitionTable, number_of: dict[str, int], disk: Disk) -> bool:
    if layout.boot.esp and fs.mountpoint == layout.boot.esp:
        return True
    n = _number(fs, number_of, disk, table)
    for p in table.partitions:
        if p.number == n and p.type.lower().removeprefix("0x") in ESP_TYPES:
            return True
    return False


def _needs(
    filesystems: Sequence[Filesystem], swaps: Sequence[_SwapPart], copies_for: dict[str, Image],
    esp_numbers: set[int | None], number_of: dict[str, int], disk: Disk, table: PartitionTable,
) -> dict[int, Need]:
    """What each partition must hold. A filesystem holds backed-up data when a chosen vault
    fills it (without any vault on this disk: when df counted used bytes); only those share
    the free space. The ESP keeps its size; swap and empty filesystems may shrink to the floor."""
    needs: dict[int, Need] = {}
    for fs in filesystems:
        n = _number(fs, number_of, disk, table)
        assert n is not None
        what = f"{fs.mountpoint or fs.device} ({fs.fstype})"
        image = copies_for.get(fs.mountpoint or "")
        holds_data = image is not None if copies_for else bool(fs.used)
        if n in esp_numbers:
            needs[n] = Need(what, None, Role.FIXED)
        elif holds_data:
            used = _used(fs, image)
            needs[n] = Need(what, needed_bytes(used, fs.fstype) if used is not None else None, Role.DATA,
                            floor=FS_MIN_BYTES.get(fs.fstype, 0))
        else:
            needs[n] = Need(what + ", made empty", FS_MIN_BYTES.get(fs.fstype, 0), Role.EMPTY)
    for sw in swaps:
        needs[sw.number] = Need(f"swap {sw.captured_device}", FS_MIN_BYTES["swap"], Role.EMPTY)
    return needs


def _apply_sizes(
    options: PlanOptions, needs: dict[int, Need], grow: int | None, table: PartitionTable,
    filesystems: Sequence[Filesystem], swaps: Sequence[_SwapPart], number_of: dict[str, int], disk: Disk,
) -> dict[int, Need]:
    """--size MOUNTPOINT=SIZE: that partition gets exactly SIZE, never less than it needs."""
    out = dict(needs)
    ss = table.sector_size
    by_number = {p.number: p for p in table.partitions}
    for where, size in options.sizes:
        n = _partition_named(where, "--size", table, filesystems, swaps, number_of, disk)
        if n == grow:
            raise PlanRefused(
                f"--size {where} and --grow {options.grow} name the same partition",
                why="a partition either has the size you set or takes the free space, not both",
                fix="drop one of the two",
            )
        need = needs.get(n)
        if need is None:
            least, what = MIB, f"partition {n} (no filesystem)"
        elif need.role is Role.DATA:
            captured = by_number[n].size * ss
            least = captured if need.minimum is None else max(min(need.minimum, captured), need.floor)
            what = need.what
        else:
            least, what = max(need.minimum or 0, MIB), need.what
        if size < least:
            used = "its captured size (its used bytes were not captured)" if need and need.role is Role.DATA \
                and need.minimum is None else "its captured used bytes + 10 % + 64 MiB, at least what mkfs makes" \
                if need and need.role is Role.DATA else "what mkfs or mkswap makes"
            raise PlanRefused(
                f"--size {where}={human(size)} is too small: {what} needs {human(least)}",
                why=f"a partition gets at least {used}",
                fix=f"give {where} at least {-(-least // MIB)} MiB, or leave the size to rescue",
            )
        out[n] = Need(what if need is None else need.what, least, Role.FIXED, size)
    return out


def _choose_grow(
    options: PlanOptions, table: PartitionTable, filesystems: Sequence[Filesystem],
    number_of: dict[str, int], disk: Disk,
) -> int | None:
    """The partition --grow names, or None: the restored filesystems share the free space."""
    if not options.grow:
        return None
    return _partition_named(options.grow, "--grow", table, filesystems, (), number_of, disk)


def _partition_named(
    want: str, option: str, table: PartitionTable, filesystems: Sequence[Filesystem],
    swaps: Sequence[_SwapPart], number_of: dict[str, int], disk: Disk,
) -> int:
    """A partition named by mount point, number or (the one) swap, as --grow and --size take it."""
    want = want.strip()
    numbers = {p.number: p for p in table.partitions}
    if want.isdigit() and int(want) in numbers and not is_extended(table, numbers[int(want)]):
        return int(want)
    if want == "swap" and len(swaps) == 1:
        return swaps[0].number
    mp = posixpath.normpath(want) if want.startswith("/") else None
    for fs in filesystems:
        if mp and fs.mountpoint == mp:
            n = _number(fs, number_of, disk, table)
            if n is not None:
                return n
    choices = sorted(fs.mountpoint for fs in filesystems if fs.mountpoint)
    nums = ", ".join(str(p.number) for p in table.partitions if not is_extended(table, p))
    swap = "; swap names the swap partition when there is one" if option == "--size" else ""
    raise PlanRefused(
        f"{option} {want} names no partition of {disk.device}",
        why=f"its mount points are {', '.join(choices) or 'none'}; its partition numbers are {nums}{swap}",
        fix="name one of those mount points or partition numbers (an extended partition grows with its last logical)",
    )


def _mount_key(mountpoint: str) -> tuple[int, str]:
    parts = [p for p in mountpoint.split("/") if p]
    return (len(parts), mountpoint)


def _mountpoints_on(layout: Layout, disk: Disk) -> tuple[str, ...]:
    """The captured mount points whose filesystems lay on `disk`."""
    table = disk.table
    if table is None:
        return ()
    number_of = _partition_numbers(table)

    def number(dev: str) -> int | None:
        return _number(Filesystem(device=dev, fstype=""), number_of, disk, table)

    arrays = arrays_on_disk(layout.layers.md, (), number) if layout.layers else ArraysOnDisk()
    luks = containers_on_disk(layout.layers.luks if layout.layers else (), (),
                              lambda dev: number(dev) is not None or arrays.array_of(dev) is not None)
    vgs: tuple = ()
    if layout.layers:
        vgs = tuple(vg for vg in layout.layers.vgs
                    if any(number(pv.device) is not None or arrays.array_of(pv.device) or luks.container_of(pv.device)
                           for pv in vg.pvs))
    layered = VolumeGroupsOnDisk(vgs)
    return tuple(sorted({fs.mountpoint for fs in layout.filesystems if fs.mountpoint and (
        number(fs.device) is not None or arrays.array_of(fs.device) or layered.lv_of(fs.device)
        or luks.container_of(fs.device))}))


def _table_end(table: PartitionTable) -> int:
    return max((p.end for p in table.partitions), default=0) + MIB // table.sector_size


