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
