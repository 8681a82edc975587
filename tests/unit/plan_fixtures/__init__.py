"""Layouts, images and targets for the plan tests, built on dumps made by real sfdisk.

The *.sfdisk files were written by `sfdisk -d` (util-linux 2.38.1) on sparse
image files (see make.sh); they name the image file, so loading renames
NAME.img to the captured disk's device (/dev/sda).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from rescue.backups.model import Image, ImageStatus, SourceKind
from rescue.layout.model import Boot, BootMode, Disk, Filesystem, FstabEntry, Layout, PartitionTable, RootMeta, Swap
from rescue.layout.sfdisk import parse_sfdisk
from rescue.target import ExistingPartition, TargetDisk

HERE = Path(__file__).resolve().parent
MIB = 1024 * 1024
GIB = 1024 * MIB
SIZES = {"dos": 8 * GIB, "ext": 10 * GIB, "gpt": 12 * GIB, "old": 4 * GIB, "issue15": 1 * GIB}
BANK = Path("/srv/backup/bank")


def table(name: str, device: str = "/dev/sda") -> PartitionTable:
    text = (HERE / f"{name}.sfdisk").read_text()
    parsed = parse_sfdisk(text, f"{name}.sfdisk")
    img = f"{name}.img"
    return dataclasses.replace(
        parsed, device=device,
        partitions=tuple(dataclasses.replace(p, node=device + p.node[len(img):]) for p in parsed.partitions),
    )


def _fs(dev: str, fstype: str, mp: str | None, used: int | None, n: int, label: str | None = None,
        mode: int = 0o755) -> Filesystem:
    uuid = f"{n:08x}-1111-4222-8333-{n:012x}"
    return Filesystem(device=dev, fstype=fstype, uuid=uuid, label=label, mountpoint=mp, used=used,
                      root=RootMeta(mp, mode, 0, 0) if mp else None)


def layout(name: str, **changes) -> Layout:
    """A captured machine on one of the fixture disks."""
    t = table(name)
    if name == "gpt":
        fss = (
            Filesystem("/dev/sda2", "vfat", uuid="ABCD-1234", label="EFI", mountpoint="/boot/efi", used=5 * MIB,
                       root=RootMeta("/boot/efi", 0o700, 0, 0)),
            _fs("/dev/sda3", "ext4", "/", 3 * GIB, 3, "root"),
            _fs("/dev/sda4", "swap", None, None, 4, "swap"),
            _fs("/dev/sda5", "ext4", "/tmp", 10 * MIB, 5, "tmp", mode=0o1777),
            _fs("/dev/sda6", "xfs", "/home", 2 * GIB, 6, "home"),
        )
        boot = Boot(mode=BootMode.UEFI, esp="/boot/efi")
    elif name == "dos":
        fss = (_fs("/dev/sda1", "ext4", "/", 2 * GIB, 1, "root"), _fs("/dev/sda2", "swap", None, None, 2))
        boot = Boot(mode=BootMode.BIOS, grub_disk="/dev/sda")
    elif name == "ext":
        fss = (
            _fs("/dev/sda1", "ext2", "/boot", 50 * MIB, 1, "boot"),
            _fs("/dev/sda5", "ext4", "/", 2 * GIB, 5, "root"),
            _fs("/dev/sda6", "swap", None, None, 6),
            _fs("/dev/sda7", "btrfs", "/home", 1 * GIB, 7, "home"),
        )
        boot = Boot(mode=BootMode.BIOS)
    elif name == "old":
        fss = (
            _fs("/dev/sda1", "ext3", "/", 1 * GIB, 1),
            _fs("/dev/sda2", "swap", None, None, 2),
            _fs("/dev/sda3", "ext4", "/home", 300 * MIB, 3),
        )
        boot = Boot(mode=BootMode.BIOS)
    elif name == "issue15":  # the machine of issue 15: no vault holds /tmp (see images15)
        fss = (
            _fs("/dev/sda1", "ext4", "/boot", 40 * MIB, 1, "boot"),
            _fs("/dev/sda5", "ext4", "/", 200 * MIB, 5, "root"),
            _fs("/dev/sda6", "swap", None, None, 6),
            _fs("/dev/sda7", "btrfs", "/home", 60 * MIB, 7, "home"),
            _fs("/dev/sda8", "ext4", "/tmp", 20 * 1024, 8, "tmp", mode=0o1777),
        )
        boot = Boot(mode=BootMode.BIOS, grub_disk="/dev/sda")
    else:
        raise KeyError(name)
    swaps = tuple(Swap(f.device, 0, uuid=f.uuid, label=f.label) for f in fss if f.fstype == "swap")
    fstab = tuple(FstabEntry(f"UUID={f.uuid}", f.mountpoint or "none", f.fstype) for f in fss)
    base = Layout(
        client="demo", captured_at="2026-11-26T03:00:00Z", hostname="demo",
        disks=(Disk("/dev/sda", SIZES[name], table=t, model="OLD DISK"),),
        filesystems=fss, swaps=swaps, fstab=fstab, boot=boot,
    )
    return dataclasses.replace(base, **changes)


def vault_name(mountpoint: str) -> str:
    return "root" if mountpoint == "/" else mountpoint.strip("/").replace("/", "-")


def image(vault: str, source: str, status: ImageStatus = ImageStatus.SUCCESS, name: str = "2026-1126-0300",
          client: str = "demo") -> Image:
    path = BANK / vault / name
    return Image(kind=SourceKind.DIRVISH, bank=BANK, vault=vault, name=name, path=path, tree=path / "tree",
                 client=client, source=source, status=status, layout_dir=path / "rescue")


def images(lay: Layout, root: str = "/", skip: tuple[str, ...] = ("/boot/efi",)) -> tuple[Image, ...]:
    """One good image per mounted filesystem (not the ESP unless asked)."""
    out = []
    for fs in lay.filesystems:
        if fs.mountpoint and fs.mountpoint not in skip:
            src = root.rstrip("/") + fs.mountpoint if root != "/" else fs.mountpoint
            out.append(image(vault_name(fs.mountpoint), src.rstrip("/") or "/"))
    return tuple(out)


def target(size: int, device: str = "/dev/sdb", **changes) -> TargetDisk:
    return dataclasses.replace(TargetDisk(device=device, size=size, model="NEW DISK", serial="N1"), **changes)


def used_target(size: int) -> TargetDisk:
    """A disk that held something before: shown as what will be destroyed."""
    return target(size, pttype="dos", signatures=("dos",), partitions=(
        ExistingPartition("/dev/sdb1", 5 * GIB, fstype="ntfs", label="DATA", uuid="0123456789ABCDEF"),
    ))
