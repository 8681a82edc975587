"""`rescue` command line: one subcommand per module in rescue/commands/.

Each command module defines NAME, HELP, add_arguments(parser) and
run(args) -> int. Errors a person can act on (RescueError) are printed
without a traceback and become the documented exit codes.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import pkgutil
import sys
from collections.abc import Sequence

import rescue.commands
from rescue import __version__
from rescue.errors import Exit, RescueError


def _commands() -> list:
    mods = []
    for info in pkgutil.iter_modules(rescue.commands.__path__):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"rescue.commands.{info.name}")
        if hasattr(mod, "NAME"):
            mods.append(mod)
    return sorted(mods, key=lambda m: getattr(m, "ORDER", 50))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rescue",
        description="Bootable backup disks and bare-metal restore from dirvish snapshots.",
    )
    parser.add_argument("--version", action="version", version=f"rescue {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every command run")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in _commands():
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP))
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(message)s",
        stream=sys.stderr,
    )
    if not getattr(args, "_run", None):
        parser.print_help()
        return Exit.USAGE
    try:
        return int(args._run(args))
    except RescueError as e:
        print(f"rescue {args.command}: {e}", file=sys.stderr)
        return int(e.exit_code)
    except KeyboardInterrupt:
        print(f"rescue {args.command}: interrupted", file=sys.stderr)
        return int(Exit.ABORTED)
    except BrokenPipeError:
        return closed_pipe()


def closed_pipe() -> int:
    """The reader of our output went away (`rescue list --json | head`): end quietly, as Unix tools do.

    stdout is pointed at /dev/null so that the flush at exit cannot raise
    again; the status is a shell's for a command killed by SIGPIPE.
    """
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, sys.stdout.fileno())
    os.close(null)
    return 128 + 13
