"""The wizard driven with Pilot through every screen, against recorded facts.

The facts in tests/unit/data/tui were recorded by `python -m rescue.tui.recorded`
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
from pathlib import Path

import pytest
from textual.widgets import DataTable, Input, Static

from rescue.cli import main
from rescue.errors import Exit
from rescue.tui import RecordedEngine, make_app
from rescue.tui.real import RealEngine, banks_under
from rescue.tui.screens.backups import BackupsScreen, ImagesScreen
from rescue.tui.screens.common import ConfirmScreen, HelpScreen, TextScreen, confirm_matches
from rescue.tui.screens.run import FailedScreen, ProgressScreen, ResultScreen, ResumeScreen
from rescue.tui.screens.target import ReviewScreen, TargetScreen

FACTS = Path(__file__).parent / "data" / "tui"


def aio(fn):
    """Run an async test on its own event loop (Textual's run_test is async)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return asyncio.run(fn(*args, **kwargs))

    return wrapper


SIZE = (80, 24)


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
    """c while the replay holds in a copy, then let it go; returns the status line seen meanwhile."""
    assert engine.holding.wait(10)
    await pilot.press("c")
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
        states = {d.device: str(screen.query_one("#disks", DataTable).get_row_at(i)[4])
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
        await pilot.press("r")
        await run_to_end(pilot)
        assert isinstance(app.screen, ResultScreen)
        assert engine.runs == 2
        log = "\n".join(app.log_lines)
        assert "skip (done earlier)" in log  # the retry skipped what the first run had done


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
        assert f"{copy_root} of {unfinished.steps_total} steps done" in body(screen, "#body")
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
