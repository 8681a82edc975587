"""`rescue prepare-disk`: turn a blank disk into a bootable backup disk.

The face only: the plan (rescue.prepare.plan) and its run on the restore's
Executor (rescue.prepare.run) are shared with the drill. See rescue.prepare
for the layout; --update rewrites only the rescue partition and the boot code.
DEV may be a disk image file: it is attached as a loop device for the run.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from rescue.errors import Aborted, Exit, RescueError
from rescue.prepare.plan import BACKUP_FS, PrepareOptions

NAME = "prepare-disk"
ORDER = 60
HELP = "make a disk (or disk image file) a bootable backup disk: rescue system + backup partition"
DESCRIPTION = (
    "Partition DEV (gpt: BIOS boot, ESP, rescue, backup; dos: rescue, backup), write the rescue "
    "image (only used blocks, verified), make it boot on BIOS and UEFI, and make the backup "
    "filesystem with a root-only dirvish bank and a DISKLABEL file. Everything on DEV is erased; "
    "without --yes you type the disk's name to confirm. --update replaces only the rescue system "
    "of a disk prepared before. DEV may be a disk image file. --dry-run shows the plan and writes "
    "nothing; after a failure, a crash or a kill the same command resumes where it stopped."
)

DEFAULT_IMAGE = Path("/var/cache/rescue/image")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dev", metavar="DEV", help="the disk to prepare (e.g. /dev/sdb) or a disk image file")
    p.add_argument("--image", type=Path, default=DEFAULT_IMAGE,
                   help="rescue-root.img, or the folder rescue-image build wrote it to (default %(default)s)")
    p.add_argument("--table", choices=("gpt", "dos"), default="gpt",
                   help="partition table; dos disks boot on BIOS only (default gpt)")
    p.add_argument("--backup-fs", choices=BACKUP_FS, default="ext4", help="backup filesystem (default ext4)")
    p.add_argument("--label", default="BACKUP", help="backup filesystem label (default BACKUP)")
    p.add_argument("--disk-name", help="what DISKLABEL says (default LABEL-DISKID, unique per disk)")
    p.add_argument("--bank", default="dirvish", help="bank folder on the backup filesystem (default dirvish)")
    p.add_argument("--esp-mib", type=int, default=64, help="ESP size in MiB (gpt; default 64)")
    p.add_argument("--yes", action="store_true", help="do not ask for the disk's name (scripts, tests)")
    p.add_argument("--update", action="store_true",
                   help="replace only the rescue partition and boot code; the backup partition stays")
    p.add_argument("--no-verify", action="store_true", help="do not read the rescue partition back")
    p.add_argument("--dry-run", action="store_true", help="print the plan and the steps as shell; write nothing")
    p.add_argument("--state-dir", type=Path, metavar="DIR",
                   help="where the resume journal and the log are kept (default /var/lib/rescue)")


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


def options(args: argparse.Namespace) -> PrepareOptions:
    return PrepareOptions(dev=args.dev, image=args.image, table=args.table, backup_fs=args.backup_fs,
                          label=args.label, disk_name=args.disk_name, bank=args.bank, esp_mib=args.esp_mib,
                          yes=args.yes, update=args.update, verify=not args.no_verify, dry_run=args.dry_run,
                          state_dir=args.state_dir)


def run(args: argparse.Namespace) -> int:
    from rescue.commands.restore import ProgressPrinter
    from rescue.prepare.run import prepare_disk

    if os.geteuid() != 0 and not args.dry_run:
        raise RescueError("rescue prepare-disk must run as root", why="it writes a disk and mounts its backup partition")
    prepare_disk(options(args), confirm=confirm, say=lambda line: print(line, flush=True),
                 on_event=ProgressPrinter(name="prepare-disk"))
    return int(Exit.OK)
