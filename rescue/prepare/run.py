"""Prepare a backup disk: the plan run by the restore's Executor, for the command and the drill alike.

Nothing is written before the plan is complete and confirmed; the engine
then holds the disk's lock, journals every step and probes the disk again
before its first write. A rerun of the same preparation after a crash or a
kill resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rescue import events as ev
from rescue.devices import attached, partition_path
from rescue.errors import LayoutError, PlanRefused, RescueError
from rescue.image import bmap as bmapmod
from rescue.image import manifest as mf
from rescue.layout.sfdisk import parse_sfdisk
from rescue.prepare.plan import (
    GPT_BIOS_BOOT,
    GPT_ESP,
    DiskPlan,
    Part,
    PrepareOptions,
    PreparePlan,
    RescueImage,
    build_prepare_plan,
    build_update_plan,
    check_options,
)
from rescue.run import CommandError
from rescue.run import run as cmd

if TYPE_CHECKING:
    from rescue.engine.executor import Outcome

FACE = "rescue prepare-disk"

Confirm = Callable[[str, str, str], None]  # (device, name to type, what will happen); raises Aborted
Say = Callable[[str], None]


def load_image(arg: Path) -> RescueImage:
    """The image file and its block map (beside it, else made from the filesystem when written)."""
    path = arg / mf.IMAGE if arg.is_dir() else arg
    if not path.is_file():
        raise RescueError(f"rescue image {path} does not exist",
                          fix="build it first (rescue-image build) or give --image FILE")
    size = path.stat().st_size
    bmap_path: Path | None = path.with_suffix(".bmap")
    assert bmap_path is not None
    if bmap_path.is_file():
        bm = bmapmod.load(bmap_path)
        if bm.image_size != size:
            raise RescueError(f"{bmap_path} does not belong to {path}",
                              why=f"it maps {bm.image_size} bytes, the image has {size}",
                              fix="build the image again (rescue-image build)")
    else:
        bmap_path = None
    label = cmd(["blkid", "-p", "-s", "LABEL", "-o", "value", str(path)], check=False).stdout.strip()
    return RescueImage(path.resolve(), bmap_path.resolve() if bmap_path else None, size, label or "RESCUE")


@contextlib.contextmanager
def target_device(dev: str) -> Iterator[str]:
    """A block device as is; a disk image file as a loop device for the run.

    A file already attached (a killed run's loop device) is used as it is, so
    its journal, its lock and its leftovers name the same disk; only a loop
    device attached here is detached again.
    """
    try:
        st = os.stat(dev)
    except FileNotFoundError:
        raise RescueError(f"{dev} does not exist", fix="give a disk (e.g. /dev/sdb) or an existing image file") from None
    if stat.S_ISBLK(st.st_mode):
        yield os.path.realpath(dev)
        return
    if not stat.S_ISREG(st.st_mode):
        raise RescueError(f"{dev} is neither a block device nor a disk image file")
    loops = cmd(["losetup", "--noheadings", "--output", "NAME", "--associated", str(dev)], check=False).stdout.split()
    if loops:
        for other in loops[1:]:  # the file written through another loop device is that device written
            check_safe(other)
        yield loops[0]
        return
    with attached(Path(dev)) as loop:
        yield loop


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


def existing_plan(device: str, image: RescueImage) -> tuple[DiskPlan, tuple[str, ...]]:
    """The layout of a disk prepared before, read back from its partition table (for --update)."""
    try:
        table = parse_sfdisk(cmd(["sfdisk", "--dump", device]).stdout, f"sfdisk --dump {device}")
    except (CommandError, LayoutError):
        raise PlanRefused(f"{device} has no partition table", why="--update needs a disk prepare-disk made before",
                          fix="prepare it without --update") from None
    parts = []
    rescue_number = None
    for entry in table.partitions:
        ptype = entry.type.upper()
        probed = cmd(["blkid", "-p", "-s", "LABEL", "-o", "value", entry.node], check=False).stdout.strip()
        role = "other"
        if ptype == GPT_BIOS_BOOT:
            role = "bios-boot"
        elif ptype == GPT_ESP:
            role = "esp"
        elif probed == image.label and rescue_number is None:
            role, rescue_number = "rescue", entry.number
        parts.append(Part(entry.number, role, entry.start, entry.size, ptype))
    if rescue_number is None:
        raise PlanRefused(f"{device} has no rescue partition (no filesystem labelled {image.label})",
                          why="--update replaces the rescue system of a backup disk prepared before",
                          fix="prepare the disk without --update (that erases it)")
    if table.label == "gpt":
        boot = next((p for p in parts if p.role == "bios-boot"), None)
        if boot is None:
            raise PlanRefused(f"{device} has no BIOS boot partition", fix="prepare the disk without --update")
        core_lba, room = boot.start, boot.size or 0
    else:
        core_lba, room = 1, min(p.start for p in parts) - 1
    kept = tuple(partition_path(device, p.number) for p in parts if p.role == "other")
    return DiskPlan(table.label, tuple(parts), core_lba, room), kept


def identity(dev: str, device: str) -> str:
    """How the journal names the disk: a disk image file by its path, a disk as the restore names it."""
    if not dev.startswith("/dev/") and os.path.isfile(dev):
        return "file-" + os.path.realpath(dev)
    from rescue.probe import identity_of

    return identity_of(device)


@dataclass(frozen=True)
class Prepared:
    """What a preparation did: its plan, and the engine's outcome (None: a dry run)."""

    plan: PreparePlan
    outcome: Outcome | None
    seconds: float


def prepare_disk(opts: PrepareOptions, *, confirm: Confirm | None = None, say: Say = print,
                 on_event: Callable[[ev.Event], None] = lambda e: None,
                 mount_dir: Path | None = None) -> Prepared:
    """Plan, review, confirm and run a backup disk's preparation (or --update) on the Executor.

    `confirm` is asked unless opts.yes; without it an unconfirmed run is refused.
    A dry run prints the review and the steps as shell, and writes nothing.
    """
    from rescue.engine.executor import DEFAULT_MOUNT_DIR, Executor
    from rescue.engine.journal import identity_name
    from rescue.errors import Aborted
    from rescue.paths import host_paths

    check_options(opts)
    image = load_image(opts.image)
    shown = os.path.basename(opts.dev.rstrip("/"))
    start = time.monotonic()
    with target_device(opts.dev) as device:
        state_dir = Path(opts.state_dir or host_paths().state_dir)
        ident = identity(opts.dev, device)
        folder = state_dir / identity_name(ident)
        executor = Executor(target=device, identity=ident, state_dir=state_dir,
                            log_path=None if opts.dry_run else folder / f"prepare-disk-{time.strftime('%Y%m%d-%H%M%S')}.log",
                            mount_dir=mount_dir or DEFAULT_MOUNT_DIR, title=f"prepare-disk of {shown}", face=FACE,
                            work="prepare-disk")
        # One writer per disk (the restore's lock) from before a killed run's leftovers are released
        # to the end; a dry run writes nothing and takes no lock.
        with contextlib.nullcontext() if opts.dry_run else executor.locked():
            if not opts.dry_run:
                for line in executor.release_leftovers():
                    say(f"prepare-disk: {line}")
            check_safe(device)
            size = disk_size(device)
            if opts.update:
                disk, kept = existing_plan(device, image)
                plan = build_update_plan(device, shown, size, disk, image, opts.verify, kept)
            else:
                plan = build_prepare_plan(opts, device, shown, size, image)
            say(plan.review())
            if opts.dry_run:
                say("# ---- the same by hand (nothing was written) ----")
                say(plan.script())
                return Prepared(plan, None, time.monotonic() - start)
            if not opts.yes:
                if confirm is None:
                    raise Aborted("not confirmed; nothing was written", fix="confirm the disk, or use --yes")
                what = (f"rescue prepare-disk --update will replace the rescue system on {shown}; "
                        f"{', '.join(plan.kept) or 'the other partitions'} stay as they are." if opts.update else
                        f"rescue prepare-disk will ERASE everything on {shown} ({size / 2**30:.1f} GiB) "
                        f"and make it a {plan.disk.table} backup disk.")
                confirm(device, shown, what)
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            outcome = executor.run(plan, on_event)
    if opts.update:
        say(f"  untouched: {', '.join(plan.kept) or 'no other partition'}")
    else:
        say(f"rescue prepare-disk: {shown} is a backup disk now: boot it to restore, "
            f"mount LABEL={opts.label} for the nightly backups.")
    seconds = time.monotonic() - start
    say(f"  done in {seconds:.1f} s")
    return Prepared(plan, outcome, seconds)
