"""Steps 1 and 2: the backups found, and the images of the chosen machine."""

from __future__ import annotations

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Static

from rescue.backups.model import Image, ImageStatus, Machine
from rescue.engine.restore import missing_vaults
from rescue.tui.facade import Discovery
from rescue.tui.messages import DiscoveryDone
from rescue.tui.review import human
from rescue.tui.screens.base import ListScreen, MarkedTable, WizardScreen


def image_date(image: Image) -> str:
    """The image's date as a person reads it: 2026-11-26 03:00."""
    if image.created:
        return image.created.replace("T", " ")[:16]
    return image.name


def status_word(image: Image) -> str:
    return {ImageStatus.SUCCESS: "ok", ImageStatus.WARNING: "ok (24)", ImageStatus.FAILED: "FAILED",
            ImageStatus.INCOMPLETE: "INCOMPLETE"}[image.status]


class BackupsScreen(ListScreen):
    STEP = "1/7 Backups found"
    HELP = """\
The banks searched and the machines whose backups they hold. For each
machine: how many vaults (one per backed-up filesystem), the date of its
newest good image, and whether its disk layout was captured (a restore
needs it). Enter chooses a machine; r searches again (after plugging in a
disk or mounting a backup partition)."""
    BINDINGS = [
        Binding("enter", "choose", "Choose", priority=True, key_display="Enter"),
        Binding("r", "rescan", "Search again"),
        Binding("q", "app.quit_wizard", "Quit"),
    ]
    STATUS = ("banks", "Looking for backups...")
    TABLE = ("machines", ("Machine", "Vaults", "Newest good image", "Layout", "Notes"))
    DETAIL = "warnings"
    FAILED = "Searching for backups failed."

    def __init__(self) -> None:
        super().__init__()
        self.discovery: Discovery | None = None

    def on_mount(self) -> None:
        self.rescan()

    def action_rescan(self) -> None:
        self.rescan()

    def rescan(self) -> None:
        self.status(self.STATUS[1])
        self.table().clear()
        self.discover()

    @work(thread=True, exclusive=True, group="discover")
    def discover(self) -> None:
        self.post_answer(lambda: DiscoveryDone(self.engine.discover(), self.engine.interrupted()))

    @on(DiscoveryDone)
    def show(self, message: DiscoveryDone) -> None:
        found = message.discovery
        self.discovery = found
        if found.banks:
            banks = "Banks: " + ", ".join(str(b) for b in found.banks)
        else:
            banks = "No bank found. Mount the backup partition on /backup or start with --bank DIR."
        self.status(banks)
        table = self.table()
        table.clear()
        for machine in found.machines:
            table.add_row(*self.row(machine), key=machine.client)
        warnings = list(found.warnings)
        if not found.machines and found.banks:
            warnings.append("The banks hold no machine with images.")
        self.detail("\n".join(f"! {w}" for w in warnings) if warnings else "")
        table.focus()
        if message.interrupted is not None:
            self.wizard.offer_resume(message.interrupted)

    def row(self, machine: Machine) -> tuple[str, ...]:
        chosen = self.engine.choose(machine)
        newest = max((image_date(i) for i in chosen.values()), default="none")
        has_layout = any(i.layout_dir is not None for i in chosen.values())
        notes = []
        bad = sum(1 for v in machine.vaults for i in v.images if not i.usable)
        missing = missing_vaults(machine, chosen)
        if missing:
            notes.append(f"no good image: {', '.join(missing)}")
        if bad:
            notes.append(f"{bad} failed/incomplete")
        return (machine.client, str(len(machine.vaults)), newest,
                "yes" if has_layout else "NO", "; ".join(notes) or "-")

    def selected(self) -> Machine | None:
        table = self.table()
        if self.discovery is None or not self.discovery.machines or table.row_count == 0:
            return None
        return self.discovery.machines[table.cursor_row]

    @on(DataTable.RowSelected)
    def action_choose(self) -> None:
        machine = self.selected()
        if machine is None:
            self.notify("No machine to choose.", severity="warning")
            return
        self.wizard.choose_machine(machine)


class ImagesScreen(WizardScreen):
    STEP = "2/7 Images"
    HELP = """\
Every image of every vault of the machine, newest first. '*' marks the
image that will be restored for each vault: the newest good one unless
you choose another with Enter. Images that FAILED or are INCOMPLETE (the
backup died or is still running) are shown but cannot be chosen.
x leaves the highlighted vault out of the restore (its filesystem is made
empty), or takes it back in. n goes on to choose the target disk."""
    BINDINGS = [
        Binding("enter", "choose", "Use this image", priority=True, key_display="Enter"),
        Binding("x", "skip", "Leave out"),
        Binding("n", "next", "Next"),
        Binding("q", "app.quit_wizard", "Quit"),
    ]

    def __init__(self, machine: Machine, chosen: dict[str, Image]) -> None:
        super().__init__()
        self.machine = machine
        self.chosen = chosen
        self.skipped: set[str] = set()
        self.images: list[Image] = []

    def compose(self) -> ComposeResult:
        yield from self.compose_title()
        yield Static(f"Machine {self.machine.client}: {len(self.machine.vaults)} vaults", markup=False)
        table: DataTable = MarkedTable(id="images", cursor_type="row")
        table.add_columns("Use", "Vault", "Image", "Date", "Status", "Size", "Layout")
        yield table
        yield Static("", id="detail", markup=False)
        yield from self.compose_footer()

    def on_mount(self) -> None:
        self.fill()
        self.query_one("#images", DataTable).focus()

    def fill(self) -> None:
        table = self.query_one("#images", DataTable)
        row = table.cursor_row
        table.clear()
        self.images = []
        for vault in self.machine.vaults:
            for image in reversed(vault.images):
                self.images.append(image)
                if vault.name in self.skipped:
                    mark = "out"
                else:
                    mark = "*" if self.chosen.get(vault.name) == image else ""
                table.add_row(mark, vault.name, image.name, image_date(image), status_word(image),
                              human(image.size) if image.size is not None else "?",
                              "yes" if image.layout_dir else "-")
        if self.images:
            table.move_cursor(row=min(row, len(self.images) - 1))
        self.describe()

    @on(DataTable.RowHighlighted)
    def describe(self) -> None:
        table = self.query_one("#images", DataTable)
        if not self.images:
            return
        image = self.images[table.cursor_row]
        lines = [f"{image.vault}: {image.source} from {image.client}, {image.path}"]
        if not image.usable:
            lines.append(f"Not restorable: {image.status_text or image.status.value}")
        self.query_one("#detail", Static).update("\n".join(lines))

    @on(DataTable.RowSelected)
    def action_choose(self) -> None:
        if not self.images:
            return
        image = self.images[self.query_one("#images", DataTable).cursor_row]
        if not image.usable:
            self.notify(f"{image.vault} {image.name} is {status_word(image)}: it cannot be restored.",
                        severity="error")
            return
        self.chosen[image.vault] = image
        self.skipped.discard(image.vault)
        self.fill()

    def action_skip(self) -> None:
        if not self.images:
            return
        vault = self.images[self.query_one("#images", DataTable).cursor_row].vault
        if vault in self.skipped:
            self.skipped.discard(vault)
        else:
            self.skipped.add(vault)
        self.fill()

    def action_next(self) -> None:
        missing = missing_vaults(self.machine, self.chosen, tuple(self.skipped))
        if missing:
            self.notify(f"No good image chosen for: {', '.join(missing)}. Choose one, or x leaves "
                        "the vault out.", severity="error")
            return
        if len(self.skipped) == len(self.machine.vaults):
            self.notify("Every vault is left out: there would be nothing to restore.", severity="error")
            return
        order = [v.name for v in self.machine.vaults]
        self.wizard.choose_images(dict(self.chosen), tuple(sorted(self.skipped, key=order.index)))
