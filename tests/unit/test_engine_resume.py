"""When a journal resumes (issue 14, point 4): only the unfinished restore it belongs to.

The decision is the engine's, one place for every face (rescue restore, the
unattended restore, the wizard's resume screen). Here the disk is a dict
that stands in for what `blkid -p` reads (the unit tier has no disks; the
same rules on real loop disks are in tests/integration/test_restore_demo.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from rescue import events as ev
from rescue.engine import Executor
from rescue.engine.executor import resume_decision, step_record
from rescue.engine.journal import Journal, plan_digest
from rescue.errors import StepFailed
from rescue.steps.base import Step

CALLS: list[str] = []
FAIL: set[str] = set()
DISK: dict[str, dict[str, str] | None] = {}


@dataclass(frozen=True)
class Fake(Step):
    kind: ClassVar[str] = "fake"
    name: str

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.name}"

    def describe(self) -> str:
        return f"do {self.name}"

    def script(self) -> list[str]:
        return []

    def run(self, ctx) -> None:
        CALLS.append(self.name)
        if self.name in FAIL:
            raise StepFailed(f"{self.name} broke")


@dataclass(frozen=True)
class Wipe(Fake):
    kind: ClassVar[str] = "wipe"
    disk: str = "/dev/fake0"

    def run(self, ctx) -> None:
        super().run(ctx)
        DISK["/dev/fake0"] = {}


@dataclass(frozen=True)
class Table(Fake):
    kind: ClassVar[str] = "partition"
    disk: str = "/dev/fake0"

    def run(self, ctx) -> None:
        super().run(ctx)
        DISK["/dev/fake0"] = {"PTTYPE": "gpt", "PTUUID": "5a0e2c1f-0000-4000-8000-00000000abcd"}


@dataclass(frozen=True)
class Mkfs(Fake):
    kind: ClassVar[str] = "mkfs"
    device: str = "/dev/fake0p1"

    def run(self, ctx) -> None:
        super().run(ctx)
        DISK[self.device] = {"TYPE": "ext4", "UUID": "0a2b4c6d-1111-2222-3333-444455556666"}


@dataclass(frozen=True)
class Plan:
    steps: tuple[Step, ...]


PLAN = Plan((Wipe("wipe"), Table("table"), Mkfs("mkfs"), Fake("copy"), Fake("verify")))
ALL = ["wipe", "table", "mkfs", "copy", "verify"]


@pytest.fixture(autouse=True)
def _reset():
    CALLS.clear()
    FAIL.clear()
    DISK.clear()


def executor(tmp_path: Path) -> Executor:
    return Executor(target="/dev/fake0", state_dir=tmp_path / "state", mount_dir=tmp_path / "mnt",
                    recheck=lambda: None, read_device=DISK.get)


def fail_at_copy(tmp_path: Path) -> None:
    FAIL.add("copy")
    with pytest.raises(StepFailed):
        executor(tmp_path).run(PLAN)
    FAIL.clear()
    CALLS.clear()


def rerun(tmp_path: Path) -> tuple[list[ev.Event], str]:
    events: list[ev.Event] = []
    executor(tmp_path).run(PLAN, events.append)
    said = " | ".join(e.line for e in events if isinstance(e, ev.Output))
    return events, said


def started(events: list[ev.Event]) -> ev.PlanStarted:
    return next(e for e in events if isinstance(e, ev.PlanStarted))


def test_journal_records_what_the_finished_steps_left_on_the_disk(tmp_path):
    fail_at_copy(tmp_path)
    j = executor(tmp_path).journal()
    assert j.steps["wipe:wipe"]["disk_check"] == {"device": "/dev/fake0", "field": "PTUUID", "value": ""}
    assert j.steps["partition:table"]["disk_check"]["value"] == "5a0e2c1f-0000-4000-8000-00000000abcd"
    assert j.steps["mkfs:mkfs"]["disk_check"] == {"device": "/dev/fake0p1", "field": "UUID",
                                                  "value": "0a2b4c6d-1111-2222-3333-444455556666"}
    # later steps win: the table the partition step wrote, not the wipe's "no table"
    assert j.expected_on_disk([s.key for s in PLAN.steps])[("/dev/fake0", "PTUUID")].startswith("5a0e")
    assert Journal.load(j.path).steps == j.steps  # and it survives as JSON
    assert j.finished is None


def test_unfinished_journal_on_the_same_disk_resumes(tmp_path):
    fail_at_copy(tmp_path)
    events, said = rerun(tmp_path)
    assert CALLS == ["copy", "verify"]
    assert started(events).resumed
    assert said == ""


def test_a_finished_restore_is_never_resumed(tmp_path):
    executor(tmp_path).run(PLAN)
    first = executor(tmp_path).journal()
    assert first.finished is not None and first.runs == 1
    CALLS.clear()
    events, said = rerun(tmp_path)
    assert CALLS == ALL
    assert not started(events).resumed
    assert "an earlier restore onto this disk finished on" in said and "every step runs again" in said
    assert executor(tmp_path).journal().runs == 1  # a new restore, not a third run of the old one


def test_a_journal_of_every_step_done_counts_as_finished_without_the_mark(tmp_path):
    """A journal written before `finished` existed: every step done is a finished restore too."""
    executor(tmp_path).run(PLAN)
    j = executor(tmp_path).journal()
    j.finished = None
    j.save()
    CALLS.clear()
    _, said = rerun(tmp_path)
    assert CALLS == ALL and "finished" in said


@pytest.mark.parametrize("change, why", [
    (lambda: DISK.__setitem__("/dev/fake0", {}), "partition table id differs"),
    (lambda: DISK.__setitem__("/dev/fake0", {"PTUUID": "deadbeef"}), "partition table id differs"),
    (lambda: DISK.__setitem__("/dev/fake0p1", {"TYPE": "ext4", "UUID": "99999999-1111-2222-3333-444455556666"}),
     "filesystem UUID of /dev/fake0p1 differs"),
    (lambda: DISK.__setitem__("/dev/fake0p1", None), "/dev/fake0p1 cannot be read"),
], ids=["blank-disk", "other-table", "other-filesystem", "unreadable"])
def test_unfinished_journal_on_a_changed_disk_starts_over_and_says_why(tmp_path, change, why):
    fail_at_copy(tmp_path)
    change()
    events, said = rerun(tmp_path)
    assert CALLS == ALL
    assert not started(events).resumed
    assert "the journal of an earlier restore does not match this disk" in said and why in said, said
    assert "starting over" in said


def test_table_ids_compare_as_blkid_and_sfdisk_write_them(tmp_path):
    fail_at_copy(tmp_path)
    DISK["/dev/fake0"] = {"PTUUID": "5A0E2C1F-0000-4000-8000-00000000ABCD"}  # upper case: same id
    rerun(tmp_path)
    assert CALLS == ["copy", "verify"]


def test_a_done_step_without_its_record_is_not_trusted(tmp_path):
    """A journal that says mkfs finished but not what it made (damaged, or older) cannot be checked."""
    fail_at_copy(tmp_path)
    j = executor(tmp_path).journal()
    del j.steps["mkfs:mkfs"]["disk_check"]
    j.save()
    decision = resume_decision(Journal.load(j.path), PLAN.steps,
                               plan_digest([step_record(s) for s in PLAN.steps]), DISK.get)
    assert not decision.resume and "finished without a record" in (decision.why or "")


def test_a_damaged_disk_check_makes_the_journal_count_as_none(tmp_path):
    fail_at_copy(tmp_path)
    j = executor(tmp_path).journal()
    j.steps["mkfs:mkfs"]["disk_check"] = {"device": "/dev/fake0p1", "field": "UUID", "value": 7}
    j.save()
    assert Journal.load(j.path).steps == {}


def test_the_wizard_offers_only_an_unfinished_restore_on_the_disk_it_recorded(tmp_path, monkeypatch):
    """The wizard's resume screen follows the engine's rule (RealEngine.interrupted)."""
    import json as _json

    import rescue.engine.executor as executor_module
    from rescue.plan.model import Plan as RealPlan
    from rescue.tui.real import RealEngine

    text = (Path(__file__).parent / "data/tui/plans/loop10.json").read_text()
    plan = RealPlan.from_json(_json.loads(text))
    folder = tmp_path / "state" / "dev_loop10"
    folder.mkdir(parents=True)
    (folder / "plan.json").write_text(text)
    journal = Journal(path=folder / "journal.json", target="/dev/loop10",
                      digest=plan_digest([step_record(s) for s in plan.steps]))
    wipe, table = plan.steps[0], plan.steps[1]
    assert (wipe.kind, table.kind) == ("wipe", "partition")
    for step in (wipe, table):
        journal.steps[step.key] = {"state": "done", "attempts": 1}
        journal.record_check(step.key, "/dev/loop10", "PTUUID", "" if step is wipe else "abcd-1234")
    journal.save()
    disk = {"/dev/loop10": {"PTTYPE": "gpt", "PTUUID": "abcd-1234"}}
    monkeypatch.setattr(executor_module, "_blkid", disk.get)  # stands in for blkid -p of /dev/loop10
    engine = RealEngine(state_dir=tmp_path / "state")
    offered = engine.interrupted()
    assert offered is not None and offered.steps_done == 2
    disk["/dev/loop10"] = {}  # another, blank disk under that name
    assert engine.interrupted() is None
    disk["/dev/loop10"] = {"PTTYPE": "gpt", "PTUUID": "abcd-1234"}
    journal.finished = 1.0  # the restore finished: nothing to resume
    journal.save()
    assert engine.interrupted() is None
