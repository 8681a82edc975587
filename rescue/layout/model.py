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
