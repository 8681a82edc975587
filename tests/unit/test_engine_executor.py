"""Executor and journal logic with small in-memory steps (no root, no disks).

What is proven here: events in order, finished steps of an unfinished restore skipped on a rerun
(a finished restore is never resumed: tests/unit/test_engine_resume.py),
non-persistent steps (mounts) always run again, an interrupted step is
re-run knowing it was interrupted, a step redone forces every later step to
run again, a different plan starts over, the journal survives as JSON, and a
failure is a StepFailed with the FAILED exit code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from rescue import events as ev
from rescue.engine import Executor, Journal
from rescue.engine.journal import identity_name
from rescue.errors import Aborted, Exit, StepFailed
from rescue.steps.base import Step

CALLS: list[tuple[str, bool]] = []
FAIL: set[str] = set()


@dataclass(frozen=True)
class Fake(Step):
    kind: ClassVar[str] = "fake"
    name: str

    @property
    def key(self) -> str:
        return f"fake:{self.name}"

    def describe(self) -> str:
        return f"do {self.name}"

    def script(self) -> list[str]:
        return [f"echo {self.name}"]

    def run(self, ctx) -> None:
        CALLS.append((self.name, ctx.resuming))
        ctx.note(f"{self.name} noted")
        if self.name in FAIL:
            raise StepFailed(f"{self.name} broke")


@dataclass(frozen=True)
class FakeMount(Fake):
    kind: ClassVar[str] = "fakemount"
    persistent: ClassVar[bool] = False

    @property
    def key(self) -> str:
        return f"mount:{self.name}"


@dataclass(frozen=True)
class Plan:
    steps: tuple[Step, ...]


@pytest.fixture(autouse=True)
def _reset():
    CALLS.clear()
    FAIL.clear()


def executor(tmp_path: Path) -> Executor:
    return Executor(target="/dev/fake0", state_dir=tmp_path / "state", mount_dir=tmp_path / "mnt",
                    log_path=tmp_path / "log.txt", recheck=lambda: None)


PLAN = Plan((Fake("wipe"), Fake("mkfs"), FakeMount("root"), Fake("copy"), Fake("verify")))


def test_runs_every_step_in_order_and_emits_events(tmp_path):
    events: list[ev.Event] = []
    out = executor(tmp_path).run(PLAN, events.append)
    assert out.ok and out.skipped == 0
    assert [c[0] for c in CALLS] == ["wipe", "mkfs", "root", "copy", "verify"]
    kinds = [type(e).__name__ for e in events]
    assert kinds[0] == "PlanStarted" and kinds[-1] == "PlanDone"
    assert kinds.count("StepStarted") == 5 and kinds.count("StepDone") == 5
    assert isinstance(events[0], ev.PlanStarted) and not events[0].resumed
    assert "verify noted" in out.summary and "result:   OK" in out.summary
    log = (tmp_path / "log.txt").read_text()
    assert "== step 4/5: do copy" in log


def test_rerun_skips_finished_steps_but_mounts_again(tmp_path):
    FAIL.add("verify")
    with pytest.raises(StepFailed):
        executor(tmp_path).run(PLAN)
    FAIL.clear()
    CALLS.clear()
    events: list[ev.Event] = []
    out = executor(tmp_path).run(PLAN, events.append)
    assert [c[0] for c in CALLS] == ["root", "verify"]
    assert out.skipped == 3
    assert [e.key for e in events if isinstance(e, ev.StepSkipped)] == ["fake:wipe", "fake:mkfs", "fake:copy"]
    assert isinstance(events[0], ev.PlanStarted) and events[0].resumed


def test_the_report_after_a_retry_holds_only_what_the_last_run_found(tmp_path):
    @dataclass(frozen=True)
    class Verify(Fake):
        def run(self, ctx) -> None:
            CALLS.append((self.name, ctx.resuming))
            if self.name in FAIL:
                ctx.note("MISMATCH /etc/hostname")
                raise StepFailed("verify found differences")
            ctx.note("/: equal")

    plan = Plan((Fake("wipe"), Verify("verify")))
    FAIL.add("verify")
    with pytest.raises(StepFailed):
        executor(tmp_path).run(plan)
    FAIL.clear()
    out = executor(tmp_path).run(plan)
    assert "/: equal" in out.summary
    assert "MISMATCH" not in out.summary  # the first run's finding is not the final truth
    assert "wipe noted" in out.summary  # a step done once keeps its notes


def test_failed_step_resumes_there_knowing_it_was_interrupted(tmp_path):
    FAIL.add("copy")
    with pytest.raises(StepFailed) as e:
        executor(tmp_path).run(PLAN)
    assert e.value.exit_code == Exit.FAILED
    assert "do copy" in e.value.what
    journal = executor(tmp_path).journal()
    assert journal.is_done("fake:mkfs") and journal.was_started("fake:copy")
    assert not journal.is_done("fake:verify")
    FAIL.clear()
    CALLS.clear()
    executor(tmp_path).run(PLAN)
    assert CALLS == [("root", False), ("copy", True), ("verify", False)]


def test_a_redone_step_forces_the_later_steps_to_run_again(tmp_path):
    executor(tmp_path).run(PLAN)
    j = executor(tmp_path).journal()
    j.steps["fake:mkfs"]["state"] = "started"  # as if power was lost while mkfs ran again
    j.finished = None
    j.save()
    CALLS.clear()
    executor(tmp_path).run(PLAN)
    assert [c[0] for c in CALLS] == ["mkfs", "root", "copy", "verify"]


def test_a_different_plan_starts_over(tmp_path):
    events: list[ev.Event] = []
    executor(tmp_path).run(PLAN)
    CALLS.clear()
    other = Plan((Fake("wipe"), Fake("mkfs2"), Fake("verify")))
    executor(tmp_path).run(other, events.append)
    assert [c[0] for c in CALLS] == ["wipe", "mkfs2", "verify"]
    assert any(isinstance(e, ev.Output) and "another plan" in e.line for e in events)


def test_cancel_between_steps_aborts(tmp_path):
    ex = executor(tmp_path)

    @dataclass(frozen=True)
    class Cancels(Fake):
        def run(self, ctx) -> None:
            super().run(ctx)
            ex.cancel.set()

    with pytest.raises(Aborted):
        ex.run(Plan((Fake("wipe"), Cancels("mkfs"), Fake("copy"))))
    assert [c[0] for c in CALLS] == ["wipe", "mkfs"]


def test_recheck_runs_once_before_the_first_step_that_runs(tmp_path):
    seen: list[int] = []
    ex = Executor(target="/dev/fake0", state_dir=tmp_path / "s", mount_dir=tmp_path / "m",
                  recheck=lambda: seen.append(len(CALLS)))
    FAIL.add("verify")
    with pytest.raises(StepFailed):
        ex.run(PLAN)
    assert seen == [0]
    seen.clear()
    CALLS.clear()
    FAIL.clear()
    ex.run(PLAN)  # a rerun: the check comes before the first step that runs (the mount)
    assert seen == [0] and CALLS[0][0] == "root"


def test_journal_is_json_in_a_folder_named_by_the_disk(tmp_path):
    executor(tmp_path).run(PLAN)
    path = tmp_path / "state" / identity_name("/dev/fake0") / "journal.json"
    data = json.loads(path.read_text())
    assert data["version"] == 1 and data["target"] == "/dev/fake0"
    assert data["steps"]["fake:copy"]["state"] == "done"
    assert data["notes"]["fake:copy"] == ["copy noted"]
    assert identity_name("/dev/disk/by-id/ata-QEMU HARDDISK_1") == "dev_disk_by-id_ata-QEMU_HARDDISK_1"


def test_unreadable_journal_starts_empty(tmp_path):
    p = tmp_path / "j.json"
    p.write_text("{not json")
    assert Journal.load(p).steps == {}
    p.write_text(json.dumps({"version": 99, "steps": {"x": {"state": "done"}}}))
    assert Journal.load(p).steps == {}


def test_duplicate_step_keys_are_refused(tmp_path):
    from rescue.errors import RescueError

    with pytest.raises(RescueError):
        executor(tmp_path).run(Plan((Fake("a"), Fake("a"))))


@pytest.mark.parametrize("uptime", [3.0, 7 * 86400.0], ids=["host-up-for-seconds", "host-up-for-a-week"])
def test_progress_lines_suit_a_serial_console(uptime):
    """The first progress line shows at once, also on a rescue system booted seconds ago.

    time.monotonic() counts from boot; a throttle that started from 0 swallowed
    every line of the first interval there.
    """
    import io

    from rescue.commands.restore import ProgressPrinter

    out = io.StringIO()
    p = ProgressPrinter(out, every=3600, clock=lambda: uptime)
    p(ev.PlanStarted(15, True))
    p(ev.StepSkipped(1, "partition:/dev/sdb", "write gpt partition table"))
    p(ev.StepStarted(9, 15, "copy:home", "copy vault home"))
    p(ev.Progress("copy:home", 512 << 20, 2 << 30, 1000, 0, 95.0))
    p(ev.Progress("copy:home", 600 << 20, 2 << 30, 1200, 0, 90.0))  # within the interval: not printed
    p(ev.Progress("copy:home", 2 << 30, 2 << 30, 5000, 5000, 0.0))  # the final one always is
    p(ev.StepDone(9, "copy:home", 12.5))
    lines = out.getvalue().splitlines()
    assert lines == [
        "restore: 15 steps (resuming an earlier run)",
        "[2/15] done already: write gpt partition table",
        "[10/15] copy vault home",
        "      512 MiB of 2 GiB (25%), 1000 files, about 1:35 left",
        "      2 GiB of 2 GiB (100%), 5000 of 5000 files",
        "      done in 12.5s",
    ]
    assert all(line.isascii() and "\x1b" not in line for line in lines)


def test_confirmation_needs_the_device_name():
    from rescue.commands.restore import confirm
    from rescue.target import TargetDisk

    disk = TargetDisk(device="/dev/sdb", size=1 << 40, by_id=("/dev/disk/by-id/ata-NEW",))
    for answer in ("/dev/sdb", "sdb", "/dev/disk/by-id/ata-NEW", "  /dev/sdb\n"):
        confirm(disk, lambda prompt, a=answer: a)
    for answer in ("yes", "/dev/sda", ""):
        with pytest.raises(Aborted) as e:
            confirm(disk, lambda prompt, a=answer: a)
        assert e.value.exit_code == Exit.ABORTED and "nothing was written" in e.value.what

    def eof(prompt):
        raise EOFError

    with pytest.raises(Aborted):
        confirm(disk, eof)


def test_confirmation_of_two_targets_needs_both_names():
    from rescue.commands.restore import confirm
    from rescue.target import TargetDisk

    disks = (TargetDisk(device="/dev/sdb", size=1 << 40), TargetDisk(device="/dev/sdc", size=1 << 40))
    prompts = []
    confirm(disks, lambda prompt: prompts.append(prompt) or "/dev/sdc sdb")
    assert "Everything on /dev/sdb and /dev/sdc will be destroyed" in prompts[0]
    for answer in ("/dev/sdb", "/dev/sdb /dev/sdb", "/dev/sdb /dev/sdc /dev/sdd"):
        with pytest.raises(Aborted) as e:
            confirm(disks, lambda prompt, a=answer: a)
        assert "/dev/sdb /dev/sdc" in e.value.fix


def test_progress_without_a_file_count_shows_none():
    """A copy onto btrfs has no true file count (no inode figures): neither face invents '0 files'."""
    import io

    from rescue.commands.restore import ProgressPrinter
    from rescue.tui.screens.run import progress_line

    btrfs = ev.Progress("copy:home", 1 << 20, 4 << 20, 0, 0, 30.0)
    out = io.StringIO()
    ProgressPrinter(out, every=0)(btrfs)
    assert "files" not in out.getvalue() and "1 MiB of 4 MiB" in out.getvalue()
    assert "files" not in progress_line(btrfs)
    ext4 = ev.Progress("copy:home", 1 << 20, 4 << 20, 10, 40, 30.0)
    assert "10/40 files" in progress_line(ext4)
