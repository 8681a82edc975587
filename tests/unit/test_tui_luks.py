"""The wizard's LUKS passphrase question (issue 18): typed hidden, checked before anything is
written, "wrong passphrase ..., try again" on a wrong one, Esc restores nothing."""

from __future__ import annotations

import asyncio

from textual.app import App
from textual.widgets import Input, Static

from rescue.tui.screens.common import PassphraseScreen

UUID = "5a3e3c1d-7f7b-4a57-9a55-2a8c6a0f0c01"


def _run(answers: list, typed: list[str], keys: list[list[str]]) -> list:
    checked: list[str] = []
    seen: dict = {}

    def check(uuid: str, passphrase: str) -> str | None:
        checked.append(passphrase)
        return None if passphrase == "right" else f"wrong passphrase for LUKS UUID {uuid}, try again"

    class Host(App):
        def on_mount(self) -> None:
            self.push_screen(PassphraseScreen(UUID, "crypthome", check), answers.append)

    async def go() -> None:
        app = Host()
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            field = app.screen.query_one(Input)
            seen["password"] = field.password
            for word in keys:
                await pilot.press(*word)
                seen.setdefault("shown", []).append(str(field.render()) if hasattr(field, "render") else "")
                await pilot.press("enter")
                for _ in range(50):
                    await pilot.pause(0.02)
                    if answers or "wrong" in str(app.screen.query_one("#said", Static).render()):
                        break
                if not answers:
                    seen.setdefault("said", []).append(str(app.screen.query_one("#said", Static).render()))
                    seen["left"] = field.value
            if not answers:
                await pilot.press("escape")
                await pilot.pause()

    asyncio.run(go())
    typed.extend(checked)
    return [seen]


def test_a_wrong_passphrase_is_said_and_a_right_one_ends_the_question():
    answers: list = []
    typed: list[str] = []
    (seen,) = _run(answers, typed, [list("nope"), list("right")])
    assert seen["password"] is True  # typed hidden
    assert seen["said"] == [f"wrong passphrase for LUKS UUID {UUID}, try again"]
    assert seen["left"] == ""  # the field is emptied: the typed text stays nowhere
    assert typed == ["nope", "right"] and answers == [True]


def test_escape_restores_nothing():
    answers: list = []
    (seen,) = _run(answers, [], [list("nope")])
    assert answers == [False]


# -- the whole wizard: the passphrase is asked after the confirmation, before the run -----------------

from recorded_engine import RecordedEngine  # noqa: E402
from test_tui_wizard import FACTS, aio, run_to_end, settle, start_restore, wizard  # noqa: E402


class LuksEngine(RecordedEngine):
    """The recorded engine with one LUKS container to open: its passphrase is 'right'."""

    def __init__(self) -> None:
        super().__init__(FACTS)
        self.opened = False
        self.checked: list[str] = []

    def luks_needed(self, review):
        return () if self.opened else ((UUID, "cryptroot"),)

    def check_luks_key(self, uuid, passphrase):
        self.checked.append(passphrase)
        if passphrase == "right":
            self.opened = True
            return None
        return f"wrong passphrase for LUKS UUID {uuid}, try again"


async def _type(pilot, word: str) -> None:
    await pilot.press(*list(word), "enter")
    await settle(pilot)


@aio
async def test_the_wizard_runs_only_once_the_passphrase_opens_the_kept_header():
    engine = LuksEngine()
    async with wizard(engine) as (app, pilot):
        await start_restore(pilot)
        await settle(pilot)
        assert isinstance(app.screen, PassphraseScreen) and engine.runs == 0
        await _type(pilot, "nope")
        assert isinstance(app.screen, PassphraseScreen) and engine.runs == 0  # nothing written
        assert "try again" in str(app.screen.query_one("#said", Static).render())
        await _type(pilot, "right")
        await run_to_end(pilot)
        assert engine.checked == ["nope", "right"] and engine.runs == 1


@aio
async def test_escape_on_the_passphrase_writes_nothing():
    engine = LuksEngine()
    async with wizard(engine) as (app, pilot):
        await start_restore(pilot)
        await settle(pilot)
        assert isinstance(app.screen, PassphraseScreen)
        await pilot.press("escape")
        await run_to_end(pilot)
        assert engine.runs == 0 and engine.written == []
        assert not isinstance(app.screen, PassphraseScreen)
