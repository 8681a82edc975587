"""`rescue capture`: record a machine's disk layout beside its backup."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from rescue.backups import find_backups
from rescue.backups.health import record_added, subvolumes_no_vault_holds
from rescue.capture import HookEnv, capture, hook_env, is_local, write_capture
from rescue.capture.probe import SshRunner
from rescue.errors import Exit, RescueError
from rescue.layout.model import Layout

NAME = "capture"
HELP = "record a machine's disk layout (as a dirvish post-server hook, or into --out DIR)"
ORDER = 10
DESCRIPTION = """\
Record what rsync never saves: partition tables (sfdisk -d), filesystems with
their UUIDs and labels, swap, mount points, the mode and owner of each
filesystem's root, fstab, boot mode (BIOS/UEFI) and the OS release; per btrfs
filesystem its subvolumes (snapshots, read-only), the default subvolume, each
mount's subvol= and options, nocow folders and quota groups; md RAID arrays
(UUID, name, level, metadata, data offset, bitmap, members and roles) and LVM
(PV, VG and LV UUIDs, sizes, thin pools, each VG's vgcfgbackup) with the
disks' by-id names, serial and WWN, for the restore to make them again.

As a dirvish post-server hook (no --out), it reads DIRVISH_CLIENT and
DIRVISH_DEST and writes a rescue/ folder into the image, beside tree/. A
remote client is read over ssh (BatchMode) with plain commands only.

--disk DEV --root DIR captures a system that is not running: its disk is
attached here and its filesystems are mounted under DIR.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, metavar="DIR", help="write layout.json and the raw outputs into DIR")
    p.add_argument("--ssh", metavar="HOST", help="capture HOST over ssh (BatchMode) instead of this machine")
    p.add_argument("--disk", action="append", metavar="DEV",
                   help="the disk of a system that is not running (with --root); repeat it for each disk "
                        "of a machine with several")
    p.add_argument("--root", type=Path, metavar="DIR", help="where that system's filesystems are mounted")
    p.add_argument("--client", metavar="NAME", help="the name to record as client (default: the hook's, or the hostname)")
    p.add_argument("--ssh-command", default="ssh", metavar="PROGRAM",
                   help="the ssh program to use (default ssh; always run with -o BatchMode=yes)")


def run(args: argparse.Namespace) -> int:
    env = hook_env(os.environ) if args.out is None else None
    if args.out is None and env is None:
        print("rescue capture: give --out DIR, or run it as a dirvish post-server hook", file=sys.stderr)
        return int(Exit.USAGE)
    if args.ssh and args.disk:
        raise RescueError("--ssh and --disk do not go together", fix="--disk captures a disk attached to this machine")
    runner = None
    client = args.client
    if env is not None:
        if not env.image_dir.is_dir():
            raise RescueError(f"the image folder {env.image_dir} does not exist",
                              why="DIRVISH_DEST should be an image's tree/ folder")
        client = client or env.client
        if args.disk is None and not args.ssh and not is_local(env.client, env.server):
            runner = SshRunner(env.client, ssh=args.ssh_command)
    if args.ssh:
        runner = SshRunner(args.ssh, ssh=args.ssh_command)
        client = client or args.ssh
    # a backup server backing itself up: its backup disk is not part of what to restore
    backup = (str(env.image_dir.resolve()),) if env is not None and runner is None else ()
    layout, raw = capture(client=client, runner=runner, disk=args.disk, root=args.root, backup_paths=backup)
    if env is not None and env.status and env.status != "success":
        raw.warnings.append(f"dirvish reported status {env.status} for this image")
    # resolved: `--out .` (rsnapshot's backup_script runs in the folder it then copies) names its own folder
    dest = args.out.resolve() if args.out is not None else env.image_dir / "rescue"
    write_capture(dest, layout, raw)
    fs = sum(1 for f in layout.filesystems if f.fstype != "swap")
    subvolumes = sum(len(v.subvolumes) for v in layout.btrfs)
    extra = f", {subvolumes} btrfs subvolume(s)" if layout.btrfs else ""
    print(f"rescue capture: wrote {dest} ({len(layout.disks)} disk(s), {fs} filesystem(s), "
          f"{len(layout.swaps)} swap{extra})")
    if env is not None:
        _measure(env.image_dir)
        _coverage(env, client or env.client, layout)
    return int(Exit.OK)


def _coverage(env: HookEnv, client: str, layout: Layout) -> None:
    """Say which btrfs subvolumes of the layout no vault of this client in the bank holds
    (dirvish's xdev copies them empty). A note in the image's log; never a failed capture."""
    if not layout.btrfs:
        return
    try:
        bank = env.image_dir.parent.parent
        vaults = [v for v in find_backups([bank]).vaults if v.client == client]
        unheld = subvolumes_no_vault_holds(json.loads(layout.dumps()), vaults)
    except Exception as e:  # noqa: BLE001 - the layout is written; this is advice
        print(f"rescue capture: note: the bank's vaults were not compared with the subvolumes ({e})", file=sys.stderr)
        return
    if unheld:
        print(f"rescue capture: INCOMPLETE backup of {client}: btrfs subvolume(s) in no vault: {', '.join(unheld)} "
              "(a vault with xdev copies a subvolume's folder empty; add a vault for each, see `rescue doctor`)")


def _measure(image_dir: Path) -> None:
    """What this image added to the bank, kept in rescue/added.json for `rescue list --health`.

    Done after the layout is written; a failure here is a note, never a failed capture."""
    try:
        added = record_added(image_dir)
    except Exception as e:  # noqa: BLE001 - the layout is what matters; the measure is a bonus
        print(f"rescue capture: note: what this image added was not measured ({e})", file=sys.stderr)
        return
    print(f"rescue capture: this image added {added.bytes} bytes, {added.inodes} inodes "
          f"(against {added.reference or 'nothing: first image'})")
