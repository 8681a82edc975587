"""Run the plain commands and keep their raw output, file by file.

The raw files are what lands in the image's rescue/ folder beside
layout.json, so a person (or a later rescue) can always see what the client
said. Two kinds of capture:

- running: a live machine (this one, or a client over ssh): every disk,
  what is mounted, /proc/swaps, /sys/firmware/efi.
- offline (--disk DEV --root DIR): a system that is not running, its disk
  attached here and its filesystems mounted under DIR. Only DEV is read and
  only mounts under DIR count; their mount points are recorded relative to
  DIR, so a vault whose tree is DIR/home maps to /home.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rescue.capture import probe
from rescue.capture.build import node_name
from rescue.capture.probe import LocalRunner, Runner, checked_device
from rescue.errors import LayoutError, RescueError
from rescue.layout.btrfs import (
    mount_subvol,
    nocow_lines,
    parse_get_default,
    parse_readonly_ids,
    parse_subvolume_list,
    subvolumes_seen,
)
from rescue.layout.findmnt import parse_findmnt, source_device
from rescue.layout.lsblk import BlockDevice, parse_lsblk, walk
from rescue.layout.model import BtrfsMount, Mount
from rescue.layout.stack import md_members, parse_export
from rescue.layout.swaps import parse_swaps
from rescue.run import CommandError


@dataclass
class Raw:
    """Raw command outputs by file name, as bytes."""

    files: dict[str, bytes] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def _bytes(stdout: str) -> bytes:
    """rescue.run(binary=True) keeps every byte as one latin-1 character."""
    return stdout.encode("latin-1", errors="surrogateescape")


def _blkid(runner: Runner, raw: Raw, node: str) -> None:
    r = runner([*probe.BLKID, node], ok=(0, 2))  # 2: nothing found on the device
    raw.files[f"blkid-{node_name(node)}.txt"] = _bytes(r.stdout)


def _sfdisk(runner: Runner, raw: Raw, disk: str, required: bool) -> None:
    try:
        r = runner([*probe.SFDISK, disk])
    except CommandError as e:
        if required:
            raise RescueError(
                f"sfdisk could not read the partition table of {disk}",
                why=e.stderr.strip() or f"exit {e.returncode}",
                fix="capture needs a disk with a dos or gpt partition table",
            ) from None
        raw.warnings.append(f"{disk}: no partition table read ({e.stderr.strip()[:80]})")
        return
    raw.files[f"sfdisk-{node_name(disk)}.dump"] = _bytes(r.stdout)


def _optional_cat(runner: Runner, raw: Raw, name: str, paths: list[str]) -> None:
    for path in paths:
        r = runner(["cat", path], ok=(0, 1))
        if r.returncode == 0:
            raw.files[name] = _bytes(r.stdout)
            return
    raw.warnings.append(f"{name}: none of {', '.join(paths)} could be read")


def _stat_roots(runner: Runner, raw: Raw, targets: list[str]) -> None:
    if targets:
        r = runner([*probe.STAT_ROOTS, *targets])
        raw.files["roots.txt"] = _bytes(r.stdout)
    else:
        raw.files["roots.txt"] = b""


def _btrfs(runner: Runner, raw: Raw, mounts: Sequence[Mount]) -> None:
    """Per btrfs filesystem (by the device it is mounted from), read through its shallowest
    mount: its subvolumes, the read-only ones, the default subvolume, quota groups if quotas
    are on, and the folders with +C (nocow) near the top of each of its mounts.

    Raw files btrfs-NODE-{subvolumes,readonly,default,qgroups,nocow}.txt. A machine without
    btrfs-progs gets a warning, never a failed capture: its other filesystems still count."""
    by_dev: dict[str, list[str]] = {}
    for m in mounts:
        if m.fstype == "btrfs":
            by_dev.setdefault(checked_device(source_device(m.source)), []).append(m.target)
    for dev, targets in sorted(by_dev.items()):
        targets = sorted(set(targets), key=lambda t: (t.count("/"), t))
        where, name = targets[0], f"btrfs-{node_name(dev)}"
        try:
            raw.files[f"{name}-subvolumes.txt"] = _bytes(runner([*probe.BTRFS_SUBVOLUMES, where]).stdout)
            raw.files[f"{name}-readonly.txt"] = _bytes(runner([*probe.BTRFS_READONLY, where]).stdout)
            raw.files[f"{name}-default.txt"] = _bytes(runner([*probe.BTRFS_DEFAULT, where]).stdout)
            q = runner([*probe.BTRFS_QGROUPS, where], ok=(0, 1))
        except CommandError as e:
            raw.warnings.append(f"{dev}: btrfs subvolumes not recorded ({(e.stderr or '').strip()[:120]})")
            for part in ("subvolumes", "readonly", "default"):
                raw.files.pop(f"{name}-{part}.txt", None)
            continue
        if q.returncode == 0:
            raw.files[f"{name}-qgroups.txt"] = _bytes(q.stdout)
        elif "not enabled" not in q.stderr:
            raw.warnings.append(f"{dev}: btrfs quota groups not read ({q.stderr.strip()[:120]})")
        lines: list[bytes] = []
        for target in [*targets, *_nested(raw, name, dev, mounts)]:
            try:
                r = runner(probe.nocow_walk(target), ok=(0, 1, 124))  # 1: a folder lsattr could not read
            except CommandError as e:
                raw.warnings.append(f"{target}: nocow folders not looked for ({(e.stderr or '').strip()[:120]})")
                continue
            if r.returncode == 124:
                raw.warnings.append(f"{target}: the walk for nocow folders did not end within "
                                    f"{probe.NOCOW_SECONDS} s; those found so far are recorded")
            kept, odd = nocow_lines(_bytes(r.stdout))
            lines += kept
            if odd:
                raw.warnings.append(f"{target}: {odd} nocow folder(s) with a name that is not UTF-8 not recorded")
        # only the +C lines are kept: the walk prints one line per folder (thousands a night)
        raw.files[f"{name}-nocow.txt"] = b"".join(line + b"\n" for line in lines)


def _nested(raw: Raw, name: str, dev: str, mounts: Sequence[Mount]) -> list[str]:
    """Where the machine shows the subvolumes that are not mounted of their own (seen inside a
    mounted one, which -xdev does not walk into), read-only snapshots left out: their folders
    are walked for nocow too, the first NOCOW_NESTED of them (docker's btrfs driver makes a
    subvolume per image layer: hundreds)."""
    try:
        rows = parse_subvolume_list(raw.files[f"{name}-subvolumes.txt"], f"{name}-subvolumes.txt")
        readonly = parse_readonly_ids(raw.files[f"{name}-readonly.txt"], f"{name}-readonly.txt")
        default = parse_get_default(raw.files[f"{name}-default.txt"], f"{name}-default.txt")
    except LayoutError:
        return []  # build says what is wrong with these files; the walk does without them
    here = [m for m in mounts if m.fstype == "btrfs" and source_device(m.source) == dev]
    seen = subvolumes_seen(rows, readonly, [BtrfsMount(m.target, *mount_subvol(m.options)) for m in here], default)
    paths = sorted(s.seen_at for s in seen if s.seen_at and not s.mounted and not (s.snapshot and s.readonly))
    if len(paths) > probe.NOCOW_NESTED:
        raw.warnings.append(f"{dev}: nocow folders looked for in {probe.NOCOW_NESTED} of its {len(paths)} "
                            "subvolumes that are not mounted of their own")
    return paths[:probe.NOCOW_NESTED]


MD_TYPES = ("raid0", "raid1", "raid4", "raid5", "raid6", "raid10", "linear", "md")
TEMP = re.compile(r"/tmp/tmp\.[A-Za-z0-9]+")
VG_NAME = re.compile(r"[A-Za-z0-9+_.][A-Za-z0-9+_.-]*")


def layered(devices: Sequence[BlockDevice]) -> tuple[list[str], bool]:
    """The md arrays (paths, once each) and whether LVM is there, as lsblk shows them."""
    md: list[str] = []
    lvm = False
    for d in walk(tuple(devices)):
        if d.type in MD_TYPES and d.path not in md:
            md.append(d.path)
        if d.type == "lvm" or d.fstype == "LVM2_member":
            lvm = True
    return md, lvm


def luks_devices(devices: Sequence[BlockDevice], raw: Raw) -> list[str]:
    """The LUKS containers (paths, once each), open or not: as lsblk shows them, or as blkid's
    probe (already in raw) found them where lsblk has no udev to ask."""
    found: list[str] = []
    for d in walk(tuple(devices)):
        probed = raw.files.get(f"blkid-{node_name(d.path)}.txt", b"")
        if (d.fstype == "crypto_LUKS" or b"TYPE=crypto_LUKS" in probed.splitlines()) and d.path not in found:
            found.append(d.path)
    return found


def _layers(runner: Runner, raw: Raw, devices: Sequence[BlockDevice], root: str = "/") -> None:
    """md arrays, LVM and LUKS under the filesystems: what mdadm, pvs/vgs/lvs, vgcfgbackup
    and cryptsetup say, mdadm.conf, the LVM devices file, crypttab, each LUKS header and the
    disks' by-id names. Nothing runs on a machine whose lsblk shows none of them (most of
    them): its capture stays as it was."""
    md, lvm = layered(devices)
    luks = luks_devices(devices, raw)
    if not md and not lvm and not luks:
        return
    r = runner(list(probe.BY_ID), ok=(0, 1))
    raw.files["disk-by-id.txt"] = _bytes(r.stdout)
    if md:
        _optional_cat(runner, raw, "mdstat", ["/proc/mdstat"])
        _optional_cat(runner, raw, "mdadm.conf", list(probe.MDADM_CONF))
        for array in md:
            node = node_name(checked_device(array))
            try:
                export = runner([*probe.MD_DETAIL_EXPORT, array]).stdout
                raw.files[f"md-{node}-detail.export"] = _bytes(export)
                raw.files[f"md-{node}-detail.txt"] = _bytes(runner([*probe.MD_DETAIL, array]).stdout)
            except CommandError as e:
                raise RescueError(
                    f"mdadm could not read the array {array}",
                    why=(e.stderr or "").strip()[:200] or f"exit {e.returncode}",
                    fix="install mdadm on the client; without it the array cannot be recorded or rebuilt",
                ) from None
            for member in md_members(parse_export(_bytes(export), f"md-{node}-detail.export")):
                member = checked_device(member)
                r = runner([*probe.MD_EXAMINE, member], ok=(0, 1))
                if r.returncode:
                    raw.warnings.append(f"{array}: mdadm --examine {member} failed ({r.stderr.strip()[:100]})")
                    continue
                raw.files[f"md-examine-{node_name(member)}.txt"] = _bytes(r.stdout)
    if lvm:
        try:
            for name, argv in (("lvm-pvs.json", probe.PVS), ("lvm-vgs.json", probe.VGS), ("lvm-lvs.json", probe.LVS)):
                raw.files[name] = _bytes(runner(list(argv)).stdout)
        except CommandError as e:
            raise RescueError(
                "the LVM commands (pvs, vgs, lvs) failed on the client",
                why=(e.stderr or "").strip()[:200] or f"exit {e.returncode}",
                fix="install lvm2 on the client (2.02.158 or newer for --reportformat json)",
            ) from None
        r = runner(["cat", probe.LVM_DEVICES_FILE], ok=(0, 1))
        if r.returncode == 0:
            raw.files["lvm-system.devices"] = _bytes(r.stdout)
        _vgcfgbackups(runner, raw)
    if luks:
        _optional_cat(runner, raw, "crypttab", [os.path.join(root, "etc/crypttab")])
        for dev in luks:
            _luks_header(runner, raw, checked_device(dev))


def _luks_header(runner: Runner, raw: Raw, dev: str) -> None:
    """`cryptsetup luksDump` and the header itself (`luksHeaderBackup` into a temporary folder
    on the client, read, then removed): the restore writes it back, so the UUID and every
    keyslot, hence every old passphrase and keyfile, open the new disk."""
    node = node_name(dev)
    try:
        raw.files[f"luks-{node}-dump.txt"] = _bytes(runner([*probe.LUKS_DUMP, dev]).stdout)
    except CommandError as e:
        raise RescueError(
            f"cryptsetup could not read the LUKS header of {dev}",
            why=(e.stderr or "").strip()[:200] or f"exit {e.returncode}",
            fix="install cryptsetup (Debian: cryptsetup-bin) on the client; without it the container "
                "cannot be recorded or made again",
        ) from None
    tmp = runner(list(probe.MKTEMP_DIR)).stdout.strip()
    if not TEMP.fullmatch(tmp):
        raw.warnings.append(f"mktemp -d on the client gave {tmp[:60]!r}: the LUKS header of {dev} not kept")
        return
    try:
        path = f"{tmp}/header.img"
        runner([*probe.LUKS_HEADER_BACKUP, dev, "--header-backup-file", path])
        raw.files[f"luks-{node}-header.img"] = _bytes(runner(["cat", path]).stdout)
    except CommandError as e:
        raw.warnings.append(f"the LUKS header of {dev} was not kept: {(e.stderr or '').strip()[:120]}")
    finally:
        runner(["rm", "-rf", tmp], ok=(0, 1))


def _vgcfgbackups(runner: Runner, raw: Raw) -> None:
    """`vgcfgbackup -f` of each VG into a temporary file on the client, read, then removed."""
    import json

    try:
        doc = json.loads(raw.files["lvm-vgs.json"])
        names = [row["vg_name"] for rep in doc["report"] for row in rep["vg"]]
    except (ValueError, KeyError, TypeError):
        return  # build says what is wrong with lvm-vgs.json
    for vg in names:
        if not isinstance(vg, str) or not VG_NAME.fullmatch(vg):
            raw.warnings.append(f"volume group {vg!r}: an odd name, its vgcfgbackup not recorded")
            continue
        tmp = runner(list(probe.MKTEMP)).stdout.strip()
        if not TEMP.fullmatch(tmp):
            raw.warnings.append(f"mktemp on the client gave {tmp[:60]!r}: vgcfgbackup of {vg} not recorded")
            continue
        try:
            b = runner([*probe.VGCFGBACKUP, tmp, vg], ok=(0, 5))
            if b.returncode == 0:
                raw.files[f"lvm-vgcfgbackup-{vg}.txt"] = _bytes(runner(["cat", tmp]).stdout)
            else:
                raw.warnings.append(f"vgcfgbackup {vg} failed: {b.stderr.strip()[:120]}")
        finally:
            runner(["rm", "-f", tmp], ok=(0, 1))


def disks_to_skip(devices: tuple[BlockDevice, ...], mounts: Sequence[Mount], backup_paths: Sequence[str]) -> dict[str, str]:
    """Disks holding the backup (the bank an image is written to) are not part of the
    machine to restore, unless they also hold its /. Returns {disk: reason}."""
    def disk_holding(path: str) -> BlockDevice | None:
        best = None
        for m in mounts:
            if _under(path, m.target) and (best is None or len(m.target) > len(best.target)):
                best = m
        if best is None:
            return None
        src = source_device(best.source)
        return next((d for d in devices if any(x.path == src for x in walk((d,)))), None)

    root_disk = disk_holding("/")
    skip = {}
    for path in backup_paths:
        disk = disk_holding(path)
        if disk is not None and disk is not root_disk:
            skip[disk.path] = f"{disk.path} holds the backup ({path}), not the machine: not recorded"
    return skip


def collect_running(runner: Runner | None = None, backup_paths: Sequence[str] = ()) -> Raw:
    """A live machine: every disk it has, what it mounts, its swap and boot mode.

    backup_paths: where the image is being written when the machine backs itself
    up (hook mode, local client); the disk holding them is left out."""
    runner = runner or LocalRunner()
    raw = Raw()
    raw.files["hostname"] = _bytes(runner(list(probe.HOSTNAME)).stdout)
    _optional_cat(runner, raw, "os-release", ["/etc/os-release", "/usr/lib/os-release"])
    raw.files["lsblk.json"] = _bytes(runner(list(probe.LSBLK)).stdout)
    devices = parse_lsblk(raw.files["lsblk.json"], "lsblk.json")
    raw.files["findmnt.json"] = _bytes(runner(list(probe.FINDMNT)).stdout)
    mounts = parse_findmnt(raw.files["findmnt.json"], "findmnt.json")
    _optional_cat(runner, raw, "fstab", ["/etc/fstab"])
    raw.files["swaps"] = _bytes(runner(list(probe.SWAPS)).stdout)
    efi = runner(list(probe.EFI), ok=(0, 1))
    raw.files["boot-mode"] = b"uefi\n" if efi.returncode == 0 else b"bios\n"
    grub = [d for d in probe.GRUB_DIRS if runner(["test", "-d", d], ok=(0, 1)).returncode == 0]
    raw.files["grub"] = ("\n".join(grub) + "\n").encode() if grub else b""

    # zram and other memory-backed "disks" have nothing to restore
    disks = [d for d in devices if d.type == "disk" and d.size > 0 and not d.name.startswith(("zram", "ram"))]
    skip = disks_to_skip(devices, mounts, backup_paths)
    raw.warnings.extend(skip.values())
    disks = [d for d in disks if d.path not in skip]
    raw.files["disks"] = "".join(checked_device(d.path) + "\n" for d in disks).encode()
    active_swaps = {s.device for s in parse_swaps(raw.files["swaps"], "swaps")}
    probed: set[str] = set()
    for disk in disks:
        _sfdisk(runner, raw, disk.path, required=False)
        for dev in walk((disk,)):
            if dev.path not in probed:  # an md array or LV shows under each of its disks
                probed.add(dev.path)
                _blkid(runner, raw, checked_device(dev.path))
    _layers(runner, raw, disks)
    on_disks = {d.path for disk in disks for d in walk((disk,))}
    for sw in sorted(active_swaps - on_disks):
        if sw.startswith("/dev/"):
            _blkid(runner, raw, checked_device(sw))
    targets = sorted({m.target for m in mounts if source_device(m.source) in on_disks})
    if targets:
        # only the disks' own mounts: a plain `df` would hang on a dead network mount
        df = runner([*probe.DF, *targets], ok=(0, 1))  # 1: some mount could not be read
        raw.files["df.txt"] = _bytes(df.stdout)
        if df.returncode:
            raw.warnings.append("df: " + df.stderr.strip()[:200])
    _stat_roots(runner, raw, targets)
    _btrfs(runner, raw, [m for m in mounts if source_device(m.source) in on_disks])
    return raw


def _under(target: str, root: str) -> bool:
    return target == root or target.startswith(root.rstrip("/") + "/")


def collect_offline(disk: str | Sequence[str], root: Path, runner: Runner | None = None) -> Raw:
    """A system that is not running: its disk (or disks) attached here, mounted under root."""
    runner = runner or LocalRunner()
    raw = Raw()
    disks = [checked_device(d) for d in ([disk] if isinstance(disk, str) else disk)]
    disk = " and ".join(disks)
    root_s = os.path.realpath(root)
    if not os.path.isdir(root_s):
        raise RescueError(f"--root {root} is not a folder", fix="mount the captured system's / there first")
    for d in disks:
        if not os.path.exists(d):
            raise RescueError(f"{d} does not exist", fix="attach the disk (losetup -fP IMAGE) and give its device")
    try:
        raw.files["lsblk.json"] = _bytes(runner([*probe.LSBLK, *disks]).stdout)
    except CommandError as e:
        raise RescueError(f"lsblk cannot read {disk}", why=e.stderr.strip()) from None
    devices = parse_lsblk(raw.files["lsblk.json"], "lsblk.json")
    if len(devices) != len(disks) or any(d.type not in ("disk", "loop") for d in devices):
        raise RescueError(f"{disk} is not a whole disk", fix="give the disk (/dev/sdb, /dev/loop3), not a partition")
    raw.files["disks"] = "".join(d + "\n" for d in disks).encode()
    for d in disks:
        _sfdisk(runner, raw, d, required=True)
    nodes = [checked_device(d.path) for d in walk(devices)]
    for node in nodes:
        _blkid(runner, raw, node)
    _layers(runner, raw, devices, root_s)  # md, LVM and LUKS on that disk (lsblk shows them as its children)
    r = runner([*probe.FINDMNT, "--submounts", "--mountpoint", root_s], ok=(0, 1))
    if r.returncode != 0:
        raise RescueError(f"nothing is mounted at {root_s}", fix=f"mount the / filesystem of {disk} at {root_s}")
    raw.files["findmnt.json"] = _bytes(r.stdout)
    mounts = [m for m in parse_findmnt(raw.files["findmnt.json"], "findmnt.json") if _under(m.target, root_s)]
    ours = [m for m in mounts if source_device(m.source) in nodes]
    if not any(m.target == root_s for m in ours):
        raise RescueError(
            f"what is mounted at {root_s} is not on {disk}",
            fix=f"mount the / filesystem of {disk} at {root_s}, its other filesystems below it",
        )
    targets = sorted({m.target for m in ours})
    df = runner([*probe.DF, *targets])
    raw.files["df.txt"] = _bytes(df.stdout)
    _stat_roots(runner, raw, targets)
    _btrfs(runner, raw, ours)
    _optional_cat(runner, raw, "fstab", [f"{root_s}/etc/fstab"])
    _optional_cat(runner, raw, "os-release", [f"{root_s}/etc/os-release", f"{root_s}/usr/lib/os-release"])
    r = runner(["cat", f"{root_s}/etc/hostname"], ok=(0, 1))
    raw.files["hostname"] = _bytes(r.stdout) if r.returncode == 0 else b""
    grub = [d for d in probe.GRUB_DIRS if runner(["test", "-d", root_s + d], ok=(0, 1)).returncode == 0]
    raw.files["grub"] = ("\n".join(grub) + "\n").encode() if grub else b""
    raw.files["boot-mode"] = b"from-disk\n"  # not running: decided by the ESP on the disk
    return raw
