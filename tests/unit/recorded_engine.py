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
  layout.json             (a machine with several disks) the captured layout: its
                          captured disks are asked one by one, and every plan is made
                          by the real build_plan from it, the disks and the chosen images

The run is replayed event by event; like the real engine it stops when
cancel is set (Aborted): a copy at its next progress report, any other step
when it ends. A resumed run reports the steps already done as skipped.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from rescue import errors, events
from rescue.backups.model import Image, Machine
from rescue.backups.source import ImageSource
from rescue.engine.restore import Restore, RestoreOptions
from rescue.errors import Aborted, RescueError
from rescue.events import Event
from rescue.jsonform import from_json, to_json
from rescue.layout.model import Layout
from rescue.plan.disks import CapturedDisk
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
    """Answers from a facts folder.

    `outcomes` picks the recorded run of each call to run(), "ok" or "failed"
    (the last one repeats), so a test can fail once and then retry; "unsafe"
    refuses the target before anything is written. With
    `hold_at` a step key, the replay stops at that step's first progress
    event until `release` is set: a test can press keys in the middle of it.
    """

    def __init__(self, facts: Path, outcomes: tuple[str, ...] = ("ok",), hold_at: str | None = None) -> None:
        self.facts = Path(facts)
        self.outcomes = list(outcomes)
        self.hold_at = hold_at
        self.holding = threading.Event()
        self.release = threading.Event()
        self.hold_seconds = 30.0
        self.hold_ends_on_cancel = False  # True: leaving the progress screen ends the hold too
        self.reviews: dict[Review, str] = {}
        self.done_keys: set[str] = set()  # steps finished by an earlier (cancelled) replay
        self.unfinished: Interrupted | None = None
        self.power_calls: list[str] = []
        self.shell_calls = 0
        self.shell_reviews: list[Review | None] = []  # the restore each shell was opened for
        self.log: Path | None = None  # what log_path() and report_path() answer (tests set them)
        self.report: Path | None = None
        self.runs = 0
        self.skipped: tuple[str, ...] = ()
        self.sizes: list[tuple[tuple[str, int], ...]] = []  # the sizes each plan() was asked for
        self.options: list[RestoreOptions] = []  # what each plan() was asked, as rescue restore's options
        self.targets: list[tuple[str, ...]] = []  # the targets each plan() was asked for, in order
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

    def release_leftovers(self) -> tuple[str, ...]:
        return ()  # recorded facts: no earlier run, nothing mounted

    def layout(self) -> Layout | None:
        path = self.facts / "layout.json"
        return Layout.loads(path.read_text()) if path.is_file() else None

    def captured_disks(self, machine: Machine, images: tuple[Image, ...]) -> tuple[CapturedDisk, ...]:
        from rescue.plan.build import captured_disks

        layout = self.layout()
        return captured_disks(layout) if layout is not None else ()  # recorded plans: one disk

    def plan(self, machine: Machine, images: tuple[Image, ...], target: TargetDisk | tuple[TargetDisk, ...],
             skip: tuple[str, ...] = (), sizes: tuple[tuple[str, int], ...] = (),
             disk_map: tuple[tuple[str, str], ...] = (), skip_disks: tuple[str, ...] = (),
             snapshots: str | None = None) -> Review:
        self.skipped = tuple(skip)  # recorded plans are for all vaults; tests look at what was asked
        self.sizes.append(tuple(sizes))
        options = RestoreOptions(skip_vaults=tuple(skip), sizes=tuple(sizes), disk_map=tuple(disk_map),
                                 skip_disks=tuple(skip_disks), face="rescue wizard",
                                 btrfs_snapshots=snapshots or "leave-out")
        self.options.append(options)
        targets = target if isinstance(target, tuple) else (target,)
        self.targets.append(tuple(t.device for t in targets))
        layout = self.layout()
        if layout is not None:  # the real plan, from the captured layout and the probed disks' facts
            from rescue.plan import build_plan
            from rescue.tui.real import review_of

            chosen = Restore(ImageSource(), options).choose(machine).picked(images).restorable(skip)
            plan = build_plan(layout, chosen, list(targets), options.plan_options())
            review = review_of(plan)
            self.reviews[review] = plan.target.device
            return review
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

    def run(self, review: Review, emit: Callable[[Event], None], cancel: threading.Event) -> None:
        self.runs += 1
        self.written.extend(review.every_target)
        outcome = self.outcomes.pop(0) if len(self.outcomes) > 1 else self.outcomes[0]
        if outcome == "unsafe":  # as the engine's last look at the target before writing refuses
            raise errors.UnsafeTarget(f"{review.target} is mounted now (/mnt)",
                                      why="a mounted disk is in use and is never written",
                                      fix=f"unmount {review.target}, then start the restore again")
        name = "run.json" if outcome == "ok" else "run-failed.json"
        recorded = [event_from_json(e) for e in self._load(name)]
        resume = self.unfinished is not None and self.unfinished.review == review
        if not resume:
            self.done_keys = set()
        done_count = 0
        failed: events.StepFailed | None = None
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
            if self.hold_at is not None and getattr(ev, "key", None) == self.hold_at \
                    and isinstance(ev, events.Progress) and not self.holding.is_set():
                self.holding.set()
                waited = 0.0
                while not self.release.wait(0.05) and waited < self.hold_seconds \
                        and not (self.hold_ends_on_cancel and cancel.is_set()):
                    waited += 0.05
            if isinstance(ev, events.Progress) and cancel.is_set():
                # as the engine's copy does: it stops part way, and a rerun resumes it
                self.unfinished = Interrupted(review.client, review.target, len(self.done_keys),
                                              len(review.steps), review,
                                              why="it was cancelled (or stopped) before it finished")
                raise Aborted("the copy was cancelled", fix="rerun the same command to resume")
            if isinstance(ev, events.StepFailed):
                failed = ev
            if isinstance(ev, events.StepDone):
                self.done_keys.add(ev.key)
                done_count += 1
                if cancel.is_set() and done_count < len(review.steps):
                    self.unfinished = Interrupted(review.client, review.target, len(self.done_keys),
                                                  len(review.steps), review,
                                                  why="it was cancelled (or stopped) before it finished")
                    raise Aborted("the restore was cancelled between steps",
                                  fix="rerun the same command to resume where it stopped")
        if failed is not None:
            self.unfinished = Interrupted(review.client, review.target, len(self.done_keys),
                                          len(review.steps), review,
                                          why=f"a step failed: step {failed.index + 1} ({failed.key}): "
                                              f"{failed.message}")
            raise errors.StepFailed(f"step {failed.index + 1} ({failed.key}): {failed.message}",
                                    fix="fix the cause and rerun the same command: finished steps are skipped")
        self.unfinished = None

    def log_path(self) -> Path | None:
        return self.log

    def report_path(self) -> Path | None:
        return self.report

    def power(self, action: str) -> None:
        self.power_calls.append(action)

    def shell(self, review: Review | None = None) -> None:
        self.shell_calls += 1
        self.shell_reviews.append(review)


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


def record_demo(workdir: Path, out: Path) -> None:
    """Record the wizard's facts from a real demo: needs root, writes only under workdir and out.

    A demo machine on a loop disk is backed up by real dirvish (with the
    capture hook) into a bank on a mounted backup loop disk; one more night
    fails for real. The disks probed are this machine's root disk and the
    loop disks made here (blank 2 GiB target, 128 MiB too-small disk, the
    backup disk, the machine's own disk). Then a real restore onto the blank
    disk, and a real failed one (the image tree of /home moved away).
    """
    from rescue.demo import DemoMachine, make_bank, run_dirvish
    from rescue.devices import loop_disk
    from rescue.run import run
    from rescue.tui.real import RealEngine

    workdir.mkdir(parents=True, exist_ok=True)
    backup = workdir / "backup"
    backup.mkdir(exist_ok=True)
    with DemoMachine(workdir / "machine", label="gpt", home_fs="ext4") as machine, \
            loop_disk(workdir / "backup.img", 1 << 30) as backup_disk, \
            loop_disk(workdir / "new.img", 2 << 30) as new_disk, \
            loop_disk(workdir / "small.img", 128 << 20) as small_disk:
        run(["mkfs.ext4", "-q", "-L", "backup", backup_disk])
        run(["mount", backup_disk, str(backup)])
        try:
            bank = make_bank(machine, backup / "bank", confdir=workdir / "etc-dirvish")
            conf = bank.bank / "home" / "dirvish" / "default.conf"
            text = conf.read_text()
            conf.write_text(text.replace("tree: ", "tree: /nonexistent", 1))
            run_dirvish(bank.confdir, ["dirvish", "--vault", "home", "--image", "2026-1127-0300",
                                       "--image-time", "2026-11-27 03:00:00"], check=False)
            conf.write_text(text)
            engine = RealEngine(banks=[bank.bank], state_dir=workdir / "state", log_dir=workdir / "logs")
            root_disks = {d.device for d in engine.disks() if d.holds_root}
            mine = {machine.disk, backup_disk, new_disk, small_disk} | root_disks
            real_disks = engine.disks
            engine.disks = lambda: tuple(d for d in real_disks() if d.device in mine)  # type: ignore[method-assign]
            out.mkdir(parents=True, exist_ok=True)
            for old in out.glob("**/*.json"):
                old.unlink()
            found = engine.discover()
            client = found.machines[0].client
            disks = engine.disks()
            machine.detach_keep_image()  # the disaster: the old disk is gone before the restore
            engine.disks = lambda: disks  # type: ignore[method-assign]
            target = next(d for d in disks if d.device == new_disk)
            machine_facts = next(m for m in found.machines if m.client == client)
            images = tuple(engine.choose(machine_facts).values())

            def ok(emit: Callable[[Event], None]) -> None:
                review = engine.plan(machine_facts, images, target)
                engine.run(review, emit, threading.Event())

            def failing(emit: Callable[[Event], None]) -> None:
                engine.state_dir = workdir / "state-failing"
                review = engine.plan(machine_facts, images, target)
                home = next(i for i in images if i.vault == "home")
                moved = home.tree.with_name("tree.moved")
                home.tree.rename(moved)
                try:
                    engine.run(review, emit, threading.Event())
                except RescueError:
                    pass
                finally:
                    moved.rename(home.tree)

            record(engine, out, client, {"run.json": ok, "run-failed.json": failing})
        finally:
            run(["umount", str(backup)], check=False)


if __name__ == "__main__":
    import sys

    record_demo(Path(sys.argv[1]), Path(sys.argv[2]))
