"""Facts about a disk rescue might write: size, partitions, signatures, and
whether it is in use (mounted, running root, backup source, active swap).

Sources, each for what it is good at:
- sysfs (/sys/dev/block/MAJ:MIN): whole disk or partition, size, read-only,
  sector size, partitions, holders, loop backing files. Always there.
- `lsblk -J -b -O`: model, serial, fstype, UUID, LABEL. Without udev (build
  hosts, some rescue boots) it reports no fstype/UUID/LABEL at all, so an
  empty answer is never taken as "no filesystem": `blkid -p` then probes
  the device itself.
- `wipefs --json` (list only, it erases nothing): signatures on the disk.
- /proc/self/mountinfo and /proc/swaps: what is in use, followed through
  partitions, holders (dm, md), loop devices and their backing files, so a
  loop disk whose image file lives on the backup disk counts as that disk.
- blkinfo lists the machine's disks (it leaves out loop devices; those are
  added from sysfs, and sysfs lists the rest only where lsblk cannot run).
- pyparted (rescue.libparted) reads the target's geometry: sector sizes, the
  kernel's optimal I/O alignment and the usable range, for the plan.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rescue import libparted
from rescue.formats.mountinfo import MountInfo, parse_mountinfo
from rescue.layout import swaps
from rescue.devices import sys_list
from rescue.errors import RescueError
from rescue.run import CommandError, run
from rescue.target import ExistingPartition, TargetDisk

SYS = Path("/sys")
PROC = Path("/proc")


# --------------------------------------------------------------------------- sysfs


@dataclass(frozen=True)
class BlockNode:
    """A block device as the kernel sees it."""

    name: str  # kernel name: sda, sda1, loop3p1, dm-0
    sys: Path  # its folder under /sys/devices
    partition: bool

    @property
    def disk(self) -> str:
        """The whole disk this node is, or lives on."""
        return self.sys.parent.name if self.partition else self.name


def _read(path: Path, default: str = "") -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return default


def node_of(major: int, minor: int) -> BlockNode | None:
    link = SYS / "dev" / "block" / f"{major}:{minor}"
    try:
        real = link.resolve(strict=True)
    except OSError:
        return None
    return BlockNode(real.name, real, (real / "partition").exists())


def node_by_name(name: str) -> BlockNode | None:
    real = SYS / "class" / "block" / name
    try:
        real = real.resolve(strict=True)
    except OSError:
        return None
    return BlockNode(real.name, real, (real / "partition").exists())


def _partitions(disk: BlockNode) -> list[BlockNode]:
    out = []
    for child in sorted(sys_list(disk.sys), key=lambda p: _part_number(p.name)):
        if child.name.startswith(disk.name) and (child / "partition").exists():
            out.append(BlockNode(child.name, child, True))
    return out


def _part_number(name: str) -> tuple[int, str]:
    digits = ""
    for ch in reversed(name):
        if not ch.isdigit():
            break
        digits = ch + digits
    return (int(digits) if digits else -1, name)


def _holders(node: BlockNode, seen: set[str]) -> set[str]:
    """Kernel names stacked on top of a node (dm, md), recursively."""
    out: set[str] = set()
    holders = node.sys / "holders"
    for h in sys_list(holders):
        if h.name in seen:
            continue
        seen.add(h.name)
        out.add(h.name)
        hn = node_by_name(h.name)
        if hn is not None:
            out |= _holders(hn, seen)
    return out


# --------------------------------------------------------------------------- what lies under a path


def mounts() -> list[MountInfo]:
    return parse_mountinfo(_read(PROC / "self" / "mountinfo"))


def parse_swaps(text: str) -> list[str]:
    """Active swap areas (devices or files) from /proc/swaps."""
    return [s.device for s in swaps.parse_swaps(text, "/proc/swaps")]


def _geometry(path: str) -> libparted.Geometry | None:
    """libparted's reading of the disk (sector sizes, alignment, usable range); None where it cannot open it."""
    try:
        return libparted.read_geometry(path)
    except Exception:  # pyparted raises its own exception types and IOError for unreadable devices
        return None


def _block_rdev(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISBLK(st.st_mode):
        return None
    return os.major(st.st_rdev), os.minor(st.st_rdev)


def disks_of_dev(major: int, minor: int, _seen: set[tuple[int, int]] | None = None,
                 _mounts: list[MountInfo] | None = None) -> set[str]:
    """Every whole disk a device number ultimately lives on: through partitions,
    dm/md slaves, loop backing files, and (for btrfs, overlay and other
    filesystems without a device number of their own) the mount's source."""
    seen = _seen if _seen is not None else set()
    if (major, minor) in seen:
        return set()
    seen.add((major, minor))
    node = node_of(major, minor) if major != 0 else None
    if node is None:
        out: set[str] = set()
        for m in _mounts if _mounts is not None else mounts():
            if (m.major, m.minor) != (major, minor):
                continue
            rdev = _block_rdev(m.source) if m.source.startswith("/") else None
            if rdev is not None:
                out |= disks_of_dev(*rdev, _seen=seen, _mounts=_mounts)
            if m.fstype == "overlay":
                for opt in m.super_options.split(","):
                    key, _, value = opt.partition("=")
                    if key in ("lowerdir", "upperdir"):
                        for d in value.split(":"):
                            if d:
                                out |= disks_under(Path(d), _seen=seen)
        return out
    disk = node.disk
    out = {disk}
    disk_node = node_by_name(disk) if node.partition else node
    if disk_node is not None:
        backing = _read(disk_node.sys / "loop" / "backing_file")
        if backing:
            out |= disks_under(Path(backing.removesuffix(" (deleted)")), _seen=seen)
        for slave in (disk_node.sys / "slaves").glob("*") if (disk_node.sys / "slaves").is_dir() else ():
            sn = node_by_name(slave.name)
            if sn is not None:
                mj, mn = (int(x) for x in _read(sn.sys / "dev", "0:0").split(":"))
                out |= disks_of_dev(mj, mn, _seen=seen, _mounts=_mounts)
    return out


def disks_under(path: Path, *, _seen: set[tuple[int, int]] | None = None) -> set[str]:
    """The whole disks (kernel names) holding the filesystem where `path` lives."""
    try:
        st = os.stat(path)
    except OSError:
        return set()
    return disks_of_dev(os.major(st.st_dev), os.minor(st.st_dev), _seen=_seen)


# --------------------------------------------------------------------------- probing one disk


def _resolve_device(device: str) -> tuple[str, BlockNode]:
    try:
        st = os.stat(device)
    except FileNotFoundError:
        raise RescueError(
            f"{device} does not exist",
            why="the target must be a disk device, e.g. /dev/sdb or /dev/nvme1n1",
            fix="rescue disks (or lsblk) lists the disks of this machine",
        ) from None
    except OSError as e:
        raise RescueError(f"{device} cannot be read", why=e.strerror,
                          fix="run rescue as root") from None
    if not stat.S_ISBLK(st.st_mode):
        raise RescueError(
            f"{device} is not a block device",
            why="a restore writes a whole disk, never a file or a folder",
            fix="give the disk's device, e.g. /dev/sdb (rescue disks or lsblk lists them)",
        )
    node = node_of(os.major(st.st_rdev), os.minor(st.st_rdev))
    if node is None:
        raise RescueError(f"{device} is not known to the kernel",
                          why="no /sys/dev/block entry for its device number",
                          fix="check that the disk is attached (dmesg), or give another")
    return os.path.realpath(device), node


def _lsblk(device: str) -> dict:
    try:
        data = json.loads(run(["lsblk", "-J", "-b", "-O", device]).stdout)
        return data["blockdevices"][0]
    except (CommandError, ValueError, KeyError, IndexError):
        return {}


def blkid_probe(device: str) -> dict[str, str] | None:
    """What `blkid -p` finds on the device itself ({} = nothing; None = could not probe)."""
    if not os.path.exists(device):
        return None
    r = run(["blkid", "-p", "-o", "export", device], check=False)
    if r.returncode == 2 and not r.stderr.strip():  # probed, and nothing there
        return {}
    if r.returncode != 0:
        return None
    out = {}
    for line in r.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key] = value
    return out


def _signatures(device: str) -> tuple[str, ...]:
    try:
        data = json.loads(run(["wipefs", "--json", device]).stdout or "{}")
    except (CommandError, ValueError) as e:
        probed = blkid_probe(device)
        if probed is None:  # unknown is not empty: the review must not promise a blank disk
            reason = e.stderr.strip().splitlines()[-1] if isinstance(e, CommandError) and e.stderr.strip() else "?"
            return (f"unknown (cannot be probed: {reason})",)
        return tuple(probed[k] for k in ("PTTYPE", "TYPE") if probed.get(k))
    return tuple(f"{s.get('type')} at {s.get('offset')}" for s in data.get("signatures", []))


def _fs_facts(path: str, lsblk_entry: dict) -> tuple[str | None, str | None, str | None]:
    fstype, label, uuid = (lsblk_entry.get(k) or None for k in ("fstype", "label", "uuid"))
    if fstype is None:  # no udev: lsblk knows nothing; ask the device itself
        probed = blkid_probe(path) or {}
        fstype = probed.get("TYPE") or None
        label = probed.get("LABEL") or label
        uuid = probed.get("UUID") or uuid
    return fstype, label, uuid


def probe_disk(device: str, *, backup_sources: Sequence[Path] = ()) -> TargetDisk:
    """Every fact the plan and the safety check need about one candidate disk."""
    path, node = _resolve_device(device)
    disk_sys = node.sys
    info = _lsblk(path)
    children = {c.get("name"): c for c in info.get("children") or []}
    size = int(_read(disk_sys / "size", "0")) * 512
    sector = int(_read((disk_sys.parent if node.partition else disk_sys) / "queue" / "logical_block_size",
                       str(info.get("log-sec") or 512)))

    parts = [] if node.partition else _partitions(node)
    members = {node.name} | {p.name for p in parts}
    members |= _holders(node, set())
    for p in parts:
        members |= _holders(p, set())

    all_mounts = mounts()
    dev_cache: dict[tuple[int, int], set[str]] = {}

    def on_this_disk(major: int, minor: int) -> bool:
        key = (major, minor)
        if key not in dev_cache:
            dev_cache[key] = disks_of_dev(major, minor, _mounts=all_mounts)
        names = dev_cache[key]
        n = node_of(major, minor)
        return node.name in names or (n is not None and n.name in members)

    mounted = tuple(sorted({m.target for m in all_mounts if on_this_disk(m.major, m.minor)}))
    part_mounts: dict[str, set[str]] = {}
    for m in all_mounts:
        n = node_of(m.major, m.minor) if m.major else None
        if n is None and m.source.startswith("/dev/"):
            rdev = _block_rdev(m.source)
            n = node_of(*rdev) if rdev else None
        if n is not None:
            part_mounts.setdefault(n.name, set()).add(m.target)

    swap_active = False
    for s in parse_swaps(_read(PROC / "swaps")):
        rdev = _block_rdev(s)
        if rdev is not None:
            swap_active |= on_this_disk(*rdev)
        else:
            swap_active |= node.name in disks_under(Path(s))

    holds_root = node.name in disks_under(Path("/")) or (node.partition and node.disk in disks_under(Path("/")))
    holds_backup = False
    for src in backup_sources:
        under = disks_under(Path(src))
        holds_backup |= node.name in under or (node.partition and node.disk in under)

    partitions = []
    for p in parts:
        ppath = f"/dev/{p.name}"
        fstype, label, uuid = _fs_facts(ppath, children.get(p.name, {}))
        partitions.append(ExistingPartition(
            device=ppath,
            size=int(_read(p.sys / "size", "0")) * 512,
            fstype=fstype, label=label, uuid=uuid,
            mountpoints=tuple(sorted(part_mounts.get(p.name, ()))),
        ))
    pttype = info.get("pttype") or None
    if pttype is None and not node.partition:
        pttype = (blkid_probe(path) or {}).get("PTTYPE") or None

    geometry = _geometry(path) if not node.partition else None
    return TargetDisk(
        device=path,
        size=size,
        sector_size=geometry.logical_sector if geometry else sector,
        physical_sector_size=geometry.physical_sector if geometry else None,
        io_align=(geometry.align_offset, geometry.align_grain) if geometry else None,
        usable=(geometry.first_usable, geometry.last_usable) if geometry else None,
        model=(info.get("model") or _read(disk_sys / "device" / "model") or None),
        serial=info.get("serial") or None,
        by_id=_by_id(path),
        whole_disk=not node.partition,
        read_only=_read(disk_sys / "ro", "0") == "1",
        pttype=pttype,
        partitions=tuple(partitions),
        signatures=_signatures(path),
        mounted=mounted,
        holds_backup=holds_backup,
        holds_root=bool(holds_root),
        swap_active=swap_active,
        backing_file=_read(disk_sys / "loop" / "backing_file") or None,
    )


def _by_id(path: str) -> tuple[str, ...]:
    d = Path("/dev/disk/by-id")
    if not d.is_dir():
        return ()
    return tuple(sorted(str(p) for p in d.iterdir() if os.path.realpath(p) == path))


def identity_of(device: str) -> str:
    """How the journal names a disk: a /dev/disk/by-id name survives a reboot, /dev/sdX may not."""
    real = os.path.realpath(device)
    names = _by_id(real)
    return names[0] if names else real


# --------------------------------------------------------------------------- all disks


def disk_names() -> list[str]:
    """The machine's disks: blkinfo's (lsblk's) whole disks, plus attached loop devices, which it leaves out.

    sysfs lists the other disks only where lsblk cannot run.
    """
    try:
        from blkinfo import BlkDiskInfo

        names = [d["name"] for d in BlkDiskInfo().get_disks({"type": "disk"})
                 if not d["name"].startswith(("ram", "zram"))]
        from_sysfs = False
    except Exception:  # noqa: BLE001 - blkinfo raises its own and lsblk's errors; sysfs still lists the disks
        names, from_sysfs = [], True
    for entry in sys_list(SYS / "block"):
        name = entry.name
        if name.startswith(("ram", "zram")) or name in names:
            continue
        if name.startswith("loop"):
            if _read(entry / "loop" / "backing_file"):
                names.append(name)
        elif from_sysfs and not (entry / "partition").exists() and int(_read(entry / "size", "0")) > 0:
            names.append(name)
    return names


def list_disks(backup_sources: Sequence[Path] = ()) -> list[TargetDisk]:
    """Every disk of this machine (attached loop devices included), probed."""
    names = disk_names()
    out = []
    for name in names:
        dev = f"/dev/{name}"
        if os.path.exists(dev):
            out.append(probe_disk(dev, backup_sources=backup_sources))
    return out
