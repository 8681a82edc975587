"""A backup disk's plan: partitions and typed steps, a pure function of the options and the disk's size.

gpt (default): 1 BIOS boot (1 MiB) | 2 ESP (64 MiB) | 3 rescue (the image's
size) | 4 backup (the rest). dos: 1 rescue (active) | 2 backup; a dos disk
boots on BIOS only. The steps are the restore's kinds (wipe, partition, mkfs,
mount, unmount) plus prepare-disk's own (rescue image, boot code, bank), run
by the same Executor: review, dry run, journal, resume and the disk lock.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rescue.devices import partition_path
from rescue.errors import PlanRefused
from rescue.layout.model import Partition, PartitionTable
from rescue.steps import (
    InstallBootCode,
    MakeBank,
    MakeEsp,
    MakeFilesystem,
    MountFilesystem,
    Step,
    UnmountAll,
    WipeSignatures,
    WritePartitionTable,
    WriteRescueImage,
)

MIB = 1 << 20
SECTOR = 512
GRAIN = MIB // SECTOR  # sfdisk aligns partitions (and the end of the last) to 1 MiB
GPT_BIOS_BOOT = "21686148-6449-6E6F-744E-656564454649"
GPT_ESP = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
GPT_LINUX = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
GPT_BACKUP_SECTORS = 33  # the backup header and entries at the end of a gpt disk
BACKUP_FS = ("ext4", "xfs", "btrfs")
MIN_BACKUP_MIB = {"ext4": 64, "btrfs": 128, "xfs": 300}
LABEL_MAX = {"ext4": 16, "xfs": 12, "btrfs": 255}
BACKUP_MOUNT = "/backup"  # under the engine's private mount folder, named as the rescue system mounts it


@dataclass(frozen=True)
class PrepareOptions:
    """What the person asked of prepare-disk (the command's options, for every caller)."""

    dev: str  # a disk or a disk image file
    image: Path  # rescue-root.img or its folder
    table: str = "gpt"
    backup_fs: str = "ext4"
    label: str = "BACKUP"
    disk_name: str | None = None
    bank: str = "dirvish"
    esp_mib: int = 64
    yes: bool = False
    update: bool = False
    verify: bool = True
    dry_run: bool = False
    state_dir: Path | None = None  # the journal's folder; None: rescue.paths' state folder


@dataclass(frozen=True)
class Part:
    number: int
    role: str  # bios-boot, esp, rescue, backup (other: a partition --update leaves alone)
    start: int  # sectors
    size: int | None  # sectors; None: to the end of the disk (fixed by sized())
    type: str


@dataclass(frozen=True)
class DiskPlan:
    table: str
    parts: tuple[Part, ...]
    core_lba: int
    core_room: int  # sectors grub's core image may use

    def part(self, role: str) -> Part | None:
        return next((p for p in self.parts if p.role == role), None)

    def sized(self, disk_bytes: int) -> DiskPlan:
        """The last partition's "rest of the disk" in sectors, as sfdisk would make it (end aligned to 1 MiB)."""
        total = disk_bytes // SECTOR
        end = ((total - GPT_BACKUP_SECTORS) if self.table == "gpt" else total) // GRAIN * GRAIN
        parts = tuple(Part(p.number, p.role, p.start, max(end - p.start, 0), p.type) if p.size is None else p
                      for p in self.parts)
        return DiskPlan(self.table, parts, self.core_lba, self.core_room)

    def partition_table(self, device: str) -> PartitionTable:
        """The table for rescue.layout.sfdisk.render_sfdisk (the one writer the restore uses too)."""
        out = []
        for p in self.parts:
            if p.size is None:
                raise ValueError("size the plan to the disk first (DiskPlan.sized)")
            gpt = self.table == "gpt"
            out.append(Partition(node=partition_path(device, p.number), start=p.start, size=p.size, type=p.type,
                                 name=p.role if gpt else None,
                                 attrs="LegacyBIOSBootable" if gpt and p.role == "rescue" else None,
                                 bootable=not gpt and p.role == "rescue"))
        return PartitionTable(label=self.table, partitions=tuple(out))


def plan_disk(table: str, image_bytes: int, esp_mib: int) -> DiskPlan:
    rescue_sectors = -(-image_bytes // MIB) * MIB // SECTOR  # whole MiB
    if table == "gpt":
        parts = (
            Part(1, "bios-boot", 2048, 2048, GPT_BIOS_BOOT),
            Part(2, "esp", 4096, esp_mib * MIB // SECTOR, GPT_ESP),
        )
        start = 4096 + esp_mib * MIB // SECTOR
        parts += (Part(3, "rescue", start, rescue_sectors, GPT_LINUX),
                  Part(4, "backup", start + rescue_sectors, None, GPT_LINUX))
        return DiskPlan("gpt", parts, core_lba=2048, core_room=2048)
    parts = (Part(1, "rescue", 2048, rescue_sectors, "83"), Part(2, "backup", 2048 + rescue_sectors, None, "83"))
    return DiskPlan("dos", parts, core_lba=1, core_room=2047)


def min_disk_bytes(plan: DiskPlan, backup_fs: str) -> int:
    last = plan.part("backup")
    assert last is not None
    # gpt keeps 33 sectors at the end for its backup header
    return last.start * SECTOR + MIN_BACKUP_MIB[backup_fs] * MIB + 34 * SECTOR


@dataclass(frozen=True)
class RescueImage:
    """The rescue root image and its block map (None: made from the image when it is written)."""

    path: Path
    bmap: Path | None
    size: int  # bytes
    label: str


@dataclass(frozen=True)
class PreparePlan:
    """Everything prepare-disk will do to one disk, in order; complete before a byte is written."""

    device: str
    shown: str  # the name the person gave (confirmed by typing it)
    disk_bytes: int
    disk: DiskPlan
    update: bool
    steps: tuple[Step, ...]
    kept: tuple[str, ...] = ()  # partitions --update leaves alone

    def review(self) -> str:
        head = (f"rescue prepare-disk --update: {self.shown} ({self.device}): the rescue system and the boot code "
                f"are replaced; {', '.join(self.kept) or 'no other partition'} stays untouched" if self.update else
                f"rescue prepare-disk: {self.shown} ({self.device}, {self.disk_bytes / 2**30:.1f} GiB) becomes a "
                f"{self.disk.table} backup disk; everything on it is ERASED")
        lines = [head, "", "partitions:"]
        for p in self.disk.parts:
            size = f"{(p.size or 0) * SECTOR / MIB:.0f} MiB" if p.size is not None else "?"
            lines.append(f"  {partition_path(self.device, p.number):20} {p.role:10} {size:>10}  start {p.start}")
        lines += ["", "steps:"]
        lines += [f"  {i:2}. {s.describe()}" for i, s in enumerate(self.steps, 1)]
        return "\n".join(lines) + "\n"

    def script(self) -> str:
        lines = ["#!/bin/sh", "# rescue prepare-disk: what it would do, by hand (nothing was written)", "set -e",
                 f"DISK={self.device}", 'ROOT=$(mktemp -d /run/rescue-prepare-XXXXXX)', 'WORK="$ROOT"', ""]
        for i, s in enumerate(self.steps, 1):
            lines.append(f"# {i}. {s.describe()}")
            lines += s.script()
            lines.append("")
        return "\n".join(lines)


def check_options(opts: PrepareOptions) -> None:
    """Refuse what cannot work before the disk is even looked at."""
    if opts.backup_fs not in BACKUP_FS:
        raise PlanRefused(f"rescue prepare-disk cannot make a {opts.backup_fs} backup filesystem",
                          fix=f"use one of {', '.join(BACKUP_FS)}")
    if len(opts.label) > LABEL_MAX[opts.backup_fs]:
        raise PlanRefused(f"label {opts.label!r} is too long for {opts.backup_fs}",
                          fix=f"use at most {LABEL_MAX[opts.backup_fs]} characters")


def build_prepare_plan(opts: PrepareOptions, device: str, shown: str, disk_bytes: int,
                       image: RescueImage) -> PreparePlan:
    """A new backup disk: erase, partition, rescue image, ESP, boot code, backup filesystem and bank."""
    check_options(opts)
    disk = plan_disk(opts.table, image.size, opts.esp_mib)
    need = min_disk_bytes(disk, opts.backup_fs)
    if disk_bytes < need:
        raise PlanRefused(f"{shown} is too small: {disk_bytes / MIB:.0f} MiB, a backup disk needs at least "
                          f"{need / MIB:.0f} MiB",
                          why=f"the rescue partition takes {image.size / MIB:.0f} MiB and the backup "
                          f"filesystem ({opts.backup_fs}) needs at least {MIN_BACKUP_MIB[opts.backup_fs]} MiB",
                          fix="use a bigger disk")
    disk = disk.sized(disk_bytes)
    rescue, backup, esp = disk.part("rescue"), disk.part("backup"), disk.part("esp")
    assert rescue is not None and backup is not None
    rescue_dev, backup_dev = partition_path(device, rescue.number), partition_path(device, backup.number)
    esp_dev = partition_path(device, esp.number) if esp else None
    steps: list[Step] = [
        WipeSignatures(device),
        WritePartitionTable(device, disk.partition_table(device)),
        WriteRescueImage(rescue_dev, str(image.path), str(image.bmap) if image.bmap else None, image.size,
                         opts.verify),
    ]
    if esp_dev:
        steps.append(MakeEsp(esp_dev, "vfat", None, "ESP"))
    steps += [
        InstallBootCode(device, disk.table, rescue.number, disk.core_lba, disk.core_room, esp_dev),
        MakeFilesystem(backup_dev, opts.backup_fs, None, opts.label),
        MountFilesystem(backup_dev, BACKUP_MOUNT, opts.backup_fs),
        MakeBank(backup_dev, opts.bank, opts.label, opts.disk_name, BACKUP_MOUNT),
        UnmountAll(),
    ]
    return PreparePlan(device, shown, disk_bytes, disk, False, tuple(steps))


def build_update_plan(device: str, shown: str, disk_bytes: int, disk: DiskPlan, image: RescueImage,
                      verify: bool, kept: tuple[str, ...]) -> PreparePlan:
    """--update: the rescue partition and the boot code only; the backup partition is not touched."""
    rescue, esp = disk.part("rescue"), disk.part("esp")
    assert rescue is not None
    if rescue.size is not None and rescue.size * SECTOR < image.size:
        raise PlanRefused(f"the rescue partition of {shown} is smaller than the new image",
                          why=f"{rescue.size * SECTOR / MIB:.0f} MiB < {image.size / MIB:.0f} MiB",
                          fix="prepare the disk again without --update, or trim the image")
    steps = (
        WriteRescueImage(partition_path(device, rescue.number), str(image.path),
                         str(image.bmap) if image.bmap else None, image.size, verify),
        InstallBootCode(device, disk.table, rescue.number, disk.core_lba, disk.core_room,
                        partition_path(device, esp.number) if esp else None),
    )
    return PreparePlan(device, shown, disk_bytes, disk, True, steps, kept)
