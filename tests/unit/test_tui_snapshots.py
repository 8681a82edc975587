"""Every wizard screen at 80x24, compared with the accepted picture (pytest-textual-snapshot).

The pictures live in tests/unit/__snapshots__/test_tui_snapshots/. After a
deliberate change of a screen, look at the new pictures and accept them with
`pytest tests/unit/test_tui_snapshots.py --snapshot-update`.
Facts are the recorded ones (see test_tui_wizard.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from textual.widgets import DataTable

from rescue.jsonform import from_json
from rescue.target import TargetDisk
from rescue.tui import Interrupted, make_app

from recorded_engine import RecordedEngine  # noqa: E402  (tests/unit is on sys.path)
from rescue.tui.screens.target import TargetScreen

FACTS = Path(__file__).parent / "data" / "tui"
SIZE = (80, 24)


@pytest.fixture(autouse=True)
def _fixed_clock(monkeypatch):
    """The times a try started, shown on the screens, are the same in every picture."""
    monkeypatch.setattr("rescue.tui.screens.run.clock", lambda: "03:14:15")
    monkeypatch.setattr("rescue.tui.screens.run.seconds", lambda: 0.0)


def recorded_disks() -> list[TargetDisk]:
    return [from_json(TargetDisk, d) for d in json.loads((FACTS / "disks.json").read_text())]


def planned_disk() -> str:
    return "/dev/" + next((FACTS / "plans").glob("*.json")).stem


def refused_disk() -> str:
    return "/dev/" + next((FACTS / "refusals").glob("*.json")).stem


async def settle(pilot) -> None:
    # A worker started from on_mount may not exist yet at the first pause
    # (a cold first app start): wait until the screen stops starting workers.
    # A DataTable sizes its columns on its next idle after rows were added; on a
    # loaded machine the picture could be taken before that (the header still in
    # the empty table's widths), so wait until no table has a pending resize.
    for attempt in range(50):
        await pilot.pause()
        await pilot.app.workers.wait_for_complete()
        pending = [t for t in pilot.app.screen.query(DataTable) if t._require_update_dimensions]
        if attempt >= 2 and not pending:
            break
    for table in pilot.app.screen.query(DataTable):
        table.refresh()
    await pilot.pause(0.1)


async def to_target(pilot) -> None:
    await settle(pilot)
    await pilot.press("enter")
    await settle(pilot)
    await pilot.press("n")
    await settle(pilot)


async def cursor_on(pilot, device: str) -> None:
    screen = pilot.app.screen
    assert isinstance(screen, TargetScreen)
    screen.query_one("#disks", DataTable).move_cursor(row=[d.device for d in screen.disks].index(device))
    await pilot.pause()


async def to_review(pilot, device: str | None = None) -> None:
    await to_target(pilot)
    await cursor_on(pilot, device or planned_disk())
    await pilot.press("enter")
    await settle(pilot)


async def to_confirm(pilot) -> None:
    await to_review(pilot)
    await pilot.press("n")
    await pilot.pause()


async def start_restore(pilot) -> None:
    await to_confirm(pilot)
    await pilot.press(*list(planned_disk()), "enter")
    await pilot.pause()


async def run_to_end(pilot) -> None:
    for _ in range(100):
        await settle(pilot)
        if type(pilot.app.screen).__name__ != "ProgressScreen":
            return


def test_snapshot_backups(snap_compare):
    assert snap_compare(make_app(RecordedEngine(FACTS)), terminal_size=SIZE, run_before=settle)


def test_snapshot_images(snap_compare):
    async def before(pilot):
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)

    assert snap_compare(make_app(RecordedEngine(FACTS)), terminal_size=SIZE, run_before=before)


def test_snapshot_target_with_an_unsafe_disk_refused(snap_compare):
    unsafe = next(d.device for d in recorded_disks() if d.holds_root)

    async def before(pilot):
        await to_target(pilot)
        await cursor_on(pilot, unsafe)
        await pilot.press("enter")
        await pilot.pause()

    assert snap_compare(make_app(RecordedEngine(FACTS)), terminal_size=SIZE, run_before=before)


def test_snapshot_review(snap_compare):
    assert snap_compare(make_app(RecordedEngine(FACTS)), terminal_size=SIZE, run_before=to_review)


def test_snapshot_review_refused(snap_compare):
    async def before(pilot):
        await to_review(pilot, refused_disk())

    assert snap_compare(make_app(RecordedEngine(FACTS)), terminal_size=SIZE, run_before=before)


def test_snapshot_log_viewer(snap_compare):
    async def before(pilot):
        await start_restore(pilot)
        await run_to_end(pilot)
        await pilot.press("l")
        await pilot.pause()

    assert snap_compare(make_app(RecordedEngine(FACTS)), terminal_size=SIZE, run_before=before)


def test_snapshot_confirm(snap_compare):
    async def before(pilot):
        await to_confirm(pilot)
        await pilot.press(*list("loop"))

    assert snap_compare(make_app(RecordedEngine(FACTS)), terminal_size=SIZE, run_before=before)


def test_snapshot_progress_during_the_copy(snap_compare):
    engine = RecordedEngine(FACTS, hold_at="copy:home")
    engine.hold_seconds = 15.0  # the picture is taken while the replay waits;
    engine.hold_ends_on_cancel = True  # leaving the progress screen (the app's end) ends the wait

    async def before(pilot):
        await start_restore(pilot)
        assert engine.holding.wait(10)
        await pilot.pause(0.3)

    assert snap_compare(make_app(engine), terminal_size=SIZE, run_before=before)


def test_snapshot_result(snap_compare):
    async def before(pilot):
        await start_restore(pilot)
        await run_to_end(pilot)

    assert snap_compare(make_app(RecordedEngine(FACTS)), terminal_size=SIZE, run_before=before)


def test_snapshot_failed_step(snap_compare):
    async def before(pilot):
        await start_restore(pilot)
        await run_to_end(pilot)

    assert snap_compare(make_app(RecordedEngine(FACTS, outcomes=("failed",))), terminal_size=SIZE,
                        run_before=before)


def test_snapshot_cancelled(snap_compare):
    engine = RecordedEngine(FACTS, hold_at="copy:root")

    async def before(pilot):
        await start_restore(pilot)
        assert engine.holding.wait(10)
        await pilot.press("c")
        await pilot.pause()
        await pilot.press("y")
        engine.release.set()
        await run_to_end(pilot)

    assert snap_compare(make_app(engine), terminal_size=SIZE, run_before=before)


def test_snapshot_cancel_asks_first(snap_compare):
    engine = RecordedEngine(FACTS, hold_at="copy:root")
    engine.hold_ends_on_cancel = True

    async def before(pilot):
        await start_restore(pilot)
        assert engine.holding.wait(10)
        await pilot.press("c")
        await pilot.pause(0.2)

    try:
        assert snap_compare(make_app(engine), terminal_size=SIZE, run_before=before)
    finally:
        engine.release.set()


def test_snapshot_retry_failed_again(snap_compare):
    engine = RecordedEngine(FACTS, outcomes=("failed",))
    engine.log, engine.report = Path("/var/log/rescue/restore-1.log"), Path("/var/lib/rescue/restore-1.txt")

    async def before(pilot):
        await start_restore(pilot)
        await run_to_end(pilot)
        await pilot.press("r")
        await run_to_end(pilot)

    assert snap_compare(make_app(engine), terminal_size=SIZE, run_before=before)


def test_snapshot_resume_offer(snap_compare):
    engine = RecordedEngine(FACTS)
    found = engine.discover()
    machine = found.machines[0]
    target = next(d for d in recorded_disks() if d.device == planned_disk())
    review = engine.plan(machine, tuple(engine.choose(machine).values()), target)
    engine.unfinished = Interrupted(machine.client, target.device, 10, len(review.steps), review,
                                    started="2026-11-26T11:02",
                                    why="a step failed: step 11 (copy vault home image 2026-1126-0300 to "
                                        "/home): the image tree is missing")
    assert snap_compare(make_app(engine), terminal_size=SIZE, run_before=settle)


def test_snapshot_help(snap_compare):
    async def before(pilot):
        await to_target(pilot)
        await pilot.press("f1")
        await pilot.pause()

    assert snap_compare(make_app(RecordedEngine(FACTS)), terminal_size=SIZE, run_before=before)
