"""`rescue prepare-disk`: turn a blank disk into a bootable backup disk.

gpt (default): 1 BIOS boot (1 MiB) | 2 ESP (64 MiB) | 3 rescue (the image's
size, 1 GiB) | 4 backup (the rest). dos: 1 rescue (active) | 2 backup; a dos
disk boots on BIOS only. The rescue image is written block-map style: only
the blocks its filesystem uses, each range checked against the map and read
back after the write. Boot code for BIOS (grub in the MBR + core image) and
UEFI (EFI/BOOT/BOOTX64.EFI on the ESP) is written without grub-install. The
backup filesystem gets a dirvish bank folder and a DISKLABEL file, both
root-only, as the nightly job expects.

--update rewrites only the rescue partition and the boot code of an existing
backup disk; the backup partition is not touched.

DEV may be a disk image file: it is attached as a loop device for the run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import stat
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rescue import bootcode
from rescue.devices import attached, partition_path, rescan, wait_table_settled
from rescue.errors import Aborted, Exit, LayoutError, PlanRefused, RescueError, UnsafeTarget
from rescue.image import bmap as bmapmod
from rescue.image import manifest as mf
from rescue.layout.sfdisk import parse_sfdisk
from rescue.run import CommandError
from rescue.run import run as cmd

NAME = "prepare-disk"
ORDER = 60
HELP = "make a disk (or disk image file) a bootable backup disk: rescue system + backup partition"
DESCRIPTION = (
    "Partition DEV (gpt: BIOS boot, ESP, rescue, backup; dos: rescue, backup), write the rescue "
    "image (only used blocks, verified), make it boot on BIOS and UEFI, and make the backup "
    "filesystem with a root-only dirvish bank and a DISKLABEL file. Everything on DEV is erased; "
    "without --yes you type the disk's name to confirm. --update replaces only the rescue system "
    "of a disk prepared before. DEV may be a disk image file."
)

DEFAULT_IMAGE = Path("/var/cache/rescue/image")
MIB = 1 << 20
SECTOR = 512
GPT_BIOS_BOOT = "21686148-6449-6E6F-744E-656564454649"
GPT_ESP = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
GPT_LINUX = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
MIN_BACKUP_MIB = {"ext4": 64, "btrfs": 128, "xfs": 300}
MKFS = {
    "ext4": ["mkfs.ext4", "-q", "-F", "-L"],
    "xfs": ["mkfs.xfs", "-q", "-f", "-L"],
    "btrfs": ["mkfs.btrfs", "-q", "-f", "-L"],
}
LABEL_MAX = {"ext4": 16, "xfs": 12, "btrfs": 255}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dev", metavar="DEV", help="the disk to prepare (e.g. /dev/sdb) or a disk image file")
    p.add_argument("--image", type=Path, default=DEFAULT_IMAGE,
                   help="rescue-root.img, or the folder rescue-image build wrote it to (default %(default)s)")
    p.add_argument("--table", choices=("gpt", "dos"), default="gpt",
                   help="partition table; dos disks boot on BIOS only (default gpt)")
    p.add_argument("--backup-fs", choices=tuple(MKFS), default="ext4", help="backup filesystem (default ext4)")
    p.add_argument("--label", default="BACKUP", help="backup filesystem label (default BACKUP)")
    p.add_argument("--disk-name", help="what DISKLABEL says (default LABEL-DISKID, unique per disk)")
    p.add_argument("--bank", default="dirvish", help="bank folder on the backup filesystem (default dirvish)")
    p.add_argument("--esp-mib", type=int, default=64, help="ESP size in MiB (gpt; default 64)")
    p.add_argument("--yes", action="store_true", help="do not ask for the disk's name (scripts, tests)")
    p.add_argument("--update", action="store_true",
                   help="replace only the rescue partition and boot code; the backup partition stays")
    p.add_argument("--no-verify", action="store_true", help="do not read the rescue partition back")


# --- the rescue image ----------------------------------------------------------------------------

@dataclass(frozen=True)
class RescueImage:
    path: Path
    bmap: bmapmod.BlockMap
    label: str


def load_image(arg: Path) -> RescueImage:
    """The image file and its block map (beside it, else made now from the filesystem)."""
    path = arg / mf.IMAGE if arg.is_dir() else arg
    if not path.is_file():
        raise RescueError(f"rescue image {path} does not exist",
                          fix="build it first (rescue-image build) or give --image FILE")
    bmap_path = path.with_suffix(".bmap")
    if bmap_path.is_file():
        bm = bmapmod.load(bmap_path)
        if bm.image_size != path.stat().st_size:
            raise RescueError(f"{bmap_path} does not belong to {path}",
                              why=f"it maps {bm.image_size} bytes, the image has {path.stat().st_size}",
                              fix="build the image again (rescue-image build)")
    else:
        bm = bmapmod.create(path)
    label = cmd(["blkid", "-p", "-s", "LABEL", "-o", "value", str(path)], check=False).stdout.strip()
    return RescueImage(path, bm, label or "RESCUE")


# --- the disk plan -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Part:
    number: int
    role: str  # bios-boot, esp, rescue, backup
    start: int  # sectors
    size: int | None  # sectors; None: to the end of the disk
    type: str


@dataclass(frozen=True)
class DiskPlan:
    table: str
    parts: tuple[Part, ...]
    core_lba: int
    core_room: int  # sectors grub's core image may use

    def part(self, role: str) -> Part | None:
        return next((p for p in self.parts if p.role == role), None)

    def sfdisk_script(self) -> str:
        lines = [f"label: {self.table}", "unit: sectors", ""]
        for p in self.parts:
            fields = [f"start={p.start}"]
            if p.size is not None:
                fields.append(f"size={p.size}")
            fields.append(f"type={p.type}")
            if self.table == "gpt":
                fields.append(f'name="{p.role}"')
                if p.role == "rescue":
                    fields.append("attrs=LegacyBIOSBootable")
            elif p.role == "rescue":
                fields.append("bootable")
            lines.append(", ".join(fields))
        return "\n".join(lines) + "\n"


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


# --- the target ----------------------------------------------------------------------------------

@contextlib.contextmanager
def target_device(dev: str) -> Iterator[str]:
    """A block device as is; a regular file attached as a loop device for the run."""
    try:
        st = os.stat(dev)
    except FileNotFoundError:
        raise RescueError(f"{dev} does not exist", fix="give a disk (e.g. /dev/sdb) or an existing image file") from None
    if stat.S_ISBLK(st.st_mode):
        yield os.path.realpath(dev)
        return
    if not stat.S_ISREG(st.st_mode):
        raise RescueError(f"{dev} is neither a block device nor a disk image file")
    _refuse_file_in_use(Path(dev))
    with attached(Path(dev)) as loop:
        yield loop


def _refuse_file_in_use(path: Path) -> None:
    """A disk image file already attached somewhere and mounted is in use."""
    from rescue.safety import check_target
    from rescue.probe import probe_disk

    out = cmd(["losetup", "--noheadings", "--output", "NAME", "--associated", str(path)], check=False).stdout
    for loop in out.split():
        check_target(probe_disk(loop))


def check_safe(device: str) -> None:
    """Refuse mounted disks, active swap and the running system's disk (rescue.safety)."""
    from rescue.safety import assert_still_safe

    assert_still_safe(device)


def disk_size(device: str) -> int:
    fd = os.open(device, os.O_RDONLY)
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


def confirm(device: str, shown_name: str, what: str) -> None:
    """Ask for the disk's name typed back; anything else aborts."""
    if not sys.stdin.isatty():
        raise Aborted(f"not confirmed: {what}",
                      why="without --yes the disk's name must be typed on a terminal",
                      fix=f"run it on a terminal, or add --yes if {device} really is the disk")
    print(f"{what}\nType the disk's name ({shown_name}) to go on, anything else stops: ", end="", flush=True)
    answer = sys.stdin.readline().strip()
    if answer != shown_name:
        raise Aborted("not confirmed; nothing was written")


# --- steps ---------------------------------------------------------------------------------------

def say(msg: str) -> None:
    print(f"  {msg}", flush=True)


def write_rescue(image: RescueImage, partition: str, verify: bool) -> None:
    shown = {"pct": -1}

    def progress(done: int, total: int) -> None:
        pct = done * 100 // max(total, 1)
        if sys.stdout.isatty() and pct != shown["pct"] and pct % 5 == 0:
            shown["pct"] = pct
            print(f"\r  writing the rescue image: {pct:3d}%", end="", flush=True)

    stats = bmapmod.copy_image(image.path, image.bmap, partition, verify=verify, progress=progress)
    if sys.stdout.isatty():
        print("\r", end="")
    say(f"rescue image {image.path.name} -> {partition}: {stats.bytes_written / MIB:.0f} MiB written "
        f"of {image.bmap.image_size / MIB:.0f} MiB in {stats.seconds:.1f} s"
        + (", read back and verified" if verify else ", checked against its block map"))


@contextlib.contextmanager
def mounted(partition: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="rescue-backup-") as tmp:
        cmd(["mount", partition, tmp])
        try:
            yield Path(tmp)
        finally:
            cmd(["umount", tmp])


def make_backup_fs(partition: str, fs: str, label: str, bank: str, disk_name: str) -> None:
    if len(label) > LABEL_MAX[fs]:
        raise PlanRefused(f"label {label!r} is too long for {fs}", fix=f"use at most {LABEL_MAX[fs]} characters")
    cmd([*MKFS[fs], label, partition], timeout=600)
    with mounted(partition) as top:
        os.chmod(top, 0o700)
        os.chown(top, 0, 0)
        (top / bank).mkdir(mode=0o700, exist_ok=True)
        os.chmod(top / bank, 0o700)
        (top / "DISKLABEL").write_text(disk_name + "\n")
        os.chmod(top / "DISKLABEL", 0o600)
    say(f"backup filesystem {fs} label {label} on {partition}: /{bank} (0700, root) and DISKLABEL {disk_name!r}")


def install_boot(device: str, plan: DiskPlan, make_esp: bool) -> None:
    rescue = plan.part("rescue")
    assert rescue is not None
    prefix = bootcode.prefix(plan.table, rescue.number)
    bios = bootcode.install_bios(device, plan.core_lba, plan.core_room, prefix)
    where = "BIOS boot partition" if plan.table == "gpt" else "gap after the MBR"
    say(f"BIOS boot: grub in the MBR, core image ({bios.core_sectors} sectors) in the {where}, prefix {prefix}")
    esp = plan.part("esp")
    if esp is not None:
        part = partition_path(device, esp.number)
        if make_esp:
            bootcode.make_esp(part, prefix)
        else:
            bootcode.install_efi(part, prefix)
        say(f"UEFI boot: {part} holds {bootcode.REMOVABLE_PATH} (the removable path, no NVRAM entry needed)")
    else:
        say("UEFI boot: none (a dos partition table has no ESP; use --table gpt for UEFI machines)")


def prepare(device: str, shown: str, image: RescueImage, args: argparse.Namespace) -> None:
    plan = plan_disk(args.table, image.bmap.image_size, args.esp_mib)
    size = disk_size(device)
    need = min_disk_bytes(plan, args.backup_fs)
    if size < need:
        raise PlanRefused(f"{shown} is too small: {size / MIB:.0f} MiB, a backup disk needs at least {need / MIB:.0f} MiB",
                          why=f"the rescue partition takes {image.bmap.image_size / MIB:.0f} MiB and the backup "
                          f"filesystem ({args.backup_fs}) needs at least {MIN_BACKUP_MIB[args.backup_fs]} MiB",
                          fix="use a bigger disk")
    if len(args.label) > LABEL_MAX[args.backup_fs]:
        raise PlanRefused(f"label {args.label!r} is too long for {args.backup_fs}",
                          fix=f"use at most {LABEL_MAX[args.backup_fs]} characters")
    check_safe(device)
    if not args.yes:
        confirm(device, shown, f"rescue prepare-disk will ERASE everything on {shown} ({size / 2**30:.1f} GiB) "
                f"and make it a {args.table} backup disk.")
    check_safe(device)  # again, right before the first write
    print(f"rescue prepare-disk: {shown} ({device}, {size / 2**30:.1f} GiB)")
    cmd(["wipefs", "--all", "--quiet", device])
    cmd(["sfdisk", "--quiet", "--wipe", "always", "--wipe-partitions", "always", device],
        input=plan.sfdisk_script())
    rescan(device)
    table = parse_sfdisk(cmd(["sfdisk", "--dump", device]).stdout, f"sfdisk --dump {device}")
    wait_table_settled(device, [(p.number, p.start, p.size) for p in table.partitions], table.sector_size)
    disk_id = (table.label_id or "").lower().removeprefix("0x")
    say(f"partition table {plan.table} (disk id {disk_id}): "
        + ", ".join(f"{p.number} {p.role}" for p in plan.parts))
    rescue = plan.part("rescue")
    backup = plan.part("backup")
    assert rescue is not None and backup is not None
    write_rescue(image, partition_path(device, rescue.number), not args.no_verify)
    install_boot(device, plan, make_esp=True)
    disk_name = args.disk_name or f"{args.label}-{disk_id.split('-')[0]}"
    make_backup_fs(partition_path(device, backup.number), args.backup_fs, args.label, args.bank, disk_name)
    cmd(["sync"])
    print(f"rescue prepare-disk: {shown} is a backup disk now: boot it to restore, "
          f"mount LABEL={args.label} for the nightly backups.")


def existing_plan(device: str, image: RescueImage) -> tuple[DiskPlan, str]:
    """The layout of a disk prepared before, read back from its partition table."""
    try:
        table = parse_sfdisk(cmd(["sfdisk", "--dump", device]).stdout, f"sfdisk --dump {device}")
    except (CommandError, LayoutError):
        raise PlanRefused(f"{device} has no partition table", why="--update needs a disk prepare-disk made before",
                          fix="prepare it without --update") from None
    label = table.label
    parts = []
    rescue_number = None
    for entry in table.partitions:
        node = entry.node
        number = entry.number
        ptype = entry.type.upper()
        probed = cmd(["blkid", "-p", "-s", "LABEL", "-o", "value", node], check=False).stdout.strip()
        role = "other"
        if ptype == GPT_BIOS_BOOT:
            role = "bios-boot"
        elif ptype == GPT_ESP:
            role = "esp"
        elif probed == image.label and rescue_number is None:
            role = "rescue"
            rescue_number = number
        parts.append(Part(number, role, entry.start, entry.size, ptype))
    rescue = next((p for p in parts if p.role == "rescue"), None)
    if rescue is None:
        raise PlanRefused(f"{device} has no rescue partition (no filesystem labelled {image.label})",
                          why="--update replaces the rescue system of a backup disk prepared before",
                          fix="prepare the disk without --update (that erases it)")
    if rescue.size is not None and rescue.size * SECTOR < image.bmap.image_size:
        raise PlanRefused(f"the rescue partition of {device} is smaller than the new image",
                          why=f"{rescue.size * SECTOR / MIB:.0f} MiB < {image.bmap.image_size / MIB:.0f} MiB",
                          fix="prepare the disk again without --update, or trim the image")
    if label == "gpt":
        boot = next((p for p in parts if p.role == "bios-boot"), None)
        if boot is None:
            raise PlanRefused(f"{device} has no BIOS boot partition", fix="prepare the disk without --update")
        core_lba, room = boot.start, boot.size or 0
        table_name = "gpt"
    else:
        first = min(p.start for p in parts)
        core_lba, room = 1, first - 1
        table_name = "dos"
    others = [p for p in parts if p.role == "other"]
    return DiskPlan(table_name, tuple(parts), core_lba, room), ", ".join(
        partition_path(device, p.number) for p in others)


def update(device: str, shown: str, image: RescueImage, args: argparse.Namespace) -> None:
    plan, kept = existing_plan(device, image)
    check_safe(device)
    rescue = plan.part("rescue")
    assert rescue is not None
    part = partition_path(device, rescue.number)
    if not args.yes:
        confirm(device, shown, f"rescue prepare-disk --update will replace the rescue system on {part}; "
                f"{kept or 'the other partitions'} stay as they are.")
    check_safe(device)
    print(f"rescue prepare-disk --update: {shown} ({device})")
    write_rescue(image, part, not args.no_verify)
    install_boot(device, plan, make_esp=False)
    cmd(["sync"])
    say(f"untouched: {kept or 'no other partition'}")


def run(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        raise RescueError("rescue prepare-disk must run as root", why="it writes a disk and mounts its backup partition")
    image = load_image(args.image)
    shown = os.path.basename(args.dev.rstrip("/"))
    start = time.monotonic()
    with target_device(args.dev) as device:
        if args.update:
            update(device, shown, image, args)
        else:
            prepare(device, shown, image, args)
    say(f"done in {time.monotonic() - start:.1f} s")
    return int(Exit.OK)

