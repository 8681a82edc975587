"""The few things the wizard asks of rescue, behind one small interface.

The wizard holds no restore logic: it asks an Engine to find backups, list
disks, build a plan and run it, and draws what comes back. RealEngine
delegates to rescue.backups, rescue.probe, rescue.plan and rescue.engine;
tests use RecordedEngine (tests/unit/recorded_engine.py), which answers from facts
recorded on a real machine.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from rescue.backups.model import Image, Machine
from rescue.events import Event
from rescue.plan.disks import CapturedDisk
from rescue.target import TargetDisk
from rescue.tui.review import Review


SHELL_MOUNT = Path("/mnt/target")  # where the wizard's shell finds the target's filesystems


@dataclass(frozen=True)
class Discovery:
    """What the backup search found: banks, machines in them, and what looked wrong."""

    banks: tuple[Path, ...]
    machines: tuple[Machine, ...]
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Interrupted:
    """A restore that started and did not finish (found in its journal)."""

    client: str
    target: str
    steps_done: int
    steps_total: int
    review: Review  # the plan it was running, to show again and resume
    started: str | None = None
    why: str = ""  # why it stopped, in a few words: "step 11 (copy ...) failed: ...", "cancelled"


class Engine(Protocol):
    """What the wizard calls. Blocking methods run in a worker thread."""

    def discover(self) -> Discovery:
        """Banks, machines, vaults and images (may read many folders: slow)."""
        ...

    def choose(self, machine: Machine) -> Mapping[str, Image]:
        """The default image per vault: the newest whose status is success."""
        ...

    def disks(self) -> tuple[TargetDisk, ...]:
        """Every disk of this machine, safe or not."""
        ...

    def release_leftovers(self) -> tuple[str, ...]:
        """Release what killed earlier restores left mounted or running (before disks() is asked),
        so a disk such a run left behind can be chosen again; says what was done."""
        ...

    def captured_disks(self, machine: Machine, images: tuple[Image, ...]) -> tuple[CapturedDisk, ...]:
        """The captured disks with a partition table in the layout of these images (reads files).

        Several: the wizard asks a new disk for each, or leaves it out."""
        ...

    def plan(self, machine: Machine, images: tuple[Image, ...], target: TargetDisk | tuple[TargetDisk, ...],
             skip: tuple[str, ...] = (), sizes: tuple[tuple[str, int], ...] = (),
             disk_map: tuple[tuple[str, str], ...] = (), skip_disks: tuple[str, ...] = (),
             snapshots: str | None = None) -> Review:
        """Build the plan and its review; raises RescueError when it cannot work.

        skip names vaults the person chose to leave out (their filesystems are made empty);
        sizes are partitions the person sized (mount point, number or swap; bytes), as
        `rescue plan --size` takes them. A machine with several disks: disk_map pairs each
        captured disk with its target (OLD, NEW), as `--target OLD=NEW`, and target is the
        tuple of those targets in its order; skip_disks are the captured disks left out.
        snapshots: what becomes of btrfs snapshots (leave-out or restore, as --btrfs-snapshots);
        None: what the wizard was started with."""
        ...

    def interrupted(self) -> Interrupted | None:
        """An unfinished restore to offer for resume, if one is recorded."""
        ...

    def run(self, review: Review, emit: Callable[[Event], None], cancel: threading.Event) -> None:
        """Run the plan behind review, resuming what its journal says is done.

        Emits events; raises RescueError when a step fails, Aborted when cancel
        was set (the engine looks at it between steps)."""
        ...

    def log_path(self) -> Path | None:
        """The log of everything the last run did, when there is one."""
        ...

    def report_path(self) -> Path | None:
        """The report of the last run (what was done, what verification found), when there is one."""
        ...

    def power(self, action: str) -> None:
        """'reboot' or 'poweroff' the machine."""
        ...

    def shell(self, review: Review | None = None) -> None:
        """An interactive shell on this terminal (the app is suspended meanwhile).

        With the review of a restore, that restore's target filesystems are mounted for the
        shell (it says where) and unmounted when it ends."""
        ...


def unfit(engine: Engine, machine: Machine, images: tuple[Image, ...], disks: tuple[TargetDisk, ...],
          skip: tuple[str, ...] = ()) -> dict[str, str]:
    """Why the plan cannot go onto each safe disk (too small, ...), by device: the engine's own
    plan decides, so the target list and the review never disagree."""
    from rescue.errors import RescueError

    reasons: dict[str, str] = {}
    for disk in disks:
        if disk.unsafe_reasons:
            continue
        try:
            engine.plan(machine, images, disk, skip)
        except RescueError as e:
            reasons[disk.device] = str(e.what)
    return reasons
