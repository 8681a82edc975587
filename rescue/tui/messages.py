"""Messages the wizard's worker threads post to its screens, kept together.

Worker threads never touch widgets; they post one of these and the screen
that owns the work draws it on the event loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from textual.message import Message

from rescue.errors import RescueError
from rescue.events import Event
from rescue.plan.disks import CapturedDisk
from rescue.target import TargetDisk
from rescue.tui.facade import Discovery, Interrupted
from rescue.tui.review import Review


@dataclass
class DiscoveryDone(Message):
    discovery: Discovery
    interrupted: Interrupted | None = None


@dataclass
class DisksFound(Message):
    disks: tuple[TargetDisk, ...]
    unfit: dict[str, str] = field(default_factory=dict)  # device -> why the plan cannot go onto it
    released: tuple[str, ...] = ()  # what killed earlier restores left, released before looking
    captured: tuple[CapturedDisk, ...] = ()  # the machine's captured disks: several are asked one by one


@dataclass
class PlanReady(Message):
    review: Review


@dataclass
class WorkFailed(Message):
    """Discovery, probing or planning raised an error a person can act on."""

    error: RescueError


@dataclass
class EngineEvent(Message):
    """One event from the engine, as it ran."""

    event: Event


@dataclass
class RunEnded(Message):
    """The engine returned (ok) or raised (error); cancelled means the person asked to stop."""

    error: RescueError | None
    cancelled: bool = False
