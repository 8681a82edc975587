"""What every wizard screen shares: a title line, the footer of keys, a help text,
and the way a worker thread hands the engine's answer (or its error) to the screen."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.message import Message
from textual.screen import Screen
from rich.text import Text
from textual.widgets import DataTable, Footer, Static

from rescue.errors import RescueError
from rescue.tui.messages import WorkFailed

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


def error_text(error: RescueError) -> str:
    """What is wrong, why, what to do: on separate lines, as the screens show it."""
    lines = [str(error.what)]
    if error.why:
        lines.append(f"Why: {error.why}")
    if error.fix:
        lines.append(f"What to do: {error.fix}")
    return "\n".join(lines)


def unexpected(e: Exception) -> RescueError:
    """An error rescue did not foresee, told like the others instead of a traceback."""
    return RescueError(f"unexpected error: {type(e).__name__}: {e}",
                       why="this is a bug in rescue",
                       fix="note the message; rescue restore on another console may still work")


class MarkedTable(DataTable):
    """A table whose highlighted row carries '>' beside it, not only a colour: a monochrome
    console or a serial line shows which row Enter chooses."""

    def add_row(self, *cells, **kwargs):  # type: ignore[no-untyped-def]
        kwargs.setdefault("label", " ")
        key = super().add_row(*cells, **kwargs)
        self.mark()
        return key

    def watch_cursor_coordinate(self, old, new):  # type: ignore[no-untyped-def]
        super().watch_cursor_coordinate(old, new)
        self.mark()

    def marked_row(self) -> int | None:
        """The row carrying the marker (what a person sees as highlighted)."""
        return next((i for i, r in enumerate(self.ordered_rows) if r.label is not None and r.label.plain == ">"),
                    None)

    def mark(self) -> None:
        for i, row in enumerate(self.ordered_rows):
            row.label = Text(">" if i == self.cursor_row else " ")
        self._clear_caches()
        self.refresh()


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

    def compose_scroll(self, scroll_id: str, text: str) -> ComposeResult:
        """A text that may be longer than the screen (a summary, an error), then the footer."""
        with VerticalScroll(id=scroll_id):
            yield Static(text, markup=False)
        yield from self.compose_footer()

    def action_back(self) -> None:
        if len(self.app.screen_stack) > 2:
            self.app.pop_screen()

    def action_noop(self) -> None:
        """Esc where there is no step back: a restore running or ended is not undone by a key."""

    def post_answer(self, ask: Callable[[], Message]) -> None:
        """From a worker thread: post what the engine answered, or WorkFailed with its error.

        The thread never touches a widget; the screen draws the message on the event loop.
        """
        try:
            answer = ask()
        except RescueError as e:
            answer = WorkFailed(e)
        except Exception as e:  # noqa: BLE001 - a bug must not leave the console dead
            answer = WorkFailed(unexpected(e))
        self.post_message(answer)


class ListScreen(WizardScreen):
    """A step that lists what the engine found (machines, disks): a status line, a table, details.

    The subclass names the widgets' ids and the table's columns, starts its
    worker on mount, and fills the table when the answer comes.
    """

    STATUS: ClassVar[tuple[str, str]]  # id and first text of the line above the table
    TABLE: ClassVar[tuple[str, tuple[str, ...]]]  # id and columns of the table
    DETAIL: ClassVar[str]  # id of the text below it
    FAILED: ClassVar[str]  # the status line when the engine could not answer

    def compose(self) -> ComposeResult:
        yield from self.compose_title()
        yield Static(self.STATUS[1], id=self.STATUS[0], markup=False)
        table: DataTable = MarkedTable(id=self.TABLE[0], cursor_type="row")
        table.add_columns(*self.TABLE[1])
        yield table
        yield Static("", id=self.DETAIL, markup=False)
        yield from self.compose_footer()

    def status(self, text: str) -> None:
        self.query_one(f"#{self.STATUS[0]}", Static).update(text)

    def detail(self, text: str) -> None:
        self.query_one(f"#{self.DETAIL}", Static).update(text)

    def table(self) -> DataTable:
        return self.query_one(f"#{self.TABLE[0]}", DataTable)

    @on(WorkFailed)
    def failed(self, message: WorkFailed) -> None:
        self.status(self.FAILED)
        self.detail(error_text(message.error))
