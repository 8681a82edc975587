"""An Engine that answers from facts recorded on a real machine, for tests.

`record()` runs the real engine (RealEngine: real dirvish bank, real disks
probed with lsblk/blkid, real build_plan, a real restore onto a loop disk)
and writes what it answered as JSON; RecordedEngine reads that JSON back.
So the wizard's unit tests see what rescue really says, without root.

Facts folder:
  discovery.json          Discovery (banks, machines with vaults and images)
  disks.json              [TargetDisk, ...] as probed
  plans/<disk>.json       the Plan built for that disk (Plan.to_json)
  refusals/<disk>.json    {"error": class name, "what", "why", "fix"} where the plan was refused
  run.json                the events of a real restore, in order
  run-failed.json         the events of a real restore in which a step failed

The run is replayed event by event; like the real engine it looks at
`cancelled()` after each finished step and stops there (Aborted), and a
resumed run reports the steps already done as skipped.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from rescue import errors, events
from rescue.backups.model import Image, Machine
from rescue.errors import Aborted, RescueError
from rescue.events import Event
from rescue.jsonform import from_json, to_json
from rescue.target import TargetDisk
from rescue.tui.facade import Discovery, Interrupted
from rescue.tui.review import Review

EVENT_TYPES: dict[str, type[Event]] = {
    cls.__name__: cls for cls in vars(events).values()
    if isinstance(cls, type) and issubclass(cls, Event) and cls is not Event
}


def event_to_json(ev: Event) -> dict[str, Any]:
    return {"event": type(ev).__name__, **to_json(ev)}


def event_from_json(data: dict[str, Any]) -> Event:
    rest = dict(data)
    cls = EVENT_TYPES[rest.pop("event")]
    return from_json(cls, rest)


def disk_file(device: str) -> str:
    return device.rsplit("/", 1)[-1] + ".json"


class RecordedEngine:
    """Answers from a facts folder; `outcome` picks the recorded run: "ok" or "failed"."""

    def __init__(self, facts: Path, outcome: str = "ok") -> None:
        self.facts = Path(facts)
        self.outcome = outcome
        self.reviews: dict[Review, str] = {}
        self.done_keys: set[str] = set()  # steps finished by an earlier (cancelled) replay
        self.unfinished: Interrupted | None = None
        self.power_calls: list[str] = []
        self.shell_calls = 0
        self.runs = 0
        self.written: list[str] = []  # the targets a run wrote to (nothing before a confirmation)

    def _load(self, name: str) -> Any:
        return json.loads((self.facts / name).read_text())

    def discover(self) -> Discovery:
        return from_json(Discovery, self._load("discovery.json"))

    def choose(self, machine: Machine) -> Mapping[str, Image]:
        from rescue.tui.real import RealEngine

        return RealEngine().choose(machine)

    def disks(self) -> tuple[TargetDisk, ...]:
        return tuple(from_json(TargetDisk, d) for d in self._load("disks.json"))

    def plan(self, machine: Machine, images: tuple[Image, ...], target: TargetDisk) -> Review:
        refusal = self.facts / "refusals" / disk_file(target.device)
        if refusal.is_file():
            data = json.loads(refusal.read_text())
            cls = getattr(errors, data["error"], RescueError)
            error = cls.__new__(cls)
            RescueError.__init__(error, data["what"], data.get("why"), data.get("fix"))
            raise error
        from rescue.plan.model import Plan
        from rescue.tui.real import review_of

        plan = Plan.from_json(self._load(f"plans/{disk_file(target.device)}"))
        review = review_of(plan)
        self.reviews[review] = target.device
        return review

    def interrupted(self) -> Interrupted | None:
        return self.unfinished

    def run(self, review: Review, emit: Callable[[Event], None], cancelled: Callable[[], bool],
            resume: bool = False) -> None:
        self.runs += 1
        self.written.append(review.target)
        name = "run.json" if self.outcome == "ok" else "run-failed.json"
        recorded = [event_from_json(e) for e in self._load(name)]
        if not resume:
            self.done_keys = set()
        done_count = 0
        for ev in recorded:
            if isinstance(ev, events.PlanStarted):
                ev = events.PlanStarted(ev.total_steps, resumed=resume and bool(self.done_keys))
            elif isinstance(ev, events.StepStarted) and ev.key in self.done_keys:
                emit(events.StepSkipped(ev.index, ev.key, ev.description))
                continue
            elif isinstance(ev, (events.Progress, events.Output, events.StepDone)) \
                    and ev.key in self.done_keys:
                continue
            emit(ev)
            if isinstance(ev, events.StepFailed):
                self.unfinished = Interrupted(review.client, review.target, len(self.done_keys),
                                              len(review.steps), review)
                raise errors.StepFailed(f"step {ev.key} failed: {ev.message}",
                                        fix="retry: the restore goes on from this step")
            if isinstance(ev, events.StepDone):
                self.done_keys.add(ev.key)
                done_count += 1
                if cancelled() and done_count < len(review.steps):
                    self.unfinished = Interrupted(review.client, review.target, len(self.done_keys),
                                                  len(review.steps), review)
                    raise Aborted(f"restore cancelled after step {ev.index + 1} ({ev.key})",
                                  fix="start rescue wizard again to resume")
        self.unfinished = None

    def log_path(self) -> Path | None:
        return None

    def power(self, action: str) -> None:
        self.power_calls.append(action)

    def shell(self) -> None:
        self.shell_calls += 1


def record(engine: Any, out: Path, client: str, runs: Mapping[str, Callable[[Callable[[Event], None]], None]]) -> None:
    """Write what a RealEngine answers into a facts folder (see the module doc)."""
    out.mkdir(parents=True, exist_ok=True)
    found = engine.discover()
    (out / "discovery.json").write_text(json.dumps(to_json(found), indent=1) + "\n")
    disks = engine.disks()
    (out / "disks.json").write_text(json.dumps([to_json(d) for d in disks], indent=1) + "\n")
    machine = next(m for m in found.machines if m.client == client)
    images = tuple(engine.choose(machine).values())
    (out / "plans").mkdir(exist_ok=True)
    (out / "refusals").mkdir(exist_ok=True)
    for disk in disks:
        if disk.unsafe_reasons:
            continue
        try:
            review = engine.plan(machine, images, disk)
        except RescueError as e:
            (out / "refusals" / disk_file(disk.device)).write_text(json.dumps(
                {"error": type(e).__name__, "what": e.what, "why": e.why, "fix": e.fix}, indent=1) + "\n")
            continue
        (out / "plans" / disk_file(disk.device)).write_text(engine.plans[review].dumps())
    for name, go in runs.items():
        seen: list[Event] = []
        go(seen.append)
        (out / name).write_text(json.dumps([event_to_json(e) for e in seen], indent=1) + "\n")
