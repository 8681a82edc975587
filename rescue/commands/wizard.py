"""`rescue wizard`: the restore wizard on the console (Textual screens over the engine)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rescue.backups.source import add_source_arguments, source_from_args
from rescue.commands.plan import add_layout_arguments
from rescue.commands.restore import add_run_arguments
from rescue.engine.restore import RestoreOptions
from rescue.errors import Exit, RescueError

NAME = "wizard"
ORDER = 30
HELP = "restore a machine step by step on the console (keyboard only, 80x24)"
DESCRIPTION = (
    "Find the backups, choose a machine, its images and a target disk, review the plan, "
    "type the target's name to confirm, and watch the restore. Without --bank, --rsnapshot or --tree it reads the "
    "dirvish banks and rsnapshot roots on the mounted backup partition (/backup) and in /etc/dirvish/master.conf. "
    "An unfinished restore is offered for resume. F1 or ? shows help on every screen."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_source_arguments(p)
    p.add_argument("--client", metavar="NAME", help="the machine a --tree belongs to")
    p.add_argument("--config", type=Path, metavar="FILE",
                   help="a dirvish master.conf whose bank: list to read")
    p.add_argument("--backup-mount", type=Path, default=None, metavar="DIR",
                   help="where the backup partition is mounted (default /backup)")
    p.add_argument("--state-dir", type=Path, metavar="DIR",
                   help="where restore journals are kept (default /var/lib/rescue)")
    add_layout_arguments(p)  # the same options as rescue restore; vaults and sizes are asked on screens
    add_run_arguments(p)


def options_from_args(args: argparse.Namespace) -> RestoreOptions:
    """The wizard's command-line answers as the options rescue restore takes."""
    from rescue.commands.plan import parse_fstypes
    from rescue.commands.restore import parse_luks_keys

    return RestoreOptions(grow=getattr(args, "grow", None), source_disk=getattr(args, "source_disk", None),
                          fstypes=parse_fstypes(getattr(args, "fstype", None) or ()),
                          bootloader=getattr(args, "bootloader", "auto"),
                          verify_checksum=getattr(args, "verify_checksum", False), state_dir=args.state_dir,
                          luks_keys=parse_luks_keys(getattr(args, "luks_key", None) or ()),
                          luks_new_key=getattr(args, "luks_new_key", False),
                          btrfs_snapshots=getattr(args, "btrfs_snapshots", "leave-out"),
                          face="rescue wizard")


def run(args: argparse.Namespace) -> int:
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise RescueError(
            "rescue wizard needs a terminal",
            why="standard input or output is not a terminal",
            fix="run it on a console or over ssh -t, or use rescue restore for an unattended restore",
        )
    from rescue.tui import RealEngine, make_app

    source = source_from_args(args, required=False)
    source.check()
    engine = RealEngine(config=args.config, backup_mount=args.backup_mount, source=source,
                        options=options_from_args(args))
    app = make_app(engine)
    app.run()
    print(app.farewell())  # the screen is gone: say what state the disk is in and what next
    code = app.return_code
    return int(Exit.ABORTED) if code is None else int(code)
