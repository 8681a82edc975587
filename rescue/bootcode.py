"""Boot code for a backup disk, installed without loop-device tricks.

grub-install needs to map the target to a firmware drive, which it cannot do
for a loop device or an image file. The pieces it would write are simple, so
rescue writes them itself:

BIOS  grub-mkimage -O i386-pc builds core.img (disk driver, partition maps,
      ext2, the menu) with a prefix that names the rescue partition of the
      disk it booted from, "(,gpt3)/boot/grub". core.img goes into the BIOS
      boot partition (gpt) or the gap after the MBR (dos). boot.img's code
      (first 440 bytes: the disk id and partition table stay) goes into
      sector 0 with the LBA of core.img at 0x5c; core.img's first sector gets
      the LBA of its second sector in its block list at 0x1f4.
UEFI  grub-mkimage -O x86_64-efi with the same prefix becomes the ESP's
      EFI/BOOT/BOOTX64.EFI (the removable path: no NVRAM entry is needed, the
      disk boots on any machine). The ESP is made with mkfs.vfat and filled
      with mtools: no vfat mount is needed.
"""

from __future__ import annotations

import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

from rescue.errors import RescueError
from rescue.run import run

GRUB_LIB = Path("/usr/lib/grub")
SECTOR = 512
BOOT_CODE_SIZE = 440  # boot.img bytes that go into the MBR; disk id and table follow
KERNEL_SECTOR = 0x5C  # boot.img: 8-byte LBA of core.img's first sector
DRIVE_CHECK = 0x66  # boot.img: jump that trusts a floppy drive number; NOPped for disks
BLOCKLIST_START = SECTOR - 12  # core.img sector 0: first block list entry (start u64, len u16, seg u16)
REMOVABLE_PATH = "EFI/BOOT/BOOTX64.EFI"

# Built into the core images, so the menu works even before any module
# is read from the rescue partition.
COMMON_MODULES = (
    "part_gpt", "part_msdos", "ext2", "fat", "normal", "configfile", "linux", "echo", "test",
    "probe", "regexp", "search", "search_fs_uuid", "search_label", "serial", "terminal",
    "chain", "sleep", "boot", "ls", "cat", "halt", "reboot",
)
BIOS_MODULES = ("biosdisk", *COMMON_MODULES)
EFI_MODULES = (*COMMON_MODULES, "efi_gop", "all_video")


class BootCodeError(RescueError):
    pass


@dataclass(frozen=True)
class BiosBoot:
    core_lba: int
    core_sectors: int
    room_sectors: int


def prefix(table: str, rescue_partition: int) -> str:
    """grub's prefix: /boot/grub on partition N of the disk grub booted from."""
    part = {"gpt": "gpt", "dos": "msdos"}[table]
    return f"(,{part}{rescue_partition})/boot/grub"


def mkimage(platform: str, prefix_: str, out: Path, modules: tuple[str, ...]) -> Path:
    fmt = {"i386-pc": "i386-pc", "x86_64-efi": "x86_64-efi"}[platform]
    directory = GRUB_LIB / platform
    if not directory.is_dir():
        raise BootCodeError(f"{directory} is missing", why="grub's modules for this platform are not installed",
                            fix="install grub-pc-bin and grub-efi-amd64-bin (scripts/setup.sh)")
    run(["grub-mkimage", "--directory", str(directory), "--format", fmt, "--prefix", prefix_,
         "--output", str(out), "--compression", "auto", *modules])
    return out


def install_bios(disk: str | Path, core_lba: int, room_sectors: int, prefix_: str) -> BiosBoot:
    """Write boot.img into sector 0 and core.img at core_lba of `disk` (device or file)."""
    with tempfile.TemporaryDirectory(prefix="rescue-grub-") as tmp:
        core = mkimage("i386-pc", prefix_, Path(tmp) / "core.img", BIOS_MODULES).read_bytes()
    boot = (GRUB_LIB / "i386-pc" / "boot.img").read_bytes()
    if len(boot) != SECTOR:
        raise BootCodeError(f"{GRUB_LIB}/i386-pc/boot.img is {len(boot)} bytes, not {SECTOR}")
    sectors = (len(core) + SECTOR - 1) // SECTOR
    if sectors > room_sectors:
        raise BootCodeError(f"grub's core image needs {sectors} sectors, the disk has room for {room_sectors}",
                            fix="leave at least 1 MiB before the first partition (prepare-disk does)")
    core = bytearray(core.ljust(sectors * SECTOR, b"\0"))
    # The block list in core.img's first sector: where the rest of core.img is.
    # grub-mkimage already wrote its length (sectors - 1) and load segment.
    struct.pack_into("<Q", core, BLOCKLIST_START, core_lba + 1)
    length = struct.unpack_from("<H", core, BLOCKLIST_START + 8)[0]
    if length != sectors - 1:
        raise BootCodeError(f"core.img's block list says {length} sectors, the file has {sectors - 1} after the first",
                            why="this grub version lays out core.img differently than rescue expects")
    fd = os.open(disk, os.O_RDWR)
    try:
        mbr = bytearray(os.pread(fd, SECTOR, 0))
        if mbr[510:512] != b"\x55\xaa":
            raise BootCodeError(f"{disk} has no partition table in sector 0", fix="write the partition table first")
        mbr[:BOOT_CODE_SIZE] = boot[:BOOT_CODE_SIZE]
        struct.pack_into("<Q", mbr, KERNEL_SECTOR, core_lba)
        # Like grub-bios-setup for hard disks: always use the drive the BIOS booted.
        mbr[DRIVE_CHECK:DRIVE_CHECK + 2] = b"\x90\x90"
        os.pwrite(fd, bytes(core), core_lba * SECTOR)
        os.pwrite(fd, bytes(mbr), 0)
        os.fsync(fd)
    finally:
        os.close(fd)
    return BiosBoot(core_lba, sectors, room_sectors)


def read_bios_boot(disk: str | Path) -> int | None:
    """The core.img LBA written in sector 0, or None when sector 0 has no grub boot code."""
    fd = os.open(disk, os.O_RDONLY)
    try:
        mbr = os.pread(fd, SECTOR, 0)
    finally:
        os.close(fd)
    boot = (GRUB_LIB / "i386-pc" / "boot.img").read_bytes()
    # Compare the code after the patched fields: the part that is always boot.img's.
    if mbr[DRIVE_CHECK + 2:BOOT_CODE_SIZE] != boot[DRIVE_CHECK + 2:BOOT_CODE_SIZE]:
        return None
    return struct.unpack_from("<Q", mbr, KERNEL_SECTOR)[0]


def _mtools_env() -> dict[str, str]:
    # mtools checks floppy-like geometry unless told not to; a partition has none.
    return {"MTOOLS_SKIP_CHECK": "1"}


def make_esp(partition: str | Path, prefix_: str, label: str = "ESP") -> None:
    """FAT32 ESP with grub at the removable path; no mount needed."""
    run(["mkfs.vfat", "-F", "32", "-n", label, str(partition)])
    install_efi(partition, prefix_)


def install_efi(partition: str | Path, prefix_: str) -> None:
    """(Re)write EFI/BOOT/BOOTX64.EFI on an existing ESP."""
    env = _mtools_env()
    with tempfile.TemporaryDirectory(prefix="rescue-grub-") as tmp:
        efi = mkimage("x86_64-efi", prefix_, Path(tmp) / "BOOTX64.EFI", EFI_MODULES)
        for d in ("::/EFI", "::/EFI/BOOT"):
            if run(["mdir", "-i", str(partition), d], env=env, check=False).returncode != 0:
                run(["mmd", "-i", str(partition), d], env=env)
        run(["mcopy", "-o", "-i", str(partition), str(efi), "::/" + REMOVABLE_PATH], env=env)


def esp_listing(partition: str | Path) -> list[str]:
    """Every file and folder on the ESP, read with mtools (`mdir -/ -b`)."""
    out = run(["mdir", "-/", "-b", "-i", str(partition), "::/"], env=_mtools_env()).stdout
    return [line.strip().removeprefix("::/") for line in out.splitlines() if line.strip()]


def read_esp_file(partition: str | Path, path: str) -> bytes:
    with tempfile.TemporaryDirectory(prefix="rescue-esp-") as tmp:
        out = Path(tmp) / "file"
        run(["mcopy", "-i", str(partition), "::/" + path, str(out)], env=_mtools_env())
        return out.read_bytes()
