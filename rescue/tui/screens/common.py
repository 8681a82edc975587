"""Screens used from several steps: help, a text viewer, the typed confirmation."""

from __future__ import annotations

from collections.abc import Callable

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Footer, Input, Static

from rescue.tui.review import human
from rescue.tui.screens.base import GENERAL_HELP


def reflow(text: str) -> str:
    """Paragraphs written with hard line breaks, joined so the dialog wraps them."""
    return "\n\n".join(" ".join(p.split()) for p in text.strip().split("\n\n"))


class HelpScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape,f1,question_mark,q", "close", "Close"),
    ]

    def __init__(self, title: str, text: str) -> None:
        super().__init__()
        self.help_title = title
        self.text = text

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(f"Help: {self.help_title}", classes="heading", markup=False)
            with VerticalScroll():
                yield Static(reflow(self.text) + "\n\n" + GENERAL_HELP, markup=False)
            yield Static("Esc closes this help.", classes="hint")

    def action_close(self) -> None:
        self.dismiss(None)


class TextScreen(ModalScreen[None]):
    """A long text a person scrolls through: the restore script, the log."""

    BINDINGS = [
        Binding("escape,q", "close", "Close"),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown,space", "page(1)", "Page down"),
        Binding("home", "end(0)", "Top", show=False),
        Binding("end", "end(1)", "Bottom", show=False),
        Binding("f1,question_mark", "app.help", "Help"),
    ]

    def __init__(self, title: str, text: str) -> None:
        super().__init__()
        self.text_title = title
        self.text = text

    def compose(self) -> ComposeResult:
        yield Static(f" {self.text_title}", id="title", markup=False)
        with VerticalScroll(id="text"):
            yield Static(self.text, markup=False)
        yield Footer(show_command_palette=False)

    def on_mount(self) -> None:
        self.query_one("#text").focus()

    def action_page(self, direction: int) -> None:
        scroll = self.query_one("#text", VerticalScroll)
        if direction < 0:
            scroll.scroll_page_up(animate=False)
        else:
            scroll.scroll_page_down(animate=False)

    def action_end(self, bottom: int) -> None:
        scroll = self.query_one("#text", VerticalScroll)
        if bottom:
            scroll.scroll_end(animate=False)
        else:
            scroll.scroll_home(animate=False)

    def action_close(self) -> None:
        self.dismiss(None)


def confirm_matches(typed: str, device: str) -> bool:
    """The target's name as typed: its path (/dev/sdb) or its kernel name (sdb), as rescue restore takes it."""
    from rescue.engine.restore import confirmed

    return confirmed(typed, device)


def confirm_matches_all(typed: str, devices: tuple[str, ...]) -> bool:
    """Every target's name typed, separated by spaces, in any order, as rescue restore asks for several."""
    words = typed.split()
    return (len(words) == len(devices) and len(set(words)) == len(words)
            and all(any(confirm_matches(w, d) for w in words) for d in devices))


class ConfirmScreen(ModalScreen[bool]):
    """Type the target's name to erase it (every target's, with several); anything else answers no."""

    BINDINGS = [
        Binding("escape", "no", "Back, write nothing"),
        Binding("f1", "app.help", "Help"),
    ]

    def __init__(self, device: str, model: str | None, size: int, client: str, resume: bool = False,
                 devices: tuple[str, ...] = (), disks: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.device = device
        self.model = model
        self.disk_size = size
        self.client = client
        self.resume = resume
        self.devices = devices  # several targets: every one is typed
        self.disks = disks  # and the captured disk each replaces, "captured OLD -> NEW (size), model"

    def compose(self) -> ComposeResult:
        if len(self.devices) > 1:
            yield from self.compose_several()
            return
        what = f"{self.device} ({self.model or 'unknown model'}, {human(self.disk_size)})"
        if self.resume:
            text = (f"Resume restoring {self.client} onto {what}.\n"
                    "The steps not yet done will write to this disk.")
        else:
            text = (f"Restore {self.client} onto {what}.\n"
                    "EVERYTHING NOW ON THIS DISK WILL BE DESTROYED.")
        short = self.device.rsplit("/", 1)[-1]
        with Vertical(id="dialog"):
            yield Static(" rescue wizard | 5/7 Confirm", classes="heading")
            yield Static(text, markup=False)
            yield Static(f"Type the disk's name ({self.device} or {short}) and press Enter.\n"
                         "Anything else goes back with nothing written.", markup=False)
            yield Input(id="typed")
            yield Static("Esc goes back; nothing is written.", classes="hint")

    def compose_several(self) -> ComposeResult:
        names = " ".join(self.devices)
        short = " ".join(d.rsplit("/", 1)[-1] for d in self.devices)
        mapping = "\n".join(f"  {line}" for line in self.disks)
        if self.resume:
            text = (f"Resume restoring {self.client} onto {len(self.devices)} disks:\n{mapping}\n"
                    "The steps not yet done will write to these disks.")
        else:
            text = (f"Restore {self.client} onto {len(self.devices)} disks:\n{mapping}\n"
                    "EVERYTHING NOW ON THESE DISKS WILL BE DESTROYED.")
        with Vertical(id="dialog"):
            yield Static(" rescue wizard | 5/7 Confirm", classes="heading")
            yield Static(text, markup=False)
            yield Static(f"Type the names of all {len(self.devices)} disks ({names}, or {short}) and press "
                         "Enter.\nAnything else goes back with nothing written.", markup=False)
            yield Input(id="typed")
            yield Static("Esc goes back; nothing is written.", classes="hint")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    @on(Input.Submitted)
    def submitted(self, event: Input.Submitted) -> None:
        if len(self.devices) > 1:
            self.dismiss(confirm_matches_all(event.value, self.devices))
            return
        self.dismiss(confirm_matches(event.value, self.device))

    def action_no(self) -> None:
        self.dismiss(False)


class AskScreen(ModalScreen[bool]):
    """A yes/no question that takes a second key: y answers yes, n or Esc no."""

    BINDINGS = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, heading: str, text: str, yes: str = "yes", no: str = "no") -> None:
        super().__init__()
        self.heading = heading
        self.text = text
        self.keys = f"y: {yes}   n or Esc: {no}"

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(self.heading, classes="heading", markup=False)
            yield Static(f"{self.text}\n{self.keys}", markup=False)

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class PowerScreen(AskScreen):
    """Reboot or power off only after a second key: one stray 'r' must not take the console away."""

    def __init__(self, action: str) -> None:
        what = "Reboot" if action == "reboot" else "Power off"
        super().__init__(f"{what} now?", "Take the backup disk out first if the machine should boot "
                                         "from the restored disk.")
        self.action_name = action


class SizesScreen(ModalScreen["str | None"]):
    """The partition sizes a person sets from the review, as `rescue plan --size` takes them."""

    BINDINGS = [Binding("escape", "close", "Back, sizes unchanged")]

    def __init__(self, current: str, rows: str) -> None:
        super().__init__()
        self.current = current
        self.rows = rows

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static("Partition sizes", classes="heading")
            yield Static(self.rows, markup=False)
            yield Static("Type MOUNTPOINT=SIZE, several separated by spaces (/home=20G swap=1G, or a "
                         "partition number: 3=512M; units K M G T). The partitions not named share the "
                         "rest in proportion. Empty: the plan's own sizes. Enter plans again.", markup=False)
            yield Input(self.current, id="sizes")
            yield Static("Esc goes back with the sizes unchanged.", classes="hint")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    @on(Input.Submitted)
    def submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)

    def action_close(self) -> None:
        self.dismiss(None)


class PassphraseScreen(ModalScreen[bool]):
    """The passphrase of one LUKS container, typed hidden and checked against the header kept at
    backup time before anything is written. `check` runs cryptsetup (a second or more): in a
    worker thread; it returns None when the passphrase opens the header, else what to say.

    The typed text never stays on screen or in the widget: the field is emptied on Enter."""

    BINDINGS = [Binding("escape", "close", "Back: restore nothing")]

    def __init__(self, uuid: str, name: str, check: Callable[[str, str], str | None]) -> None:
        super().__init__()
        self.uuid = uuid
        self.container = name
        self.check = check

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(f"Passphrase for LUKS {self.container}", classes="heading", markup=False)
            yield Static(f"The restore writes back the header of LUKS UUID {self.uuid} kept at backup time "
                         "(every keyslot): any passphrase that opened it on the old machine opens it (with "
                         "--luks-new-key: type the new passphrase, then again). It is checked now, before "
                         "anything is written, and is kept nowhere.", markup=False)
            yield Input(password=True, id="passphrase")
            yield Static("", id="said", markup=False)
            yield Static("Enter checks it. Esc goes back: nothing is written.", classes="hint")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    @on(Input.Submitted)
    def submitted(self, event: Input.Submitted) -> None:
        typed = event.value
        event.input.value = ""
        if not typed:
            return
        self.query_one("#said", Static).update("checking...")
        self.run_check(typed)

    @work(thread=True, exclusive=True, group="passphrase")
    def run_check(self, typed: str) -> None:
        said = self.check(self.uuid, typed)
        self.app.call_from_thread(self.checked, said)

    def checked(self, said: str | None) -> None:
        if said is None:
            self.dismiss(True)
        else:
            self.query_one("#said", Static).update(said)

    def action_close(self) -> None:
        self.dismiss(False)
