"""`rescue plan`: show exactly what a restore would do, and write restore.sh. Writes no disk.

It reads the bank, the captured layout and the target's facts, builds the
plan (or says why it cannot work), prints the review (or JSON) and, when
asked, writes restore.sh: a script a person can read, edit and run by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rescue.backups.source import Selection, add_source_arguments, source_from_args
from rescue.errors import Exit, RescueError

if TYPE_CHECKING:
    from rescue.engine.restore import Restore
    from rescue.plan.model import Plan

NAME = "plan"
ORDER = 15
HELP = "show what a restore onto a disk would do, and write restore.sh (writes no disk)"
DESCRIPTION = (
    "Build the restore plan for --client from the images in --bank, --rsnapshot or --tree (the newest "
    "good image of each "
    "vault, or the newest at or before --image DATE) onto --target, and print it: what on the target "
    "will be destroyed, the captured and the new partition table, the filesystems with their UUIDs "
    "and labels, the bytes to copy, every warning. --script FILE writes restore.sh. Nothing is "
    "written to any disk. Exit codes: 0 a plan was made, 3 the plan cannot work (too small, no "
    "layout, failed image), 4 the target is not safe to write, 1 other errors."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_source_arguments(p)
    p.add_argument("--client", required=True, metavar="NAME", help="the machine to restore (rescue list shows them)")
    p.add_argument("--image", metavar="DATE",
                   help="use the newest good image at or before DATE (default: the newest good image)")
    add_target_argument(p, "the whole disk the restore would overwrite, e.g. /dev/sdb")
    add_layout_arguments(p)
    p.add_argument("--skip-vault", action="append", default=[], metavar="NAME",
                   help="leave a vault out of the plan; may be repeated")
    add_size_argument(p)
    p.add_argument("--no-bootloader", action="store_true", help="plan no grub installation")
    p.add_argument("--json", action="store_true", help="print the plan as JSON instead of the review")
    p.add_argument("--script", type=Path, metavar="FILE", help="write restore.sh to FILE")


@dataclass(frozen=True)
class Request:
    """What plan and restore both read from their options, before the target is probed."""

    devices: tuple[str, ...]  # the target disks, links resolved, in --target order
    restore: Restore  # the one restore object every face drives
    selection: Selection

    @property
    def target(self) -> str | tuple[str, ...]:
        """What Restore.plan and Restore.session take: one disk, or the disks of --target OLD=NEW."""
        return self.devices[0] if len(self.devices) == 1 else self.devices


def read_request(args: argparse.Namespace, command: str, **run: Any) -> Request:
    """Backups + client + target options -> the restore, its chosen images and their layout.

    Reads only; every bad option is a RescueError before any disk is probed. `run` holds the
    options only a restore has (bootloader, state folder, log, ...)."""
    from rescue.engine.restore import Restore, RestoreOptions
    from rescue.plan.disks import TargetSpec

    source = source_from_args(args)
    source.check()
    specs = [TargetSpec.parse(t) for t in args.target]
    for spec in specs:
        if not os.path.exists(spec.new):
            raise RescueError(f"{spec.new} does not exist",
                              fix="name the target disk, e.g. /dev/sdb (lsblk lists the disks)")
    devices = tuple(os.path.realpath(spec.new) for spec in specs)
    named = any(spec.old for spec in specs)
    options = RestoreOptions(
        client=args.client, image=args.image, source_disk=args.source_disk, grow=args.grow,
        disk_map=tuple((spec.old or "", d) for spec, d in zip(specs, devices)) if named else (),
        skip_disks=tuple(args.skip_disk),
        skip_vaults=tuple(args.skip_vault), fstypes=parse_fstypes(args.fstype), sizes=parse_sizes(args.size),
        luks_new_key=getattr(args, "luks_new_key", False),
        btrfs_snapshots=getattr(args, "btrfs_snapshots", "leave-out"), **run,
    )
    restore = Restore(source, options)
    selection = restore.select()
    for note in selection.notes:
        print(f"rescue {command}: note: {note}", file=sys.stderr)
    return Request(devices, restore, selection)


def make_plan(args: argparse.Namespace) -> Plan:
    """Backups + client + target -> Plan (or the RescueError saying why not). Reads only."""
    req = read_request(args, "plan", bootloader="skip" if args.no_bootloader else "auto")
    return req.restore.plan(req.selection, req.target)


def add_layout_arguments(p: argparse.ArgumentParser) -> None:
    """--grow, --source-disk, --fstype, --luks-new-key and --btrfs-snapshots: how the captured disk
    is laid onto the target, the same for rescue plan, rescue restore and the wizard."""
    from rescue.plan.model import SNAPSHOT_CHOICES

    p.add_argument("--grow", metavar="MOUNTPOINT|N",
                   help="the partition that takes all the free space (default: the restored filesystems "
                        "share it in proportion to their captured size)")
    p.add_argument("--source-disk", metavar="DEV",
                   help="restore only this captured disk onto --target, leaving the others out "
                        "(or map each with --target OLD=NEW); without it, of mirrored disks each "
                        "holding the whole machine, the one grub was on is taken: its arrays come back degraded")
    p.add_argument("--skip-disk", action="append", default=[], metavar="OLD",
                   help="leave a captured disk out on purpose: its vaults are not restored; may be repeated")
    add_fstype_argument(p)
    p.add_argument("--luks-new-key", action="store_true",
                   help="make each LUKS container with a new master key (luksFormat with its captured UUID, "
                        "cipher, key size, PBKDF and label) and a new passphrase typed twice, instead of writing "
                        "its kept header back (which keeps every old keyslot)")
    p.add_argument("--btrfs-snapshots", choices=SNAPSHOT_CHOICES, default="leave-out",
                   help="what becomes of btrfs snapshots: leave-out (the default; the plan lists them) or "
                        "restore (each whose files a vault's tree holds is made as a subvolume at its path "
                        "and filled by the copy, read-only again when it was)")


def add_target_argument(p: argparse.ArgumentParser, what: str) -> None:
    """--target NEW, or --target OLD=NEW per captured disk of a machine with several."""
    p.add_argument("--target", required=True, action="append", metavar="[OLD=]NEW",
                   help=f"{what}, or a /dev/disk/by-id/ name. A machine with several disks: one "
                        "--target OLD=NEW per captured disk (OLD: its captured device such as /dev/sdb, "
                        "its by-id name or its serial); --skip-disk OLD leaves one out")


def add_fstype_argument(p: argparse.ArgumentParser) -> None:
    """--fstype, the same for rescue plan and rescue restore."""
    p.add_argument("--fstype", action="append", default=[], metavar="MOUNTPOINT=TYPE",
                   help="make this filesystem type instead of the captured one (e.g. /home=ext4 for an "
                        "old bank whose types were not recorded); may be repeated")


def add_size_argument(p: argparse.ArgumentParser) -> None:
    """--size, the same for rescue plan and rescue restore."""
    p.add_argument("--size", action="append", default=[], metavar="MOUNTPOINT=SIZE",
                   help="make this partition exactly SIZE (K, M, G, T: KiB ... TiB), e.g. /home=200G, swap=1G "
                        "or 3=512M; never less than it needs; may be repeated")


SIZE_UNITS = {"K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
SIZE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT])(?:i?B)?", re.IGNORECASE)


def parse_size(text: str) -> int | None:
    """'200G' -> bytes (binary units, as sfdisk and lsblk mean them); None if it is not a size."""
    m = SIZE_RE.fullmatch(text.strip())
    if not m:
        return None
    return int(float(m.group(1)) * SIZE_UNITS[m.group(2).upper()])


def parse_sizes(values: Sequence[str]) -> tuple[tuple[str, int], ...]:
    """--size /home=200G ... as (mount point, number or swap; bytes) pairs."""
    out = []
    for value in values:
        where, sep, text = value.partition("=")
        size = parse_size(text) if sep and where else None
        if not size:
            raise RescueError(f"--size {value!r} is not MOUNTPOINT=SIZE",
                              fix="write it like --size /home=200G, --size swap=1G or --size 3=512M "
                                  "(units K, M, G, T)")
        out.append((where.strip(), size))
    return tuple(out)


def parse_fstypes(values: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """--fstype /home=ext4 ... as (mount point, type) pairs."""
    out = []
    for value in values:
        where, sep, fstype = value.partition("=")
        if not sep or not where or not fstype:
            raise RescueError(f"--fstype {value!r} is not MOUNTPOINT=TYPE",
                              fix="write it like --fstype /home=ext4")
        out.append((where, fstype))
    return tuple(out)


def run(args: argparse.Namespace) -> int:
    plan = make_plan(args)
    if args.json:
        data = plan.to_json()
        data["fingerprint"] = plan.fingerprint
        json.dump(data, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(plan.review())
    if args.script:
        text = plan.script()
        try:
            args.script.write_text(text)
            args.script.chmod(0o755)
        except OSError as e:
            raise RescueError(f"cannot write {args.script}: {e.strerror}",
                              fix="give a --script path in a writable folder") from None
        print(f"rescue plan: restore.sh written to {args.script} (read it before you run it)", file=sys.stderr)
    return int(Exit.OK)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m rescue.commands.plan ...`, same as `rescue plan ...`."""
    from rescue.cli import main as cli_main

    return cli_main(["plan", *(argv if argv is not None else sys.argv[1:])])
