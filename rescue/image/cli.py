"""`rescue-image`: build the rescue root partition image.

    rescue-image build [--out DIR] [--suite bookworm] [--mirror URL] [--recipe FILE]
    rescue-image show [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from rescue.errors import Exit, RescueError
from rescue.image import build as buildmod
from rescue.image import manifest as mf
from rescue.jsonform import to_json
from rescue.image import recipe as recipemod

DEFAULT_OUT = buildmod.DEFAULT_OUT


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rescue-image", description="Build the rescue partition image of a backup disk.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    b = sub.add_parser("build", help="build rescue-root.img, its block map and manifest.json",
                       description="Build the rescue root partition image (ext4, label RESCUE) with mmdebstrap. "
                       "Reuses the output when the recipe and rescue's code have not changed.")
    b.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    b.add_argument("--suite", help="Debian suite (default: the recipe's, bookworm)")
    b.add_argument("--mirror", help="Debian mirror URL (default: the one in this machine's apt sources)")
    b.add_argument("--recipe", type=Path, help="recipe file (default: the one shipped with rescue)")
    b.add_argument("--cache", type=Path, default=buildmod.DEFAULT_CACHE,
                   help=f"cache for packages and the base root (default {buildmod.DEFAULT_CACHE})")
    b.add_argument("--force", action="store_true", help="build even if the output is up to date")
    s = sub.add_parser("show", help="print the manifest of a built image")
    s.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"image folder (default {DEFAULT_OUT})")
    s.add_argument("--json", action="store_true", help="the whole manifest as JSON")
    return p


def _build(args: argparse.Namespace) -> int:
    recipe = recipemod.load(args.recipe)
    m = buildmod.build(buildmod.BuildOptions(out=args.out.resolve(), recipe=recipe, suite=args.suite,
                                             mirror=args.mirror, cache=args.cache.resolve(), force=args.force))
    print(args.out / m.image)
    return 0


def _show(args: argparse.Namespace) -> int:
    m = mf.load(args.out)
    if args.json:
        print(json.dumps(to_json(m), indent=2))
        return 0
    print(f"image     {args.out / m.image}")
    print(f"label     {m.label}  uuid {m.fs_uuid}")
    print(f"size      {m.used_bytes / 2**20:.0f} MiB used of {m.total_bytes / 2**20:.0f} MiB")
    print(f"kernel    {m.kernel}  suite {m.suite}  packages {len(m.packages)}")
    print(f"built     {m.built} in {m.build_seconds:.0f} s  key {m.build_key}")
    print(f"sha256    {m.sha256}")
    if m.unattended_placeholder:
        print("note      the unattended restore is a placeholder (built before scripts/unattended-restore existed)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.command is None:
        p.print_help()
        return int(Exit.USAGE)
    try:
        return _build(args) if args.command == "build" else _show(args)
    except RescueError as e:
        print(f"rescue-image {args.command}: {e}", file=sys.stderr)
        return int(e.exit_code)
    except KeyboardInterrupt:
        print(f"rescue-image {args.command}: interrupted", file=sys.stderr)
        return int(Exit.ABORTED)
    except BrokenPipeError:
        from rescue.cli import closed_pipe

        return closed_pipe()
