"""The wizard driven with Pilot through every screen, against recorded facts.

The facts in tests/unit/data/tui were recorded by `python tests/unit/recorded_engine.py`
on a real machine: a real dirvish bank (one failed night), real disks probed
by rescue.probe, plans by the real build_plan, and the events of a real
restore (and of a real failed one) onto a loop disk. RecordedEngine replays
them, so no root is needed here; tests/integration/test_wizard_restore.py
runs the same screens against the real engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from dataclasses import replace
from pathlib import Path

import pytest
from textual.widgets import DataTable, Input, Static

from rescue.cli import main
from rescue.errors import Exit
from rescue.tui import make_app

from recorded_engine import RecordedEngine  # noqa: E402  (tests/unit is on sys.path)
from rescue.tui.real import RealEngine, banks_under
from rescue.tui.screens.backups import BackupsScreen, ImagesScreen
from rescue.tui.screens.base import MarkedTable
from rescue.tui.screens.common import AskScreen, ConfirmScreen, SizesScreen, HelpScreen, TextScreen, confirm_matches
from rescue.tui.screens.run import FailedScreen, ProgressScreen, ResultScreen, ResumeScreen
from rescue.tui.screens.target import ReviewScreen, TargetScreen, review_text

FACTS = Path(__file__).parent / "data" / "tui"


def aio(fn):
    """Run an async test on its own event loop (Textual's run_test is async)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return asyncio.run(fn(*args, **kwargs))

    return wrapper


SIZE = (80, 24)
STATE = 4  # the State column of the target list


def disks() -> list[dict]:
    return json.loads((FACTS / "disks.json").read_text())


def safe_disk(plan: bool = True) -> str:
    """The recorded blank disk the restore used (plan) or the one too small (refusal)."""
    folder = "plans" if plan else "refusals"
    name = next((FACTS / folder).glob("*.json")).stem
    return f"/dev/{name}"


def unsafe_disk() -> str:
    return next(d["device"] for d in disks() if d["holds_root"])


async def settle(pilot) -> None:
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


async def press(pilot, *keys: str) -> None:
    """Press keys, then wait until the screen they lead to has done its work."""
    await pilot.press(*keys)
    await settle(pilot)


async def to_target(pilot) -> None:
    await settle(pilot)
    await press(pilot, "enter")  # the one machine
    await press(pilot, "n")  # default images


async def pick_disk(pilot, device: str) -> None:
    screen = pilot.app.screen
    assert isinstance(screen, TargetScreen)
    row = [d.device for d in screen.disks].index(device)
    screen.query_one("#disks", DataTable).move_cursor(row=row)
    await press(pilot, "enter")


async def to_review(pilot, device: str | None = None) -> None:
    await to_target(pilot)
    await pick_disk(pilot, device or safe_disk())


async def type_text(pilot, text: str) -> None:
    await pilot.press(*list(text))


async def confirm(pilot, text: str) -> None:
    await press(pilot, "n")
    assert isinstance(pilot.app.screen, ConfirmScreen)
    await type_text(pilot, text)
    await pilot.press("enter")
    await pilot.pause()  # not settle: a held replay keeps the run's worker busy


async def run_to_end(pilot) -> None:
    for _ in range(100):
        await settle(pilot)
        if not isinstance(pilot.app.screen, ProgressScreen):
            return
    raise AssertionError("the restore did not end")


@contextlib.asynccontextmanager
async def wizard(engine=None):
    """The wizard over `engine` (the recorded facts by default) at 80x24: yields (app, pilot)."""
    app = make_app(engine or RecordedEngine(FACTS))
    async with app.run_test(size=SIZE) as pilot:
        yield app, pilot


async def start_restore(pilot, typed: str | None = None) -> None:
    """Backups, images, the planned disk, review, and the confirmation typed (the disk's path)."""
    await to_review(pilot)
    await confirm(pilot, safe_disk() if typed is None else typed)


async def restore_to_end(pilot, typed: str | None = None) -> None:
    await start_restore(pilot, typed)
    await run_to_end(pilot)


async def cancel_held_copy(pilot, engine) -> str:
    """c and y while the replay holds in a copy, then let it go; returns the status line seen meanwhile."""
    assert engine.holding.wait(10)
    await pilot.press("c")
    await pilot.pause()
    assert isinstance(pilot.app.screen, AskScreen)
    await pilot.press("y")
    await pilot.pause()
    status = body(pilot.app.screen, "#status")
    engine.release.set()
    await run_to_end(pilot)
    return status


def body(screen, selector: str) -> str:
    return str(screen.query_one(selector, Static).render())


@aio
async def test_backups_screen_shows_machine_newest_good_image_and_layout():
    async with wizard() as (app, pilot):
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, BackupsScreen)
        table = screen.query_one("#machines", DataTable)
        assert table.row_count == 1
        row = [str(c) for c in table.get_row_at(0)]
        assert row[0] == "localhost"
        assert row[1] == "3"  # root, home, tmp vaults
        assert row[2] == "2026-11-26 03:00"  # the failed 2026-11-27 night is not the newest good one
        assert row[3] == "yes"
        assert "1 failed/incomplete" in row[4]
        assert "bank" in body(screen, "#banks")


@aio
async def test_failed_image_is_marked_never_default_and_cannot_be_chosen():
    engine = RecordedEngine(FACTS)
    async with wizard(engine) as (app, pilot):
        await settle(pilot)
        await press(pilot, "enter")
        screen = app.screen
        assert isinstance(screen, ImagesScreen)
        failed = [i for i in screen.images if not i.usable]
        assert [i.name for i in failed] == ["2026-1127-0300"]
        assert app.images["home"].name == "2026-1126-0300"
        table = screen.query_one("#images", DataTable)
        row = screen.images.index(failed[0])
        assert [str(c) for c in table.get_row_at(row)][0] == ""  # not marked as used
        assert "FAILED" in [str(c) for c in table.get_row_at(row)]
        table.move_cursor(row=row)
        await press(pilot, "enter")
        assert app.images["home"].name == "2026-1126-0300"
        assert "Not restorable" in body(screen, "#detail")
        # an older good image may be chosen instead
        older = next(i for i in screen.images if i.vault == "home" and i.name == "2026-1125-0300")
        table.move_cursor(row=screen.images.index(older))
        await press(pilot, "enter")
        assert app.images["home"] == older
        assert str(table.get_row_at(screen.images.index(older))[0]) == "*"


@aio
async def test_unsafe_target_is_listed_with_its_reason_but_cannot_be_selected():
    engine = RecordedEngine(FACTS)
    async with wizard(engine) as (app, pilot):
        await to_target(pilot)
        screen = app.screen
        assert isinstance(screen, TargetScreen)
        states = {d.device: str(screen.query_one("#disks", DataTable).get_row_at(i)[STATE])
                  for i, d in enumerate(screen.disks)}
        assert states[unsafe_disk()] == "UNSAFE"
        assert states[safe_disk()] == "ok"
        await pick_disk(pilot, unsafe_disk())
        assert app.screen is screen  # still choosing
        assert app.target is None
        assert "NOT SELECTABLE" in body(screen, "#detail")
        assert "holds the running system" in body(screen, "#detail")
        assert engine.written == []


@aio
async def test_a_disk_the_plan_cannot_fit_is_marked_with_the_reason():
    async with wizard() as (app, pilot):
        await to_target(pilot)
        screen = app.screen
        assert isinstance(screen, TargetScreen)
        table = screen.query_one("#disks", DataTable)
        devices = [d.device for d in screen.disks]
        small = safe_disk(plan=False)  # the recorded 128 MiB disk
        assert str(table.get_row_at(devices.index(small))[STATE]) == "NO FIT"
        assert str(table.get_row_at(devices.index(safe_disk()))[STATE]) == "ok"
        assert table.cursor_row == devices.index(safe_disk())  # the cursor starts on a disk that fits
        assert "1 can hold this restore" in body(screen, "#status")
        table.move_cursor(row=devices.index(small))
        await settle(pilot)
        detail = body(screen, "#detail")
        assert "THE RESTORE DOES NOT FIT" in detail and "65 MiB short" in detail


@aio
async def test_the_highlighted_row_is_marked_not_only_coloured():
    async with wizard() as (app, pilot):
        await settle(pilot)
        machines = app.screen.query_one("#machines", MarkedTable)
        assert machines.marked_row() == machines.cursor_row == 0
        await press(pilot, "enter")
        images = app.screen.query_one("#images", MarkedTable)
        await press(pilot, "down")
        assert images.marked_row() == images.cursor_row == 1
        await press(pilot, "n")
        disks_table = app.screen.query_one("#disks", MarkedTable)
        start = disks_table.cursor_row
        assert disks_table.marked_row() == start
        await press(pilot, "up")
        assert disks_table.marked_row() == start - 1
        labels = [str(r.label) for r in disks_table.ordered_rows]
        assert labels.count(">") == 1 and labels.count(" ") == len(labels) - 1
        await press(pilot, "down")
        await press(pilot, "enter")
        await press(pilot, "n")
        title = str(app.screen_stack[-2].query_one("#title", Static).render())
        heading = str(app.screen.query_one(".heading", Static).render())
        assert "4/7 Review" in title and "5/7 Confirm" in heading  # numbered as the titles are


@aio
async def test_too_small_target_is_refused_in_the_review_with_what_to_do():
    async with wizard() as (app, pilot):
        await to_review(pilot, safe_disk(plan=False))
        screen = app.screen
        assert isinstance(screen, ReviewScreen)
        text = body(screen, "#body")
        assert "cannot work; nothing has been written" in text
        assert "short" in text and "What to do:" in text
        await press(pilot, "n")
        assert app.screen is screen  # no confirmation for a refused plan


@aio
async def test_review_says_first_what_is_destroyed_then_the_short_plan_with_more_below():
    async with wizard() as (app, pilot):
        await to_review(pilot)
        screen = app.screen
        assert isinstance(screen, ReviewScreen) and screen.review is not None
        lines = body(screen, "#body").splitlines()
        assert lines[2] == f"On {safe_disk()} now: nothing, the disk is blank."  # the recorded blank disk
        assert lines.index("In short:") < lines.index("Details")
        assert any("grows from" in line for line in lines[:lines.index("Details")])
        await pilot.pause()
        assert body(screen, "#more").startswith("v More below")
        await press(pilot, "end")
        assert body(screen, "#more") == ""  # at the bottom, no more below

    review = screen.review
    used = replace(review, destroyed=(f"the dos partition table of {review.target}",
                                      f"{review.target}1: 30 GiB ext4 label data"))
    lines = review_text(used).splitlines()
    assert lines[2] == f"On {review.target} now, and DESTROYED by the restore:"
    assert lines[4] == f"  - {review.target}1: 30 GiB ext4 label data"
    assert lines.index("In short:") > 4


@aio
async def test_review_shows_old_and_new_tables_uuids_bytes_and_script():
    async with wizard() as (app, pilot):
        await to_review(pilot)
        screen = app.screen
        assert isinstance(screen, ReviewScreen)
        review = screen.review
        assert review is not None
        text = body(screen, "#body")
        assert "old: start" in text and "new: start" in text
        assert "grows" in text  # the 1 GiB machine onto the 2 GiB disk: the last partition grows
        for fs in review.filesystems:
            assert fs.uuid in text
        assert "Copy " in text
        await press(pilot, "s")
        assert isinstance(app.screen, TextScreen)
        assert app.screen.text == review.script
        assert "sfdisk" in review.script
        await press(pilot, "escape")
        assert app.screen is screen


@pytest.mark.parametrize("typed", ["wrong", "/dev/sda", "loop", ""])
@aio
async def test_a_wrong_typed_name_goes_back_and_writes_nothing(typed):
    engine = RecordedEngine(FACTS)
    async with wizard(engine) as (app, pilot):
        await to_review(pilot)
        review_screen = app.screen
        await confirm(pilot, typed)
        assert app.screen is review_screen
        assert engine.runs == 0 and engine.written == []


@aio
async def test_escape_on_confirm_writes_nothing():
    engine = RecordedEngine(FACTS)
    async with wizard(engine) as (app, pilot):
        await to_review(pilot)
        await press(pilot, "n")
        await type_text(pilot, safe_disk())
        await press(pilot, "escape")
        assert isinstance(app.screen, ReviewScreen)
        assert engine.runs == 0


def test_confirmation_accepts_the_path_or_kernel_name_only():
    assert confirm_matches("/dev/sdb", "/dev/sdb")
    assert confirm_matches(" sdb ", "/dev/sdb")
    assert not confirm_matches("sdb1", "/dev/sdb")
    assert not confirm_matches("/dev/sdc", "/dev/sdb")
    assert not confirm_matches("", "/dev/sdb")
    assert not confirm_matches("dev/sdb", "/dev/sdb")


@aio
async def test_through_every_screen_to_the_result_and_reboot():
    engine = RecordedEngine(FACTS)
    async with wizard(engine) as (app, pilot):
        await restore_to_end(pilot, safe_disk().removeprefix("/dev/"))
        screen = app.screen
        assert isinstance(screen, ResultScreen)
        assert engine.written == [safe_disk()]
        assert screen.done.ok
        text = str(screen.query_one("#summary Static", Static).render())
        assert "result:   OK" in text
        assert "equal to vault home" in text
        await press(pilot, "l")
        assert isinstance(app.screen, TextScreen)
        assert "copy vault root" in app.screen.text  # the run's own log lines
        await pilot.press("escape")
        await press(pilot, "r")
        assert engine.power_calls == []  # asks first
        await pilot.press("n")
        await pilot.press("p")
        await press(pilot, "y")
        assert engine.power_calls == ["poweroff"]
        await pilot.press("r")
        await press(pilot, "y")
        assert engine.power_calls == ["poweroff", "reboot"]
        await press(pilot, "s")
        assert engine.shell_calls == 1
        await press(pilot, "q")
    assert app.return_code == Exit.OK


@aio
async def test_progress_screen_shows_each_step_state_and_copy_bytes_files_eta():
    engine = RecordedEngine(FACTS, hold_at="copy:home")
    async with wizard(engine) as (app, pilot):
        await start_restore(pilot)
        assert engine.holding.wait(10)
        await pilot.pause(0.2)
        screen = app.screen
        assert isinstance(screen, ProgressScreen)
        states = [str(screen.query_one("#steps", DataTable).get_cell(str(i), "state"))
                  for i in range(len(screen.review.steps))]
        copy_home = next(i for i, s in enumerate(screen.review.steps) if "vault home" in s)
        assert states[:copy_home] == ["done"] * copy_home
        assert states[copy_home] == "run"
        assert set(states[copy_home + 1:]) == {"wait"}
        copy = body(screen, "#copy")
        assert "copy:home [" in copy and "files" in copy and "ETA" in copy
        review = screen.review
        copies = [w for w, s in zip(review.weights, review.steps) if s.startswith("copy vault")]
        assert sum(copies) == review.bytes_to_copy  # the whole bar counts every vault's bytes
        whole = body(screen, "#total")
        before = sum(review.weights[:copy_home]) / sum(review.weights)
        percent = int(whole.split("]")[1].split("%")[0])
        assert int(before * 100) <= percent < 100  # the done steps, plus part of the running copy
        assert f"step {copy_home + 1} of {len(review.steps)}" in whole and "ETA" in whole
        engine.release.set()
        await run_to_end(pilot)
        assert isinstance(app.screen, ResultScreen)


@aio
async def test_a_failed_step_offers_retry_log_shell_abort_and_retry_finishes():
    engine = RecordedEngine(FACTS, outcomes=("failed", "ok"))
    async with wizard(engine) as (app, pilot):
        await restore_to_end(pilot)
        screen = app.screen
        assert isinstance(screen, FailedScreen)
        assert screen.step is not None and screen.step.key == "copy:home"
        keys = {b.key for b in screen.BINDINGS}
        assert {"r", "l", "s", "a"} <= keys
        await press(pilot, "s")
        assert engine.shell_calls == 1
        assert engine.shell_reviews == [screen.review]  # the shell mounts this restore's target
        await pilot.press("r")
        await run_to_end(pilot)
        assert isinstance(app.screen, ResultScreen)
        assert engine.runs == 2
        log = "\n".join(app.log_lines)
        assert "skip (done earlier)" in log  # the retry skipped what the first run had done


@aio
async def test_cancel_asks_first_and_no_keeps_the_restore_running():
    engine = RecordedEngine(FACTS, hold_at="copy:root")
    async with wizard(engine) as (app, pilot):
        await start_restore(pilot)
        assert engine.holding.wait(10)
        progress = app.screen
        assert isinstance(progress, ProgressScreen)
        await pilot.press("c")
        await pilot.pause()
        assert isinstance(app.screen, AskScreen)
        assert "copy vault root" in body(app.screen, "#dialog Static:last-of-type")  # where it is now
        assert not progress.stop.is_set()  # a stray c stops nothing
        await pilot.press("n")
        await pilot.pause()
        assert app.screen is progress and not progress.stop.is_set()
        await pilot.press("ctrl+c")  # the quit key asks too
        await pilot.pause()
        assert isinstance(app.screen, AskScreen) and not progress.stop.is_set()
        await pilot.press("escape")
        engine.release.set()
        await run_to_end(pilot)
        assert isinstance(app.screen, ResultScreen)  # the restore went on to its end
    assert app.outcome == Exit.OK


@aio
async def test_a_cancelled_restore_says_at_which_step_it_stopped():
    engine = RecordedEngine(FACTS, hold_at="copy:root")
    async with wizard(engine) as (app, pilot):
        await start_restore(pilot)
        await cancel_held_copy(pilot, engine)
        screen = app.screen
        assert isinstance(screen, FailedScreen) and screen.cancelled
        copy_root = next(i for i, s in enumerate(screen.review.steps) if "vault root" in s)
        text = body(screen, "#error Static")
        assert f"You cancelled the restore in step {copy_root + 1} of {len(screen.review.steps)} (copy vault root" \
            in text.replace("\n", " ")
        await press(pilot, "a")
    assert app.return_code == Exit.ABORTED
    assert "partly restored" in app.farewell() and "in step" in app.farewell()


@aio
async def test_a_retry_that_fails_the_same_way_is_seen_to_have_run(tmp_path):
    engine = RecordedEngine(FACTS, outcomes=("failed", "failed", "ok"))
    engine.log, engine.report = tmp_path / "restore-1.log", tmp_path / "restore-1.txt"
    async with wizard(engine) as (app, pilot):
        await restore_to_end(pilot)
        first = app.screen
        assert isinstance(first, FailedScreen)
        text = body(first, "#error Static")
        assert "Tries in this wizard" not in text
        assert "rerun the same command" not in text  # the wizard's own words
        assert "r  try again" in text and "s  open a shell" in text
        assert f"Log:    {engine.log}" in text and f"Report: {engine.report}" in text
        await pilot.press("r")
        await run_to_end(pilot)
        second = app.screen
        assert isinstance(second, FailedScreen) and second is not first
        text = body(second, "#error Static")
        assert "Tries in this wizard (2):" in text
        assert "ended the same way as the try before it" in text
        assert len(app.tries) == 2 and app.tries[0].result == app.tries[1].result
        await pilot.press("r")
        await run_to_end(pilot)
        assert isinstance(app.screen, ResultScreen)
    assert engine.runs == 3


@aio
async def test_leaving_says_what_state_the_disk_is_in_and_what_to_do():
    async with wizard() as (app, pilot):
        await to_target(pilot)
        await press(pilot, "q")
    assert app.farewell() == "rescue wizard: nothing was written to any disk."

    engine = RecordedEngine(FACTS, outcomes=("failed",))
    async with wizard(engine) as (app, pilot):
        await restore_to_end(pilot)
        await press(pilot, "a")
    line = app.farewell()
    assert line.startswith(f"rescue wizard: {safe_disk()} is only partly restored (failed in step ")
    assert "start rescue wizard again to resume" in line and "\n" not in line

    engine = RecordedEngine(FACTS)
    async with wizard(engine) as (app, pilot):
        await restore_to_end(pilot)
        await press(pilot, "q")
    assert f"is restored onto {safe_disk()}; take out the backup disk and reboot" in app.farewell()


def test_the_wizard_command_prints_the_leaving_line(monkeypatch, capsys):
    from rescue.commands import wizard as command

    class Tty:
        def isatty(self) -> bool:
            return True

    class Done:
        return_code = int(Exit.ABORTED)

        def run(self) -> None:
            pass

        def farewell(self) -> str:
            return "rescue wizard: nothing was written to any disk."

    monkeypatch.setattr(command.sys, "stdin", Tty())
    monkeypatch.setattr(command.sys, "stdout", Tty())
    monkeypatch.setattr("rescue.tui.make_app", lambda engine: Done())
    import argparse

    args = argparse.Namespace(bank=[], config=None, backup_mount=None, state_dir=None)
    monkeypatch.setattr(command, "print", lambda line: printed.append(line), raising=False)
    printed: list[str] = []
    assert command.run(args) == Exit.ABORTED
    assert printed == ["rescue wizard: nothing was written to any disk."]


@aio
async def test_abort_after_a_failure_exits_with_the_failed_code():
    engine = RecordedEngine(FACTS, outcomes=("failed",))
    async with wizard(engine) as (app, pilot):
        await restore_to_end(pilot)
        await press(pilot, "a")
    assert app.return_code == Exit.FAILED


@aio
async def test_a_target_refused_at_the_start_exits_with_the_unsafe_code_not_failed():
    engine = RecordedEngine(FACTS, outcomes=("unsafe",))
    async with wizard(engine) as (app, pilot):
        await restore_to_end(pilot)
        screen = app.screen
        assert isinstance(screen, FailedScreen) and screen.step is None
        progress = app.screen_stack[-2]
        assert "Refused" in str(progress.query_one("#status").render())
        await press(pilot, "a")
    assert app.return_code == Exit.UNSAFE


@aio
async def test_cancel_during_the_copy_stops_it_and_the_next_start_offers_resume():
    engine = RecordedEngine(FACTS, hold_at="copy:root")
    async with wizard(engine) as (app, pilot):
        await start_restore(pilot)
        assert "Cancelling" in await cancel_held_copy(pilot, engine)  # in the middle of the copy
        screen = app.screen
        assert isinstance(screen, FailedScreen) and screen.cancelled
        await press(pilot, "a")
    assert app.return_code == Exit.ABORTED
    unfinished = engine.interrupted()
    assert unfinished is not None
    copy_root = next(i for i, s in enumerate(unfinished.review.steps) if "vault root" in s)
    assert unfinished.steps_done == copy_root  # the copy stopped part way; nothing after it ran

    engine.hold_at = None
    async with wizard(engine) as (again, pilot):
        await settle(pilot)
        screen = again.screen
        assert isinstance(screen, ResumeScreen)
        text = body(screen, "#body")
        assert f"Done:    {copy_root} of {unfinished.steps_total} steps; next: step {copy_root + 1}" in text
        assert "Stopped: it was cancelled" in text
        await press(pilot, "r")
        assert isinstance(again.screen, ConfirmScreen) and again.screen.resume
        await type_text(pilot, safe_disk())
        await pilot.press("enter")
        await run_to_end(pilot)
        assert isinstance(again.screen, ResultScreen)
        log = "\n".join(again.log_lines)
        assert log.count("skip (done earlier)") == copy_root
        assert f"restore started: {unfinished.steps_total} steps (resuming)" in log
    assert again.outcome == Exit.OK
    assert engine.interrupted() is None


@aio
async def test_resume_offer_can_be_declined_for_a_new_restore():
    engine = RecordedEngine(FACTS, hold_at="copy:root")
    async with wizard(engine) as (app, pilot):
        await start_restore(pilot)
        await cancel_held_copy(pilot, engine)
    async with wizard(engine) as (again, pilot):
        await settle(pilot)
        assert isinstance(again.screen, ResumeScreen)
        await press(pilot, "n")
        assert isinstance(again.screen, BackupsScreen)


@aio
async def test_help_on_every_screen_with_f1_and_question_mark():
    engine = RecordedEngine(FACTS, hold_at="copy:root")
    seen = []

    async def check(key: str = "f1") -> None:
        before = app.screen
        await pilot.press(key)
        await pilot.pause()  # not settle: the held restore keeps its worker busy
        assert isinstance(app.screen, HelpScreen), f"no help on {before}"
        seen.append(type(before).__name__)
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is before

    async with wizard(engine) as (app, pilot):
        await settle(pilot)
        await check()
        await check("question_mark")
        await press(pilot, "enter")
        await check()
        await press(pilot, "n")
        await check("question_mark")
        await pick_disk(pilot, safe_disk())
        await check()
        await press(pilot, "s")
        await check()  # the script viewer
        await pilot.press("escape")
        await press(pilot, "n")
        await check()  # confirm: F1, since ? is a character one may type
        await type_text(pilot, safe_disk())
        await pilot.press("enter")
        assert engine.holding.wait(10)
        await pilot.pause()
        await check()
        engine.release.set()
        await run_to_end(pilot)
        await check()
    assert seen == ["BackupsScreen", "BackupsScreen", "ImagesScreen", "TargetScreen", "ReviewScreen",
                    "TextScreen", "ConfirmScreen", "ProgressScreen", "ResultScreen"]


@aio
async def test_question_mark_is_typed_into_the_confirmation_not_taken_as_help():
    async with wizard() as (app, pilot):
        await to_review(pilot)
        await press(pilot, "n")
        await press(pilot, "question_mark")
        assert isinstance(app.screen, ConfirmScreen)
        assert app.screen.query_one(Input).value == "?"


@aio
async def test_quit_before_any_restore_exits_aborted_and_writes_nothing():
    engine = RecordedEngine(FACTS)
    async with wizard(engine) as (app, pilot):
        await to_target(pilot)
        await press(pilot, "q")
    assert app.return_code == Exit.ABORTED
    assert engine.written == []


@aio
async def test_escape_walks_back_one_step():
    async with wizard() as (app, pilot):
        await to_review(pilot)
        for expected in (TargetScreen, ImagesScreen, BackupsScreen, BackupsScreen):
            await press(pilot, "escape")
            assert isinstance(app.screen, expected)


def real_image(bank: Path, vault: str = "home", image: str = "2026-1126-0300") -> None:
    """A vault with one image whose summary is one real dirvish wrote (tests/unit/fixtures)."""
    (bank / vault / "dirvish").mkdir(parents=True)
    (bank / vault / "dirvish" / "default.conf").write_text("client: vm\ntree: /backup/demo/src\n")
    (bank / vault / image / "tree").mkdir(parents=True)
    summary = (Path(__file__).parent / "fixtures" / "dirvish" / "summary.success").read_text()
    (bank / vault / image / "summary").write_text(summary)


def test_the_engines_command_line_advice_is_told_in_the_wizards_words():
    from rescue.tui.screens.run import wizard_words

    said = "what to do: fix the cause and rerun the same command: finished steps are skipped"
    assert wizard_words(said) == "what to do: fix the cause and press r to retry: finished steps are skipped"
    assert wizard_words("detach the old disk and rerun") == "detach the old disk and press r to retry"


def test_the_resume_offer_says_why_the_earlier_restore_stopped(tmp_path):
    from rescue.engine.restore import stop_reason

    folder = tmp_path / "disk"
    folder.mkdir()
    assert "never ended" in stop_reason(folder, 0)  # no report at all: the power went
    (folder / "restore-1.txt").write_text("rescue restore report\nresult:   FAILED (step 11 (copy vault home "
                                          "image 2026-1126-0300 to /home): the image tree is missing)\n")
    assert stop_reason(folder, 0) == ("a step failed: step 11 (copy vault home image 2026-1126-0300 to /home): "
                                      "the image tree is missing")
    (folder / "restore-1.txt").write_text("result:   FAILED (step 11 (copy vault home): the copy was cancelled)\n")
    assert stop_reason(folder, 0) == "it was cancelled: step 11 (copy vault home): the copy was cancelled"
    (folder / "restore-1.txt").write_text("result:   FAILED\n")
    assert "cancelled" in stop_reason(folder, 0)
    assert "never ended" in stop_reason(folder, (folder / "restore-1.txt").stat().st_mtime + 10)  # an older run's


def test_banks_are_found_on_the_backup_partition(tmp_path):
    backup = tmp_path / "backup"
    real_image(backup / "bank")
    (backup / "lost+found").mkdir()
    assert banks_under(backup) == (backup / "bank",)
    assert banks_under(backup / "bank") == (backup / "bank",)  # the partition itself is the bank
    assert banks_under(tmp_path / "nothing") == ()
    found = RealEngine(backup_mount=backup, master_conf=tmp_path / "none.conf").discover()
    assert found.banks == (backup / "bank",)
    assert [m.client for m in found.machines] == ["vm"]
    assert [i.name for i in found.machines[0].vaults[0].images] == ["2026-1126-0300"]


def test_rsnapshot_roots_are_found_on_the_backup_partition_or_given(tmp_path):
    from rescue.backups.source import ImageSource

    root = tmp_path / "backup" / "rsnapshot"
    for snap in ("hourly.0", "daily.0"):
        (root / snap / "web1" / "etc").mkdir(parents=True)
    (tmp_path / "backup" / "lost+found").mkdir()
    found = RealEngine(backup_mount=tmp_path / "backup", master_conf=tmp_path / "none.conf").discover()
    assert found.banks == (root,) and [m.client for m in found.machines] == ["web1"]
    assert [i.name for i in found.machines[0].vaults[0].images] == ["daily.0", "hourly.0"]
    given = RealEngine(backup_mount=tmp_path / "no-backup", master_conf=tmp_path / "none.conf",
                       source=ImageSource(rsnapshot_roots=(root,))).discover()
    assert [m.client for m in given.machines] == ["web1"] and given.warnings == ()


def test_banks_are_found_in_master_conf(tmp_path):
    real_image(tmp_path / "bank")
    conf = tmp_path / "master.conf"
    conf.write_text(f"bank:\n\t{tmp_path / 'bank'}\n")
    found = RealEngine(backup_mount=tmp_path / "no-backup", master_conf=conf).discover()
    assert [m.client for m in found.machines] == ["vm"]
    assert tmp_path / "bank" in found.banks


def test_no_bank_anywhere_says_what_to_do(tmp_path):
    found = RealEngine(backup_mount=tmp_path / "no-backup", master_conf=tmp_path / "none.conf").discover()
    assert found.machines == () and found.banks == ()
    assert "mount the backup partition or start with --bank DIR" in found.warnings[0]


def test_wizard_command_needs_a_terminal(capsys):
    code = main(["wizard", "--bank", str(FACTS)])
    assert code == Exit.ERROR
    err = capsys.readouterr().err
    assert "needs a terminal" in err and "rescue restore" in err


@aio
async def test_backups_screen_without_any_bank_says_what_to_do(tmp_path):
    engine = RealEngine(backup_mount=tmp_path / "no-backup", master_conf=tmp_path / "none.conf")
    async with wizard(engine) as (app, pilot):
        await settle(pilot)
        assert "No bank found" in body(app.screen, "#banks")
        assert "--bank DIR" in body(app.screen, "#warnings")
        await press(pilot, "enter")
        assert isinstance(app.screen, BackupsScreen)


@aio
async def test_a_vault_can_be_left_out_and_taken_back():
    engine = RecordedEngine(FACTS)
    async with wizard(engine) as (app, pilot):
        await settle(pilot)
        await press(pilot, "enter")
        screen = app.screen
        assert isinstance(screen, ImagesScreen)
        table = screen.query_one("#images", DataTable)
        tmp_rows = [i for i, image in enumerate(screen.images) if image.vault == "tmp"]
        table.move_cursor(row=tmp_rows[0])
        await pilot.press("x")
        await pilot.pause()
        assert {str(table.get_row_at(r)[0]) for r in tmp_rows} == {"out"}
        await pilot.press("x")  # taken back
        await pilot.pause()
        assert "*" in {str(table.get_row_at(r)[0]) for r in tmp_rows}
        await pilot.press("x")
        await press(pilot, "n")
        assert isinstance(app.screen, TargetScreen)
        await pick_disk(pilot, safe_disk())
        assert engine.skipped == ("tmp",)


@aio
async def test_sizes_set_from_the_review_plan_again_and_show_the_new_plan():
    engine = RecordedEngine(FACTS)
    async with wizard(engine) as (app, pilot):
        await to_review(pilot)
        screen = app.screen
        assert isinstance(screen, ReviewScreen) and engine.sizes[-1] == ()
        asked = len(engine.sizes)
        await press(pilot, "z")
        assert isinstance(app.screen, SizesScreen)
        rows = str(list(app.screen.query("#dialog Static"))[1].render())
        assert "ext4 /tmp" in rows and "now" in rows  # each partition's size now
        await type_text(pilot, "/home=1G swap=128M")
        await press(pilot, "enter")
        assert app.screen is screen
        assert engine.sizes[-1] == (("/home", 1 << 30), ("swap", 128 << 20))  # the engine planned again
        assert body(screen, "#body").startswith("Sizes you set: /home=1G swap=128M\n")
        assert screen.review is not None
        await press(pilot, "z")
        await type_text(pilot, " nonsense")
        await press(pilot, "enter")
        assert len(engine.sizes) == asked + 1  # not a size: nothing planned, the review as it was
        assert app.screen is screen and screen.review is not None
        assert body(screen, "#body").startswith("Sizes you set: /home=1G swap=128M\n")
