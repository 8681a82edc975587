"""Loop-free boot code: grub's boot.img and core.img patched into a disk image file, the ESP via mtools."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from rescue import bootcode
from rescue.run import run

MIB = 1 << 20


def _disk(path: Path, script: str, size: int = 64 * MIB) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)
    run(["sfdisk", "--quiet", str(path)], input=script)
    return path


GPT = "label: gpt\nstart=2048, size=2048, type=21686148-6449-6E6F-744E-656564454649\nstart=4096, type=L\n"
DOS = "label: dos\nstart=2048, type=83, bootable\n"


def test_bios_boot_code_on_gpt_points_at_the_core_image_in_the_bios_boot_partition(tmp_path: Path):
    disk = _disk(tmp_path / "gpt.img", GPT)
    before = run(["sfdisk", "--dump", str(disk)]).stdout
    result = bootcode.install_bios(disk, 2048, 2048, bootcode.prefix("gpt", 3))
    data = disk.read_bytes()
    boot = (bootcode.GRUB_LIB / "i386-pc" / "boot.img").read_bytes()
    mbr = data[:512]
    assert struct.unpack_from("<Q", mbr, 0x5C)[0] == 2048
    assert mbr[0x66:0x68] == b"\x90\x90"
    assert mbr[0x68:440] == boot[0x68:440]
    assert mbr[510:512] == b"\x55\xaa"
    assert run(["sfdisk", "--dump", str(disk)]).stdout == before, "the partition table must survive"
    core = data[2048 * 512:(2048 + result.core_sectors) * 512]
    start, length, segment = struct.unpack_from("<QHH", core, 500)
    assert (start, length, segment) == (2049, result.core_sectors - 1, 0x820)
    assert bootcode.read_bios_boot(disk) == 2048


def test_bios_boot_code_on_dos_goes_into_the_gap_after_the_mbr(tmp_path: Path):
    disk = _disk(tmp_path / "dos.img", DOS)
    bootcode.install_bios(disk, 1, 2047, bootcode.prefix("dos", 1))
    data = disk.read_bytes()
    assert struct.unpack_from("<Q", data, 0x5C)[0] == 1
    assert struct.unpack_from("<Q", data, 512 + 500)[0] == 2
    assert data[446] == 0x80, "the rescue partition stays active"


def test_core_image_that_does_not_fit_is_refused_and_nothing_written(tmp_path: Path):
    disk = _disk(tmp_path / "tight.img", "label: dos\nstart=40, type=83\n")
    before = disk.read_bytes()[:40 * 512]
    with pytest.raises(bootcode.BootCodeError, match="needs .* sectors"):
        bootcode.install_bios(disk, 1, 39, bootcode.prefix("dos", 1))
    assert disk.read_bytes()[:40 * 512] == before


def test_blank_disk_without_table_is_refused(tmp_path: Path):
    disk = tmp_path / "blank.img"
    disk.write_bytes(b"\0" * 4 * MIB)
    with pytest.raises(bootcode.BootCodeError, match="no partition table"):
        bootcode.install_bios(disk, 2048, 2048, bootcode.prefix("gpt", 3))
    assert bootcode.read_bios_boot(disk) is None


def test_esp_gets_grub_at_the_removable_path_without_a_mount(tmp_path: Path):
    esp = tmp_path / "esp.img"
    with open(esp, "wb") as f:
        f.truncate(64 * MIB)
    bootcode.make_esp(esp, bootcode.prefix("gpt", 3))
    listing = bootcode.esp_listing(esp)
    assert "EFI/BOOT/BOOTX64.EFI" in listing
    binary = bootcode.read_esp_file(esp, bootcode.REMOVABLE_PATH)
    assert binary[:2] == b"MZ", "a PE/COFF executable, as UEFI firmware loads"
    assert b"(,gpt3)/boot/grub" in binary
    assert run(["blkid", "-p", "-s", "TYPE", "-o", "value", str(esp)]).stdout.strip() == "vfat"
    # installing again (prepare-disk --update) replaces the file in place
    bootcode.install_efi(esp, bootcode.prefix("gpt", 3))
    assert bootcode.esp_listing(esp).count("EFI/BOOT/BOOTX64.EFI") == 1
