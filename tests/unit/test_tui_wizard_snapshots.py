"""The wizard's review of a machine with btrfs snapshots says what becomes of them (left out
by default, listed) and b switches between leaving them out and restoring them as subvolumes
holding their data, planning again each time (issue 18)."""

from __future__ import annotations

import dataclasses

from recorded_engine import RecordedEngine
from test_plan_btrfs_snapshots import sample
from test_tui_wizard import aio, body, press, wizard
from test_tui_wizard_disks import NEW16, choose, to_disks, write_facts

from rescue.tui.screens.target import ReviewScreen


@aio
async def test_b_on_the_review_switches_what_becomes_of_the_snapshots(tmp_path):
    engine = RecordedEngine(write_facts(tmp_path / "facts", dataclasses.replace(sample(), root="/", client="demo")))
    async with wizard(engine) as (app, pilot):
        await to_disks(pilot)
        await choose(pilot, NEW16)
        review = app.screen
        assert isinstance(review, ReviewScreen) and review.review is not None
        assert engine.options[-1].btrfs_snapshots == "leave-out"
        text = " ".join(body(review, "#body").split())
        assert "btrfs snapshots: LEFT OUT (b restores them as subvolumes): @/.snapshots/1, @home-2026-1201" in text
        assert "left out (as chosen)" in text
        await press(pilot, "b")
        assert app.screen is review and review.review is not None
        assert engine.options[-1].btrfs_snapshots == "restore"  # the engine planned again
        text = " ".join(body(review, "#body").split())
        assert "btrfs snapshots: RESTORED as subvolumes holding their data" in text
        # these recorded vaults hold no snapshot's files: each stays out, with the reason
        assert "left out, their files are in no vault" in text
        await press(pilot, "b")
        assert engine.options[-1].btrfs_snapshots == "leave-out"
        assert "LEFT OUT" in body(review, "#body")
