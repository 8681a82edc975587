"""What every wizard screen shares: a title line, the footer of keys, a help text."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Static

from rescue.errors import RescueError

if TYPE_CHECKING:
    from rescue.tui.app import Wizard
    from rescue.tui.facade import Engine

GENERAL_HELP = """\
Keys on every screen
  F1 or ?    this help          Esc     back one step
  Up/Down    move               Enter   choose
  Tab        next field         q       quit (nothing more is written)
Nothing is written to any disk before you type the target's name on the
confirm screen. A restore that stops part way can be resumed: start
rescue wizard again and it offers to resume."""


def unexpected(e: Exception) -> RescueError:
    """An error rescue did not foresee, told like the others instead of a traceback."""
    return RescueError(f"unexpected error: {type(e).__name__}: {e}",
                       why="this is a bug in rescue",
                       fix="note the message; rescue restore on another console may still work")


class WizardScreen(Screen):
    """A step of the wizard: STEP is shown in the title, HELP on F1."""

    STEP: ClassVar[str] = ""
    HELP: ClassVar[str] = ""
    BINDINGS = [Binding("escape", "back", "Back")]

    @property
    def wizard(self) -> Wizard:
        return self.app  # type: ignore[return-value]

    @property
    def engine(self) -> Engine:
        return self.wizard.engine

    def compose_title(self) -> ComposeResult:
        yield Static(f" rescue wizard | {self.STEP}", id="title", markup=False)

    def compose_footer(self) -> ComposeResult:
        yield Footer(show_command_palette=False)

    def action_back(self) -> None:
        if len(self.app.screen_stack) > 2:
            self.app.pop_screen()
