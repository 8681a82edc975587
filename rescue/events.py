"""What the engine tells its faces while it works.

The Executor emits these; the CLI prints them and the wizard draws them.
Neither face holds restore logic: they only consume events.
"""

from __future__ import annotations

from dataclasses import dataclass

# `rescue restore --step-markers` prints this, then a finished step's key, on a line of its own:
# the drill reads from the console which steps ended (never from the plan's text).
STEP_DONE = "RESCUE-STEP-DONE"


@dataclass(frozen=True)
class Event:
    pass


@dataclass(frozen=True)
class PlanStarted(Event):
    total_steps: int
    resumed: bool  # a journal from an earlier run was found


@dataclass(frozen=True)
class StepStarted(Event):
    index: int  # 0-based
    total: int
    key: str
    description: str


@dataclass(frozen=True)
class StepSkipped(Event):
    """Already done according to the journal (a resumed restore)."""

    index: int
    key: str
    description: str


@dataclass(frozen=True)
class Progress(Event):
    key: str
    bytes_done: int
    bytes_total: int
    files_done: int
    files_total: int
    eta_seconds: float | None = None


@dataclass(frozen=True)
class Output(Event):
    """A line a command printed, or a note from a step."""

    key: str
    line: str


@dataclass(frozen=True)
class StepDone(Event):
    index: int
    key: str
    seconds: float


@dataclass(frozen=True)
class StepFailed(Event):
    index: int
    key: str
    message: str


@dataclass(frozen=True)
class PlanDone(Event):
    ok: bool
    seconds: float
    summary: str  # the verification summary a person can keep
    incomplete: bool = False  # some files could not be read
