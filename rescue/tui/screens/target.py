"""Steps 3 and 4: the target disk, and the review of what will be done to it."""

from __future__ import annotations

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import DataTable, Static

from rescue.backups.model import Image, Machine
from rescue.target import TargetDisk
from rescue.tui.messages import DisksFound, PlanReady, WorkFailed
from rescue.tui.review import Review, hang, human
from rescue.tui.screens.base import ListScreen, WizardScreen, error_text
from rescue.tui.screens.common import TextScreen


def contents(disk: TargetDisk) -> str:
    """What is on a disk now, in a few words."""
    if disk.empty:
        return "empty"
    if not disk.partitions:
        return ", ".join(disk.signatures) or "unknown data"
    kinds = sorted({p.fstype or "?" for p in disk.partitions})
    table = f"{disk.pttype} " if disk.pttype else ""
    return f"{table}{len(disk.partitions)} parts: {', '.join(kinds)}"


def describe_disk(disk: TargetDisk) -> str:
    lines = [f"{disk.device}  {disk.model or 'unknown model'}  {human(disk.size)}"
             + (f"  serial {disk.serial}" if disk.serial else "")]
    reasons = disk.unsafe_reasons
    if reasons:
        lines.append("NOT SELECTABLE: " + "; ".join(reasons))
    for p in disk.partitions:
        what = " ".join(x for x in (p.fstype, f"label {p.label}" if p.label else None,
                                    f"on {', '.join(p.mountpoints)}" if p.mountpoints else None) if x)
        lines.append(f"  {p.device} {human(p.size)} {what}")
    if disk.signatures:
        lines.append("  signatures on the disk: " + ", ".join(disk.signatures))
    if not reasons and not disk.empty:
        lines.append("All of this will be destroyed by the restore.")
    return "\n".join(lines)


class TargetScreen(ListScreen):
    STEP = "3/7 Target disk"
    HELP = """\
Every disk of this machine with its model, size and what is on it now.
The restore erases the disk you choose. Disks marked UNSAFE hold the
backup, the running system or mounted filesystems: they are listed so
you can see them, but cannot be chosen. Enter chooses the highlighted
disk; r looks again (after plugging in a disk)."""
    BINDINGS = [
        Binding("enter", "choose", "Choose", priority=True, key_display="Enter"),
        Binding("r", "rescan", "Look again"),
        Binding("q", "app.quit_wizard", "Quit"),
    ]
    STATUS = ("status", "Looking at the disks...")
    TABLE = ("disks", ("Disk", "Model", "Size", "Contents", "State"))
    DETAIL = "detail"
    FAILED = "Looking at the disks failed."

    def __init__(self) -> None:
        super().__init__()
        self.disks: tuple[TargetDisk, ...] = ()

    def on_mount(self) -> None:
        self.probe()

    def action_rescan(self) -> None:
        self.status(self.STATUS[1])
        self.probe()

    @work(thread=True, exclusive=True, group="probe")
    def probe(self) -> None:
        self.post_answer(lambda: DisksFound(self.engine.disks()))

    @on(DisksFound)
    def show(self, message: DisksFound) -> None:
        self.disks = message.disks
        safe = sum(1 for d in self.disks if not d.unsafe_reasons)
        self.status(f"{len(self.disks)} disks, {safe} can be chosen. The chosen disk is erased.")
        table = self.table()
        table.clear()
        for disk in self.disks:
            table.add_row(disk.device, (disk.model or "-")[:20], human(disk.size), contents(disk)[:24],
                          "UNSAFE" if disk.unsafe_reasons else "ok", key=disk.device)
        # start on a safe disk, an empty one if there is one: never on the backup or the system
        safe = [i for i, d in enumerate(self.disks) if not d.unsafe_reasons]
        first_safe = next((i for i in safe if self.disks[i].empty), safe[0] if safe else 0)
        if self.disks:
            table.move_cursor(row=first_safe)
        table.focus()
        self.describe()

    @on(DataTable.RowHighlighted)
    def describe(self) -> None:
        if not self.disks:
            return
        self.detail(describe_disk(self.disks[self.table().cursor_row]))

    @on(DataTable.RowSelected)
    def action_choose(self) -> None:
        if not self.disks:
            self.notify("No disk to choose.", severity="warning")
            return
        disk = self.disks[self.table().cursor_row]
        if disk.unsafe_reasons:
            self.notify(f"{disk.device} cannot be chosen: the reasons are shown below.", severity="error")
            return
        self.wizard.choose_target(disk)


def review_text(r: Review) -> str:
    """The review as plain text: readable on any terminal, with or without colour."""
    out = [f"Restore {r.client} onto {r.target} ({r.target_model or 'unknown model'}, "
           f"{human(r.target_size)}).",
           f"Old disk {human(r.old_disk_size)}, new disk {human(r.target_size)}, "
           f"{r.table_label} partition table.", ""]
    out.append(f"{'':<20} {'old: start':>10} {'size':>9} | {'new: start':>10} {'size':>9}")
    for row in r.rows:
        out.append(f"{row.number:>2} {row.type[:17]:<17} {human(row.old_start):>10} {human(row.old_size):>9} | "
                   f"{human(row.new_start):>10} {human(row.new_size):>9}  {row.note}")
    out += ["", "Filesystems (made with the captured UUID and label):"]
    for fs in r.filesystems:
        out.append(f"  {fs.device:<14} {fs.fstype:<5} {fs.mountpoint or '-':<10} label {fs.label or '-'}")
        out.append(f"  {'':<14} UUID {fs.uuid or 'new'}")
    files = f" in {r.files_to_copy} files" if r.files_to_copy else ""
    out += ["", f"Copy {human(r.bytes_to_copy)}{files}:"]
    for c in r.copies:
        out.append(f"  {c.vault:<12} {c.image:<16} -> {c.mountpoint:<10} {human(c.bytes):>10}"
                   + (f" {c.files} files" if c.files else ""))
    if r.migrations:
        out += ["", "Size changes:"] + [f"  {m}" for m in r.migrations]
    if r.destroyed:
        out += ["", f"Destroyed on {r.target}:"] + [f"  {d}" for d in r.destroyed]
    if r.warnings:
        out += ["", "Warnings:"] + [f"  ! {w}" for w in r.warnings]
    out += ["", f"Steps ({len(r.steps)}):"] + [f"  {i + 1:>2}. {s}" for i, s in enumerate(r.steps)]
    return hang("\n".join(out))


class ReviewScreen(WizardScreen):
    STEP = "4/7 Review"
    HELP = """\
What the restore will do, before anything is written: the old and new
partition table side by side, the filesystems with the UUIDs and labels
they keep (so fstab and grub still find them), the bytes to copy, size
changes, and every step in order. s shows the restore script, which does
the same by hand. n goes on to the confirmation."""
    BINDINGS = [
        Binding("n", "next", "Next: confirm"),
        Binding("s", "script", "Script"),
        Binding("q", "app.quit_wizard", "Quit"),
    ]

    def __init__(self, machine: Machine, images: tuple[Image, ...], target: TargetDisk,
                 skipped: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.machine = machine
        self.images = images
        self.target = target
        self.skipped = skipped
        self.review: Review | None = None

    def compose(self) -> ComposeResult:
        yield from self.compose_title()
        with VerticalScroll(id="review"):
            yield Static(f"Planning the restore of {self.machine.client} onto {self.target.device}...",
                         id="body", markup=False)
        yield from self.compose_footer()

    def on_mount(self) -> None:
        self.query_one("#review").focus()
        self.build()

    @work(thread=True, exclusive=True, group="plan")
    def build(self) -> None:
        self.post_answer(lambda: PlanReady(self.engine.plan(self.machine, self.images, self.target,
                                                            self.skipped)))

    @on(WorkFailed)
    def failed(self, message: WorkFailed) -> None:
        self.query_one("#body", Static).update(
            "This restore cannot work; nothing has been written.\n\n" + error_text(message.error)
            + "\n\nEsc goes back to choose another image or disk.")

    @on(PlanReady)
    def show(self, message: PlanReady) -> None:
        self.review = message.review
        self.query_one("#body", Static).update(review_text(message.review))

    def action_script(self) -> None:
        if self.review is None:
            return
        self.app.push_screen(TextScreen(f"restore.sh for {self.review.client} onto {self.review.target}",
                                        self.review.script))

    def action_next(self) -> None:
        if self.review is None:
            self.notify("There is no plan to confirm.", severity="warning")
            return
        self.wizard.confirm(self.review)
