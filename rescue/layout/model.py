"""The captured storage layout of one machine, as frozen data.

Written by `rescue capture` as layout.json (versioned) into each image's
rescue/ folder; read by the plan. Sizes are bytes unless a name says sectors.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum

from rescue.jsonform import FormError, from_json, to_json

SCHEMA_VERSION = 1


class BootMode(StrEnum):
    BIOS = "bios"
    UEFI = "uefi"


@dataclass(frozen=True)
class Partition:
    """One line of an `sfdisk -d` dump. start and size are in sectors."""

    node: str  # as dumped, e.g. /dev/sda1 or /dev/nvme0n1p2
    start: int
    size: int
    type: str  # dos: hex id ("83"); gpt: type GUID
    uuid: str | None = None  # gpt PARTUUID
    name: str | None = None  # gpt partition name
    attrs: str | None = None
    bootable: bool = False

    @property
    def number(self) -> int:
        """The partition number: the trailing digits of the node name."""
        digits = ""
        for ch in reversed(self.node):
            if not ch.isdigit():
                break
            digits = ch + digits
        return int(digits) if digits else 0

    @property
    def end(self) -> int:
        """First sector after the partition."""
        return self.start + self.size


@dataclass(frozen=True)
class PartitionTable:
    """A whole `sfdisk -d` dump: header fields and partitions."""

    label: str  # "dos" or "gpt"
    device: str | None = None
    unit: str = "sectors"
    label_id: str | None = None
    first_lba: int | None = None
    last_lba: int | None = None
    sector_size: int = 512
    table_length: int | None = None
    grain: str | None = None
    partitions: tuple[Partition, ...] = ()


@dataclass(frozen=True)
class RootMeta:
    """Mode and owner of a filesystem's root directory (rsync never saves these)."""

    mountpoint: str
    mode: int  # st_mode & 0o7777
    uid: int
    gid: int


@dataclass(frozen=True)
class Filesystem:
    """A filesystem (or swap) on a captured disk, joined from lsblk/blkid/findmnt/df/stat."""

    device: str  # /dev/sda2
    fstype: str  # ext4, xfs, btrfs, vfat, swap, ...
    uuid: str | None = None
    label: str | None = None
    partuuid: str | None = None
    mountpoint: str | None = None  # as the running system sees it: "/", "/home"
    options: str | None = None  # mount options in use
    size: int | None = None  # filesystem size in bytes (df)
    used: int | None = None  # used bytes (df)
    root: RootMeta | None = None


@dataclass(frozen=True)
class Disk:
    """A whole disk of the captured machine."""

    device: str  # /dev/sda
    size: int  # bytes
    sector_size: int = 512
    model: str | None = None
    serial: str | None = None
    table: PartitionTable | None = None


@dataclass(frozen=True)
class Mount:
    """One entry of `findmnt -J`."""

    target: str
    source: str
    fstype: str
    options: str = ""


@dataclass(frozen=True)
class FstabEntry:
    spec: str  # UUID=..., LABEL=..., PARTUUID=..., /dev/...
    file: str
    vfstype: str
    options: str = "defaults"
    freq: int = 0
    passno: int = 0


@dataclass(frozen=True)
class Swap:
    device: str
    size: int  # bytes
    uuid: str | None = None
    label: str | None = None
    priority: int | None = None


@dataclass(frozen=True)
class Boot:
    """How the machine boots: firmware mode, ESP, and where grub lives."""

    mode: BootMode = BootMode.BIOS
    esp: str | None = None  # ESP mount point, e.g. /boot/efi
    grub_disk: str | None = None  # disk whose MBR/boot partition holds grub
    has_grub: bool = True


@dataclass(frozen=True)
class Subvolume:
    """One btrfs subvolume (`btrfs subvolume list -a -u -q -p -R`, `-r` for the read-only ones)."""

    id: int
    path: str  # from the filesystem's top level (id 5): "@", "@/var/lib/machines"
    parent_id: int  # the subvolume it lies in (5: the top level)
    uuid: str
    parent_uuid: str | None = None  # set on a snapshot: the subvolume it was taken from
    received_uuid: str | None = None  # set on a subvolume made by `btrfs receive`
    readonly: bool = False
    snapshot: bool = False  # taken from another subvolume (parent_uuid set)
    snapshot_of: str | None = None  # the path of that subvolume, when it still exists
    seen_at: str | None = None  # where the captured machine shows it (relative to ROOT); None: nowhere
    mounted: bool = False  # mounted itself (subvol=) at seen_at, rather than seen inside another


@dataclass(frozen=True)
class BtrfsMount:
    """A mount of a btrfs filesystem: what findmnt shows in use, joined with its fstab line."""

    target: str  # relative to ROOT: "/", "/home"
    subvol: str | None = None  # "/@home" (subvol=), None: not said (the default subvolume)
    subvolid: int | None = None
    options: str = ""  # in use (findmnt); the kernel shows one filesystem's options for all its mounts
    fstab_options: str | None = None  # as the fstab line asks, None: no fstab line
    compress: str | None = None  # compress= or compress-force= (fstab's, else in use): "zstd", "zstd:3"
    mounted: bool = True  # False: only in fstab (noauto, or not mounted at capture)


@dataclass(frozen=True)
class Qgroup:
    """A btrfs quota group (`btrfs qgroup show --raw -r -e`), when quotas are on."""

    qgroupid: str  # "0/257"
    referenced: int
    exclusive: int
    max_referenced: int | None = None
    max_exclusive: int | None = None


@dataclass(frozen=True)
class BtrfsVolume:
    """One btrfs filesystem: its subvolumes, default subvolume, mounts, nocow folders, quotas."""

    device: str  # the device it is mounted from
    uuid: str | None = None
    label: str | None = None
    default_id: int = 5  # `btrfs subvolume get-default` (5: the top level)
    subvolumes: tuple[Subvolume, ...] = ()
    mounts: tuple[BtrfsMount, ...] = ()
    nocow: tuple[str, ...] = ()  # folders with chattr +C (relative to ROOT), the topmost of each run
    quota: bool = False
    qgroups: tuple[Qgroup, ...] = ()

    def subvolume(self, id: int) -> Subvolume | None:
        return next((s for s in self.subvolumes if s.id == id), None)


# --- layered storage: md RAID, LVM, the disks' identity (issue 17) -----------------------------

@dataclass(frozen=True)
class MdMember:
    """One member of an md array, as its own superblock says (`mdadm --examine`)."""

    device: str  # /dev/sda1
    role: str | None = None  # "0", "1", ... the slot; "spare", "faulty"
    dev_uuid: str | None = None  # the member's own Device UUID
    data_offset: int | None = None  # sectors: where the array's data starts on the member
    super_offset: int | None = None  # sectors
    events: int | None = None
    state: str | None = None  # `mdadm --detail`'s view: "active sync", "faulty", ...


@dataclass(frozen=True)
class MdArray:
    """An md RAID array (`mdadm --detail --export` and `--detail`, members' `--examine`)."""

    device: str  # /dev/md0, /dev/md/root
    uuid: str  # MD_UUID, mdadm's colon form
    name: str | None = None  # host:name
    level: str | None = None  # raid1, raid5, ...
    metadata: str | None = None  # 1.2, 1.0, 0.90, imsm, ddf
    raid_devices: int | None = None
    size: int | None = None  # bytes the array offers
    chunk: int | None = None  # bytes (striped levels)
    layout: str | None = None  # left-symmetric, near=2, ...
    bitmap: str | None = None  # internal, none, or the bitmap file
    consistency: str | None = None  # Consistency Policy: bitmap, resync, journal, ppl
    data_offset: int | None = None  # sectors, when every member agrees
    members: tuple[MdMember, ...] = ()


@dataclass(frozen=True)
class LvmPv:
    """A physical volume (`pvs --reportformat json`)."""

    device: str  # /dev/md0, /dev/sda3
    uuid: str
    vg: str | None = None
    size: int | None = None  # bytes
    pe_start: int | None = None  # bytes: where the first extent starts
    dev_size: int | None = None  # bytes of the device under it


@dataclass(frozen=True)
class LvmLv:
    """A logical volume (`lvs -a --reportformat json`): hidden ones ([pool_tdata]) included."""

    name: str
    uuid: str
    size: int  # bytes; for a thin pool: its data size
    segtype: str  # linear, striped, raid1, thin-pool, thin, ...
    attr: str | None = None
    path: str | None = None  # /dev/vg/name (none for hidden LVs)
    dm_path: str | None = None  # /dev/mapper/vg-name
    pool: str | None = None  # a thin LV's pool
    data_lv: str | None = None  # a thin pool's [pool_tdata]
    metadata_lv: str | None = None  # a thin pool's [pool_tmeta]
    metadata_size: int | None = None  # bytes of a thin pool's metadata
    chunk_size: int | None = None  # bytes of a thin pool's chunk
    stripes: int | None = None
    stripe_size: int | None = None  # bytes
    devices: str | None = None  # the PVs it lies on (`devices` field)


@dataclass(frozen=True)
class LvmVg:
    """A volume group, its PVs and LVs, and the raw `vgcfgbackup -f` text kept beside the layout."""

    name: str
    uuid: str
    extent_size: int  # bytes
    size: int | None = None
    free: int | None = None
    pvs: tuple[LvmPv, ...] = ()
    lvs: tuple[LvmLv, ...] = ()
    config_file: str | None = None  # lvm-vgcfgbackup-NAME.txt in the capture folder
    config: str | None = None  # that file's text: the restore makes the VG again from it

    def lv(self, name: str) -> LvmLv | None:
        return next((x for x in self.lvs if x.name == name), None)


@dataclass(frozen=True)
class DiskIdentity:
    """How a disk is recognised: its /dev/disk/by-id names, serial, WWN, size and sectors."""

    device: str
    size: int
    logical_sector: int | None = None
    physical_sector: int | None = None
    model: str | None = None
    serial: str | None = None
    wwn: str | None = None
    by_id: tuple[str, ...] = ()


@dataclass(frozen=True)
class LuksKeyslot:
    """One used keyslot of a LUKS header (`cryptsetup luksDump`)."""

    slot: int
    kind: str | None = None  # luks2; LUKS1 slots have no type
    key_bits: int | None = None
    pbkdf: str | None = None  # pbkdf2, argon2i, argon2id
    hash: str | None = None  # pbkdf2's hash


@dataclass(frozen=True)
class LuksDevice:
    """A LUKS container: what its header says, the crypttab line that opens it, where it was
    open, and the header's own copy (`cryptsetup luksHeaderBackup`) in the capture folder."""

    device: str  # /dev/sda3
    version: int  # 1 or 2
    uuid: str
    label: str | None = None  # LUKS2 only
    cipher: str | None = None  # aes-xts-plain64
    key_bits: int | None = None  # of the volume key
    data_offset: int | None = None  # bytes: where the encrypted data starts
    keyslots: tuple[LuksKeyslot, ...] = ()
    mapping: str | None = None  # /dev/mapper/NAME when it was open at capture
    crypttab: str | None = None  # the machine's crypttab line for it
    header_file: str | None = None  # luks-NODE-header.img beside layout.json (mode 0600)


@dataclass(frozen=True)
class BlockLayers:
    """What lies between the disks and the filesystems: md arrays and LVM.

    Written into layout.json only when a machine has any (an older rescue keeps reading
    the layouts of every other machine). The raw files (vgcfgbackup texts, mdadm.conf,
    the LVM devices file) stay beside it in the capture folder."""

    md: tuple[MdArray, ...] = ()
    vgs: tuple[LvmVg, ...] = ()
    disks: tuple[DiskIdentity, ...] = ()
    mdadm_conf: str | None = None  # file name in the capture folder, when the machine has one
    lvm_devices_file: str | None = None  # ditto, for /etc/lvm/devices/system.devices
    luks: tuple[LuksDevice, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.md or self.vgs or self.luks)

    def describe(self) -> list[str]:
        """One line per array and volume group, for refusals and reports."""
        out = [f"md {a.device} ({a.level or '?'}, {len(a.members)} members: "
               f"{', '.join(m.device for m in a.members)})" for a in self.md]
        out += [f"LVM volume group {vg.name} on {', '.join(p.device for p in vg.pvs) or '?'} "
                f"(LVs {', '.join(lv.name for lv in vg.lvs if lv.path) or 'none'})" for vg in self.vgs]
        out += [f"LUKS{c.version} {c.device} (UUID {c.uuid}{', open as ' + c.mapping if c.mapping else ''})"
                for c in self.luks]
        return out


@dataclass(frozen=True)
class Layout:
    """Everything needed to rebuild one machine's disks."""

    client: str
    captured_at: str  # ISO 8601, UTC
    schema: int = SCHEMA_VERSION
    hostname: str | None = None
    root: str = "/"  # where the captured system was mounted when captured (--root)
    source: str = "capture"  # "capture", or "legacy" for old df.N/sfdisk.N files
    os_release: dict[str, str] = field(default_factory=dict)
    disks: tuple[Disk, ...] = ()
    filesystems: tuple[Filesystem, ...] = ()
    swaps: tuple[Swap, ...] = ()
    mounts: tuple[Mount, ...] = ()
    fstab: tuple[FstabEntry, ...] = ()
    boot: Boot = Boot()
    warnings: tuple[str, ...] = ()
    btrfs: tuple[BtrfsVolume, ...] = ()  # per btrfs filesystem (older layouts: none recorded)
    layers: BlockLayers | None = None  # md RAID and LVM (older layouts and plain machines: none)

    def filesystem_at(self, mountpoint: str) -> Filesystem | None:
        for fs in self.filesystems:
            if fs.mountpoint == mountpoint:
                return fs
        return None

    def dumps(self) -> str:
        data = to_json(self)
        if not self.btrfs:
            # a machine without btrfs writes the layout.json an older rescue (the one on a backup
            # disk's rescue partition, say) can still read: it refuses keys it does not know
            del data["btrfs"]
        if not self.layers:
            del data["layers"]
        return json.dumps(data, indent=2, sort_keys=False) + "\n"

    @classmethod
    def loads(cls, text: str, file: str = "layout.json") -> Layout:
        """Parse layout.json; any problem becomes a LayoutError naming the file."""
        from rescue.errors import LayoutError

        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise LayoutError(file, e.lineno, f"not valid JSON: {e.msg}") from None
        if not isinstance(data, dict):
            raise LayoutError(file, None, "expected a JSON object at the top")
        schema = data.get("schema")
        if schema != SCHEMA_VERSION:
            raise LayoutError(
                file, None, f"schema version {schema!r} is not {SCHEMA_VERSION}",
                fix="use the rescue version that wrote this file, or capture again",
            )
        try:
            return from_json(cls, data)
        except FormError as e:
            if "unknown key" in str(e):
                # The nightly capture runs the backup server's rescue; the backup disk's
                # rescue partition may be older and not know what a newer one records.
                raise LayoutError(
                    file, None, f"{e}: a newer rescue wrote this layout",
                    fix="boot a rescue as new as the backup server's (rescue prepare-disk --update DEV "
                        "refreshes a backup disk's rescue system), or run that rescue's restore",
                ) from None
            raise LayoutError(file, None, str(e)) from None
