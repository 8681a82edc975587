"""Join the raw command outputs into one Layout. Pure: files in, data out.

Kept apart from collecting so a layout can be rebuilt from the raw files
of any image (and tested without root): the files are the evidence,
layout.json is their reading.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, replace

from rescue.devices import disk_of
from rescue.errors import LayoutError
from rescue.layout import btrfs
from rescue.layout.df import DfEntry, parse_df
from rescue.layout.findmnt import parse_findmnt, source_device
from rescue.layout.fstab import parse_fstab
from rescue.layout.lsblk import BlockDevice, parse_lsblk, walk
from rescue.layout.model import (
    BlockLayers,
    Boot,
    BootMode,
    BtrfsVolume,
    Disk,
    Filesystem,
    FstabEntry,
    Layout,
    LuksDevice,
    Mount,
    RootMeta,
    Swap,
)
from rescue.layout.sfdisk import parse_sfdisk, read_text
from rescue.layout import stack
from rescue.layout.luks import crypttab_line, parse_luks_dump
from rescue.layout.swaps import parse_swaps

ESP_GPT = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
ESP_DOS = "ef"
_MD_TYPES = ("raid0", "raid1", "raid4", "raid5", "raid6", "raid10", "linear", "md")


def parse_blkid(data: bytes | str, file: str) -> dict[str, str]:
    """`blkid -o export`: KEY=value lines (blkid escapes spaces and backslashes)."""
    text = read_text(data, file)
    out: dict[str, str] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        key, eq, value = line.partition("=")
        if not eq or not re.fullmatch(r"[A-Z_0-9]+", key):
            raise LayoutError(file, lineno, f"not a KEY=value line: {line[:60]!r}")
        out[key] = re.sub(r"\\(.)", r"\1", value)
    return out


def parse_os_release(data: bytes | str, file: str = "os-release") -> dict[str, str]:
    text = read_text(data, file)
    out: dict[str, str] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, eq, value = line.partition("=")
        if not eq or not re.fullmatch(r"[A-Z_0-9]+", key):
            raise LayoutError(file, lineno, f"not a KEY=value line: {line[:60]!r}")
        try:
            parts = shlex.split(value)
        except ValueError:
            raise LayoutError(file, lineno, f"unbalanced quotes in {key}") from None
        out[key] = " ".join(parts)
    return out


def parse_roots(data: bytes | str, file: str = "roots.txt") -> dict[str, RootMeta]:
    """`stat -c '%a %u %g %n'` of each mount point: mode (octal), owner, group, path."""
    text = read_text(data, file)
    out: dict[str, RootMeta] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        m = re.fullmatch(r"([0-7]{1,4}) (\d+) (\d+) (/.*)", line)
        if not m:
            raise LayoutError(file, lineno, f"not 'MODE UID GID PATH': {line[:60]!r}")
        out[m.group(4)] = RootMeta(m.group(4), int(m.group(1), 8), int(m.group(2)), int(m.group(3)))
    return out


def relative_to_root(target: str, root: str) -> str | None:
    """/mnt/demo/home with root /mnt/demo -> /home; None when outside root."""
    if root in ("", "/"):
        return target
    root = root.rstrip("/")
    if target == root:
        return "/"
    if target.startswith(root + "/"):
        return target[len(root):]
    return None


def node_name(path: str) -> str:
    """/dev/nvme0n1p2 -> nvme0n1p2, /dev/mapper/vg-root -> mapper-vg-root: raw file names."""
    return path.removeprefix("/dev/").replace("/", "-")


def build_layout(
    files: Mapping[str, bytes],
    *,
    client: str | None,
    captured_at: str,
    root: str = "/",
    warnings: tuple[str, ...] = (),
) -> Layout:
    """Read the raw files of one capture into a Layout (LayoutError on anything unreadable).

    Its phases: the disks and their tables; what blkid probed; the mounts below ROOT; df's
    figures and the filesystem roots' modes; the filesystems and swap on the disks; fstab,
    os-release and hostname; the boot mode; btrfs subvolumes."""
    notes = list(warnings)
    for required in ("lsblk.json", "disks"):
        if required not in files:
            raise LayoutError(required, None, "missing from the capture")
    devices = parse_lsblk(files["lsblk.json"], "lsblk.json")
    by_path: dict[str, BlockDevice] = {d.path: d for d in walk(devices)}
    disk_paths = [line.strip() for line in read_text(files.get("disks", b""), "disks").splitlines() if line.strip()]
    disks = _disks(files, disk_paths, by_path)
    probes = _probes(files)
    mounts, mounted = _mounts(files, root)
    df, roots = _usage(files, root)
    layers = _layers(files, disk_paths)
    _note_stacked_layers(disk_paths, by_path, notes, layers)
    # an md array (and the LVs on it) shows under each of its member disks: once each
    on_disks = list({d.path: d for p in disk_paths for d in walk((by_path[p],))}.values())
    filesystems = _filesystems(on_disks, probes, mounted, df, roots, notes)
    swaps = _swaps(files, filesystems, probes, by_path)

    fstab = parse_fstab(files["fstab"], "fstab") if "fstab" in files else ()
    subvol_mounted = {source_device(m.source) for m in mounts if m.fstype == "btrfs"}
    filesystems = _mountpoints_from_fstab(filesystems, fstab, notes, subvol_mounted)
    os_release = parse_os_release(files["os-release"]) if "os-release" in files else {}
    hostname = read_text(files.get("hostname", b""), "hostname").strip() or None

    boot = _boot(files, disks, filesystems, notes)
    btrfs = _btrfs(files, mounts, probes, fstab, root)
    return Layout(
        client=client or hostname or "unknown",
        captured_at=captured_at,
        hostname=hostname,
        root=root,
        source="capture",
        os_release=os_release,
        disks=tuple(disks),
        filesystems=tuple(filesystems),
        swaps=tuple(swaps),
        mounts=tuple(sorted(mounts, key=lambda m: (m.target.count("/") if m.target != "/" else 0, m.target))),
        fstab=fstab,
        boot=boot,
        warnings=tuple(notes),
        btrfs=btrfs,
        layers=layers or None,
    )


@dataclass(frozen=True)
class _Mounted:
    """How a device is mounted below ROOT: its shallowest mount point (relative), options, type."""

    mountpoint: str
    options: str
    fstype: str


def _disks(files: Mapping[str, bytes], disk_paths: list[str], by_path: dict[str, BlockDevice]) -> list[Disk]:
    """The captured disks, each with its partition table (sfdisk dump) where it has one."""
    disks: list[Disk] = []
    for path in disk_paths:
        dev = by_path.get(path)
        if dev is None:
            raise LayoutError("disks", None, f"{path} is not in lsblk.json")
        table = None
        dump = files.get(f"sfdisk-{node_name(path)}.dump")
        if dump is not None:
            table = parse_sfdisk(dump, f"sfdisk-{node_name(path)}.dump", dev.size)
        disks.append(Disk(
            device=path, size=dev.size, sector_size=table.sector_size if table else (dev.log_sec or 512),
            model=dev.model, serial=dev.serial, table=table,
        ))
    return disks


def _probes(files: Mapping[str, bytes]) -> dict[str, dict[str, str]]:
    """blkid's facts per device node (blkid-NAME.txt)."""
    probes: dict[str, dict[str, str]] = {}
    for name, data in files.items():
        if name.startswith("blkid-") and name.endswith(".txt"):
            facts = parse_blkid(data, name)
            node = facts.get("DEVNAME") or "/dev/" + name[len("blkid-"):-len(".txt")]
            probes[node] = facts
    return probes


def _mounts(files: Mapping[str, bytes], root: str) -> tuple[list[Mount], dict[str, _Mounted]]:
    """The mounts below ROOT (relative), and per device its whole-filesystem mount."""
    mounts_all = parse_findmnt(files["findmnt.json"], "findmnt.json") if "findmnt.json" in files else ()
    mounts: list[Mount] = []
    mounted: dict[str, _Mounted] = {}  # device -> first, shallowest mount of the whole filesystem
    for m in mounts_all:
        rel = relative_to_root(m.target, root)
        dev = source_device(m.source)
        if rel is None or not dev.startswith("/dev/"):
            continue
        mounts.append(Mount(target=rel, source=m.source, fstype=m.fstype, options=m.options))
        sub = m.source[len(dev):]
        if sub in ("", "[/]") and (dev not in mounted or len(rel) < len(mounted[dev].mountpoint)):
            mounted[dev] = _Mounted(rel, m.options, m.fstype)
    return mounts, mounted


def _usage(files: Mapping[str, bytes], root: str) -> tuple[dict[str, DfEntry], dict[str, RootMeta]]:
    """df's figures and the filesystem roots' modes, by mount point relative to ROOT."""
    df: dict[str, DfEntry] = {}
    if "df.txt" in files:
        for e in parse_df(files["df.txt"], "df.txt"):
            rel = relative_to_root(e.target, root)
            if rel is not None:
                df[rel] = e
    roots: dict[str, RootMeta] = {}
    if "roots.txt" in files:
        for path, meta in parse_roots(files["roots.txt"], "roots.txt").items():
            rel = relative_to_root(path, root)
            if rel is not None:
                roots[rel] = RootMeta(rel, meta.mode, meta.uid, meta.gid)
    return df, roots


def _layers(files: Mapping[str, bytes], disk_paths: list[str]) -> BlockLayers:
    """md arrays (md-NODE-detail.export, md-NODE-detail.txt, md-examine-MEMBER.txt) and LVM
    (lvm-{pvs,vgs,lvs}.json, lvm-vgcfgbackup-VG.txt), with the disks' identity."""
    arrays = []
    for name in sorted(files):
        m = re.fullmatch(r"md-(.+)-detail\.export", name)
        if not m:
            continue
        node = m.group(1)
        export = stack.parse_export(files[name], name)
        examines = {dev: (files[f"md-examine-{node_name(dev)}.txt"], f"md-examine-{node_name(dev)}.txt")
                    for dev in stack.md_members(export) if f"md-examine-{node_name(dev)}.txt" in files}
        detail_name = f"md-{node}-detail.txt"
        arrays.append(stack.build_md_array(
            "/dev/" + node.replace("-", "/"),  # node_name's reverse: md0, md-root (/dev/md/root)
            files[name], name, files.get(detail_name), detail_name, examines))
    vgs: tuple = ()
    if all(f"lvm-{k}.json" in files for k in ("pvs", "vgs", "lvs")):
        configs = {n[len("lvm-vgcfgbackup-"):-len(".txt")]: n for n in files
                   if n.startswith("lvm-vgcfgbackup-") and n.endswith(".txt")}
        texts = {vg: read_text(files[name], name) for vg, name in configs.items()}
        vgs = stack.parse_lvm(files["lvm-pvs.json"], files["lvm-vgs.json"], files["lvm-lvs.json"], configs, texts)
    by_id = stack.parse_by_id(files["disk-by-id.txt"]) if "disk-by-id.txt" in files else {}
    luks = _luks(files)
    return BlockLayers(
        md=tuple(arrays), vgs=vgs, luks=luks,
        disks=stack.disk_identities(files["lsblk.json"], disk_paths, by_id) if (arrays or vgs or luks) else (),
        mdadm_conf="mdadm.conf" if "mdadm.conf" in files else None,
        lvm_devices_file="lvm-system.devices" if "lvm-system.devices" in files else None,
    )


def _luks(files: Mapping[str, bytes]) -> tuple[LuksDevice, ...]:
    """Each LUKS container (luks-NODE-dump.txt), with the name it was open as (lsblk's crypt
    child), its crypttab line and its kept header."""
    crypt_child: dict[str, str] = {}
    if any(n.startswith("luks-") for n in files) and "lsblk.json" in files:
        for dev in walk(tuple(parse_lsblk(files["lsblk.json"], "lsblk.json"))):
            for child in dev.children:
                if child.type == "crypt":
                    crypt_child[dev.path] = child.path
    crypttab = read_text(files["crypttab"], "crypttab") if "crypttab" in files else ""
    out = []
    for name in sorted(files):
        m = re.fullmatch(r"luks-(.+)-dump\.txt", name)
        if not m:
            continue
        node = m.group(1)
        device = "/dev/" + node.replace("-", "/")
        header = f"luks-{node}-header.img"
        found = parse_luks_dump(read_text(files[name], name), name, device)
        found = replace(found, mapping=crypt_child.get(device), header_file=header if header in files else None)
        out.append(replace(found, crypttab=crypttab_line(crypttab, found)))
    return tuple(out)


def _note_stacked_layers(disk_paths: list[str], by_path: dict[str, BlockDevice], notes: list[str],
                         layers: BlockLayers) -> None:
    stacked = sorted({d.type for p in disk_paths for d in walk((by_path[p],)) if d.type not in ("disk", "part", "loop")})
    if layers:
        recorded = [t for t in stacked if t in ("lvm", "crypt") or t in _MD_TYPES]
        if recorded:
            notes.append(f"the disks carry {', '.join(recorded)} devices: recorded (md arrays, LVM, LUKS)")
        stacked = [t for t in stacked if t not in recorded]
    if stacked:
        notes.append(f"the disks carry {', '.join(stacked)} devices: rescue rebuilds partitions, "
                     "filesystems and swap only; recreate those layers by hand before restoring onto them")


def _filesystems(on_disks: list[BlockDevice], probes: dict[str, dict[str, str]], mounted: dict[str, _Mounted],
                 df: dict[str, DfEntry], roots: dict[str, RootMeta], notes: list[str]) -> list[Filesystem]:
    """Every device on the captured disks that carries a filesystem or swap."""
    filesystems: list[Filesystem] = []
    for dev in on_disks:
        facts = probes.get(dev.path, {})
        m = mounted.get(dev.path)
        fstype = facts.get("TYPE") or dev.fstype or (m.fstype if m else None)
        if not fstype:
            continue
        if not facts.get("TYPE"):
            notes.append(f"{dev.path}: blkid could not probe it; facts from lsblk and findmnt")
        mp = m.mountpoint if m else None
        used = df.get(mp) if mp else None
        filesystems.append(Filesystem(
            device=dev.path, fstype=fstype,
            uuid=facts.get("UUID") or dev.uuid,
            label=facts.get("LABEL") or dev.label,
            partuuid=facts.get("PART_ENTRY_UUID") or dev.partuuid,
            mountpoint=mp, options=m.options if m else None,
            size=used.size if used else None, used=used.used if used else None,
            root=roots.get(mp) if mp else None,
        ))
    return filesystems


def _swaps(files: Mapping[str, bytes], filesystems: list[Filesystem], probes: dict[str, dict[str, str]],
           by_path: dict[str, BlockDevice]) -> list[Swap]:
    """What /proc/swaps shows active, plus the swap partitions on the disks."""
    swap_facts = {fs.device: fs for fs in filesystems if fs.fstype == "swap"}
    swaps: list[Swap] = []
    seen: set[str] = set()
    if "swaps" in files:
        for s in parse_swaps(files["swaps"], "swaps"):
            facts = probes.get(s.device, {})
            fs = swap_facts.get(s.device)
            swaps.append(Swap(
                device=s.device, size=s.size, priority=s.priority,
                uuid=facts.get("UUID") or (fs.uuid if fs else None),
                label=facts.get("LABEL") or (fs.label if fs else None),
            ))
            seen.add(s.device)
    for path, fs in swap_facts.items():
        if path in seen:
            continue
        swaps.append(Swap(device=path, size=by_path[path].size, uuid=fs.uuid, label=fs.label))
    return swaps


def _fstab_names(fs: Filesystem) -> set[str]:
    names = {fs.device}
    if fs.uuid:
        names |= {f"UUID={fs.uuid}", f"UUID={fs.uuid.lower()}", f"UUID={fs.uuid.upper()}"}
    if fs.label:
        names.add(f"LABEL={fs.label}")
    if fs.partuuid:
        names |= {f"PARTUUID={fs.partuuid}", f"PARTUUID={fs.partuuid.lower()}", f"PARTUUID={fs.partuuid.upper()}"}
    return names


def _mountpoints_from_fstab(
    filesystems: list[Filesystem], fstab: tuple[FstabEntry, ...], notes: list[str], subvol_mounted: set[str] = frozenset(),
) -> list[Filesystem]:
    """A filesystem not mounted at capture time (an ESP a build host cannot mount, a
    noauto entry) still has a place: the one the captured system's fstab gives it."""
    taken = {fs.mountpoint for fs in filesystems if fs.mountpoint}
    out = []
    for fs in filesystems:
        if fs.mountpoint is None and fs.fstype != "swap":
            names = _fstab_names(fs)
            for e in fstab:
                if e.spec in names and e.file.startswith("/") and e.file not in taken:
                    fs = replace(fs, mountpoint=e.file)
                    taken.add(e.file)
                    if fs.device in subvol_mounted:  # its subvolumes are: see the layout's btrfs part
                        notes.append(f"{fs.device} is mounted as btrfs subvolumes only; its mount point {e.file} "
                                     "is from fstab")
                    else:
                        notes.append(f"{fs.device} was not mounted at capture; its mount point {e.file} is from fstab")
                    break
        out.append(fs)
    return out


def _btrfs(files: Mapping[str, bytes], mounts: list[Mount], probes: dict[str, dict[str, str]],
           fstab: tuple[FstabEntry, ...], root: str) -> tuple[BtrfsVolume, ...]:
    """Per btrfs filesystem read at capture (btrfs-NODE-*.txt): its subvolumes and where the
    machine shows them, its default subvolume, mounts with their fstab lines, nocow folders
    and quota groups."""
    volumes = []
    for name in sorted(files):
        m = re.fullmatch(r"btrfs-(.+)-subvolumes\.txt", name)
        if not m:
            continue
        node = m.group(1)
        rows = btrfs.parse_subvolume_list(files[name], name)
        ro_name, default_name = f"btrfs-{node}-readonly.txt", f"btrfs-{node}-default.txt"
        readonly = btrfs.parse_readonly_ids(files.get(ro_name, b""), ro_name)
        default_id = btrfs.parse_get_default(files[default_name], default_name) if default_name in files \
            else btrfs.TOP_LEVEL
        dev = next((d for d in {source_device(x.source) for x in mounts} if node_name(d) == node), "/dev/" + node)
        facts = probes.get(dev, {})
        names = {dev}
        if facts.get("UUID"):
            names |= {f"UUID={facts['UUID']}", f"UUID={facts['UUID'].lower()}", f"UUID={facts['UUID'].upper()}"}
        if facts.get("LABEL"):
            names.add(f"LABEL={facts['LABEL']}")
        if facts.get("PART_ENTRY_UUID"):
            names.add(f"PARTUUID={facts['PART_ENTRY_UUID'].lower()}")
            names.add(f"PARTUUID={facts['PART_ENTRY_UUID'].upper()}")
        mounted = [x for x in mounts if x.fstype == "btrfs" and source_device(x.source) == dev]
        bmounts = btrfs.join_mounts(mounted, fstab, names, rows)
        qname, nname = f"btrfs-{node}-qgroups.txt", f"btrfs-{node}-nocow.txt"
        qgroups = btrfs.parse_qgroups(files[qname], qname) if qname in files else ()
        nocow = [rel for p in (btrfs.parse_nocow(files[nname], nname) if nname in files else ())
                 if (rel := relative_to_root(p, root)) is not None]
        volumes.append(BtrfsVolume(
            device=dev, uuid=facts.get("UUID"), label=facts.get("LABEL"), default_id=default_id,
            subvolumes=btrfs.subvolumes_seen(rows, readonly, bmounts, default_id), mounts=bmounts,
            nocow=btrfs.topmost(nocow), quota=qname in files, qgroups=qgroups,
        ))
    return tuple(volumes)


def _boot(files: Mapping[str, bytes], disks: list[Disk], filesystems: list[Filesystem], notes: list[str]) -> Boot:
    esp_parts = set()
    for d in disks:
        if d.table is None:
            continue
        for p in d.table.partitions:
            if (d.table.label == "gpt" and p.type == ESP_GPT) or (d.table.label == "dos" and p.type == ESP_DOS):
                esp_parts.add(p.number)
                esp_parts.add(p.node)
    esp = None
    for fs in filesystems:
        if fs.fstype == "vfat" and fs.mountpoint and (fs.device in esp_parts or fs.mountpoint in ("/boot/efi", "/efi", "/boot")):
            esp = fs.mountpoint
            break
    said = read_text(files.get("boot-mode", b""), "boot-mode").strip()
    if said in ("uefi", "bios"):
        mode = BootMode(said)
    else:
        mode = BootMode.UEFI if esp_parts else BootMode.BIOS
        notes.append(f"boot mode {mode.value}: decided by {'the ESP on' if esp_parts else 'no ESP on'} the disk (system not running)")
    by_mp = {fs.mountpoint: fs for fs in filesystems if fs.mountpoint}
    boot_fs = by_mp.get("/boot") or by_mp.get("/")
    grub_disk = None
    if boot_fs is not None:
        for d in disks:
            if boot_fs.device == d.device or disk_of(boot_fs.device) == d.device:
                grub_disk = d.device
    elif len(disks) == 1:
        grub_disk = disks[0].device
    grub_dirs = read_text(files.get("grub", b""), "grub").split()
    return Boot(mode=mode, esp=esp, grub_disk=grub_disk, has_grub=bool(grub_dirs))
