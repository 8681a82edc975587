"""The wizard restores a machine with several disks: a new disk asked for each captured disk.

The facts are a two-disk machine's captured layout (built on dumps made by real sfdisk, as the
plan tests' machines are), the disks of the rescue machine as probed, and the images in its bank;
RecordedEngine plans with the real build_plan from them, so the review is the real plan's.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
from plan_fixtures import GIB, images, target
from recorded_engine import RecordedEngine
from test_plan_disk_map import two_disk_machine
from test_tui_wizard import (
    FACTS,
    aio,
    body,
    press,
    run_to_end,
    settle,
    type_text,
    wizard,
)

from rescue.backups.model import Machine, Vault
from rescue.jsonform import to_json
from rescue.tui.facade import Discovery
from rescue.tui.screens.common import ConfirmScreen, HelpScreen
from rescue.tui.screens.run import ResultScreen
from rescue.tui.screens.target import ReviewScreen, TargetScreen

BACKUP, SMALL, NEW8, NEW16 = "/dev/sdc", "/dev/sdf", "/dev/sdd", "/dev/sde"


def write_facts(folder: Path, layout) -> Path:
    imgs = images(layout)
    machine = Machine(client=layout.client, vaults=tuple(Vault(bank=i.bank, name=i.vault, images=(i,)) for i in imgs))
    disks = (target(64 * GIB, device=BACKUP, model="BACKUP", holds_backup=True, mounted=("/backup",)),
             target(8 * GIB, device=NEW8, model="NEW 8"), target(16 * GIB, device=NEW16, model="NEW 16"),
             target(1 * GIB, device=SMALL, model="SMALL"))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "discovery.json").write_text(json.dumps(to_json(Discovery((imgs[0].bank,), (machine,)))))
    (folder / "disks.json").write_text(json.dumps([to_json(d) for d in disks]))
    (folder / "layout.json").write_text(layout.dumps())
    shutil.copy(FACTS / "run.json", folder / "run.json")
    return folder


@pytest.fixture
def two_disks(tmp_path) -> Path:
    """/ on a captured 8 GiB disk, /home on a 12 GiB one with serial WD-XYZ."""
    lay, _ = two_disk_machine()
    lay = dataclasses.replace(lay, disks=(lay.disks[0], dataclasses.replace(lay.disks[1], serial="WD-XYZ")))
    return write_facts(tmp_path / "facts", lay)


@pytest.fixture
def mirrored(tmp_path) -> Path:
    from test_plan_md import md_layout

    return write_facts(tmp_path / "facts", md_layout())


async def to_disks(pilot) -> TargetScreen:
    await settle(pilot)
    await press(pilot, "enter")
    await press(pilot, "n")
    screen = pilot.app.screen
    assert isinstance(screen, TargetScreen)
    return screen


async def choose(pilot, device: str) -> None:
    screen = pilot.app.screen
    screen.table().move_cursor(row=[d.device for d in screen.disks].index(device))
    await press(pilot, "enter")


@aio
async def test_two_disks_mapped_onto_two_reach_the_review_with_both_mappings(two_disks):
    engine = RecordedEngine(two_disks)
    async with wizard(engine) as (app, pilot):
        screen = await to_disks(pilot)
        status = body(screen, "#status")
        assert "New disk for captured /dev/sda (8 GiB" in status and "1 of 2" in status and ": /)" in status
        assert engine.options == []  # nothing planned before every disk is answered
        await choose(pilot, NEW8)
        assert app.screen is screen
        status = body(screen, "#status")
        assert "New disk for captured /dev/sdb (12 GiB, WD-XYZ: /home), 2 of 2" in status
        state = {d.device: str(screen.table().get_row_at(i)[4]) for i, d in enumerate(screen.disks)}
        assert state[NEW8] == "for sda" and state[BACKUP] == "UNSAFE"
        await choose(pilot, NEW8)  # taken already: not again
        assert app.screen is screen and engine.options == []
        await choose(pilot, BACKUP)  # the backup disk: never
        assert app.screen is screen and engine.options == []
        await choose(pilot, NEW16)
        review = app.screen
        assert isinstance(review, ReviewScreen) and review.review is not None
        options = engine.options[-1]
        assert options.disk_map == (("/dev/sda", NEW8), ("/dev/sdb", NEW16)) and options.skip_disks == ()
        assert engine.targets[-1] == (NEW8, NEW16)
        text = body(review, "#body")
        assert f"onto 2 disks: {NEW8} and {NEW16}" in text
        assert f"captured /dev/sda (8 GiB) -> {NEW8} (8 GiB), NEW 8" in text
        assert f"captured /dev/sdb (12 GiB) -> {NEW16} (16 GiB), NEW 16" in text
        # the confirmation asks for both names; one alone writes nothing
        await press(pilot, "n")
        assert isinstance(app.screen, ConfirmScreen)
        await type_text(pilot, NEW8)
        await press(pilot, "enter")
        assert app.screen is review and engine.runs == 0
        await press(pilot, "n")
        await type_text(pilot, f"{NEW16.removeprefix('/dev/')} {NEW8}")
        await pilot.press("enter")
        await run_to_end(pilot)
        assert isinstance(app.screen, ResultScreen)
        assert f"restored onto {NEW8} and {NEW16}" in body(app.screen, "#summary Static")
    assert engine.written == [NEW8, NEW16]  # the run holds every disk


@aio
async def test_a_captured_disk_left_out_is_skipped_and_its_vault_warned(two_disks):
    engine = RecordedEngine(two_disks)
    async with wizard(engine) as (app, pilot):
        await to_disks(pilot)
        await choose(pilot, NEW16)
        await press(pilot, "x")
        review = app.screen
        assert isinstance(review, ReviewScreen) and review.review is not None
        assert engine.options[-1].disk_map == (("/dev/sda", NEW16),)
        assert engine.options[-1].skip_disks == ("/dev/sdb",)
        text = body(review, "#body")
        assert "captured /dev/sdb: LEFT OUT" in text
        assert "/home, which lived on another disk: not restored" in text.replace("\n", " ").replace("    ", "")
        await press(pilot, "n")
        assert isinstance(app.screen, ConfirmScreen) and app.screen.devices == ()  # one target: typed as today


@aio
async def test_no_review_until_every_captured_disk_is_answered_and_esc_goes_back_one(two_disks):
    engine = RecordedEngine(two_disks)
    async with wizard(engine) as (app, pilot):
        screen = await to_disks(pilot)
        await choose(pilot, NEW8)
        assert isinstance(app.screen, TargetScreen) and app.target is None and engine.options == []
        await press(pilot, "escape")  # back to the first captured disk, its choice undone
        assert app.screen is screen and screen.asking == 0 and screen.chosen == {}
        await press(pilot, "x")
        await press(pilot, "x")  # every disk left out: nothing to restore, still asking
        assert app.screen is screen and engine.options == []
        await press(pilot, "f1")
        assert isinstance(app.screen, HelpScreen) and "leaves the captured disk out" in app.screen.text
        await press(pilot, "escape")
        await choose(pilot, NEW16)
        assert isinstance(app.screen, ReviewScreen)
        assert engine.options[-1].skip_disks == ("/dev/sda",)
        await press(pilot, "escape")  # back from the review: the last captured disk is asked again
        assert app.screen is screen and screen.asking == 1


@aio
async def test_a_mirrored_machine_onto_one_disk_says_its_arrays_come_back_degraded(mirrored):
    engine = RecordedEngine(mirrored)
    async with wizard(engine) as (app, pilot):
        screen = await to_disks(pilot)
        assert "a mirror's half" in body(screen, "#status")
        await choose(pilot, NEW16)
        await press(pilot, "x")
        review = app.screen
        assert isinstance(review, ReviewScreen) and review.review is not None, body(review, "#body")
        assert engine.options[-1].skip_disks == ("/dev/sdb",)
        text = body(review, "#body").replace("\n", " ")
        assert "comes back degraded" in text


@aio
async def test_the_questions_and_the_confirmation_fit_80x24(two_disks):
    async with wizard(RecordedEngine(two_disks)) as (app, pilot):
        screen = await to_disks(pilot)
        await choose(pilot, NEW8)
        for widget in (screen.query_one("#status"), screen.table(), screen.query_one("#detail")):
            assert widget.region.bottom <= 23 and widget.region.right <= 80  # above the footer
        await choose(pilot, NEW16)
        await press(pilot, "n")
        dialog = app.screen.query_one("#dialog")
        assert dialog.region.height <= 22 and dialog.region.bottom <= 24
        assert app.screen.query_one("#typed").region.bottom <= 24


def test_the_real_engine_plans_several_targets_with_rescue_restores_options(tmp_path, monkeypatch):
    from rescue.layout import legacy
    from rescue.tui.real import RealEngine

    lay, imgs = two_disk_machine()
    machine = Machine(client=lay.client, vaults=tuple(Vault(bank=i.bank, name=i.vault, images=(i,)) for i in imgs))
    monkeypatch.setattr(legacy, "newest_layout", lambda images: lay)  # the images' captured layout
    engine = RealEngine(backup_mount=tmp_path / "none", master_conf=tmp_path / "none.conf")
    assert [d.device for d in engine.captured_disks(machine, imgs)] == ["/dev/sda", "/dev/sdb"]
    review = engine.plan(machine, imgs, (target(8 * GIB, device=NEW8), target(16 * GIB, device=NEW16)),
                         disk_map=(("/dev/sda", NEW8), ("/dev/sdb", NEW16)))
    assert review.targets == (NEW8, NEW16)
    plan = engine.plans[review]
    assert plan.options.disk_map == (("/dev/sda", NEW8), ("/dev/sdb", NEW16))
    assert [t.device for t in plan.targets] == [NEW8, NEW16]
