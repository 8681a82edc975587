"""Steps 3 and 4: the target disk, and the review of what will be done to it."""

from __future__ import annotations

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import DataTable, Static

from rescue.backups.model import Image, Machine
from rescue.errors import RescueError
from rescue.plan.disks import CapturedDisk
from rescue.target import TargetDisk
from rescue.tui.facade import unfit
from rescue.tui.messages import DisksFound, PlanReady, WorkFailed
from rescue.tui.review import Review, hang, human
from rescue.tui.screens.base import ListScreen, WizardScreen, error_text
from rescue.tui.screens.common import SizesScreen, TextScreen


def contents(disk: TargetDisk) -> str:
    """What is on a disk now, in a few words."""
    if disk.empty:
        return "empty"
    if not disk.partitions:
        return ", ".join(disk.signatures) or "unknown data"
    kinds = sorted({p.fstype or "?" for p in disk.partitions})
    table = f"{disk.pttype} " if disk.pttype else ""
    return f"{table}{len(disk.partitions)} parts: {', '.join(kinds)}"


def describe_disk(disk: TargetDisk, unfit: str | None = None) -> str:
    lines = [f"{disk.device}  {disk.model or 'unknown model'}  {human(disk.size)}"
             + (f"  serial {disk.serial}" if disk.serial else "")]
    reasons = disk.unsafe_reasons
    if reasons:
        lines.append("NOT SELECTABLE: " + "; ".join(reasons))
    elif unfit:
        lines.append(f"THE RESTORE DOES NOT FIT: {unfit}")
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
you can see them, but cannot be chosen. Disks marked NO FIT cannot hold
this restore (too small for what the backup holds): the reason is shown
below the list, and the review says what to do. Enter chooses the
highlighted disk; r looks again (after plugging in a disk)."""
    SEVERAL_HELP = """\

This machine had several disks, each with its own partition table: the
wizard asks a new disk for each captured disk in turn (the line above the
list names it, with its size, serial and what was mounted from it). A
disk already chosen for another captured disk cannot be chosen again.
x leaves the captured disk out: nothing of it is restored and the review
warns which vaults are left out; for a machine of mirrored disks (RAID1)
one new disk is enough, its arrays then come back degraded (the review
says so). Esc goes back to the previous captured disk."""
    BINDINGS = [
        Binding("enter", "choose", "Choose", priority=True, key_display="Enter"),
        Binding("x", "leave_out", "Leave this disk out"),
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
        self.unfit: dict[str, str] = {}
        # a machine with several captured disks: each is asked in turn (asking: its index)
        self.captured: tuple[CapturedDisk, ...] = ()
        self.asking = 0
        self.chosen: dict[str, TargetDisk | None] = {}  # captured device -> its new disk, None: left out
        self.released = ""  # what killed earlier restores left, released before looking (said once)

    @property
    def several(self) -> bool:
        return len(self.captured) > 1

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "leave_out":
            return self.several  # only a machine with several disks leaves one out
        return True

    def on_mount(self) -> None:
        self.probe()

    def action_rescan(self) -> None:
        self.status(self.STATUS[1])
        self.probe()

    @work(thread=True, exclusive=True, group="probe")
    def probe(self) -> None:
        def found() -> DisksFound:
            released = self.engine.release_leftovers()
            disks = self.engine.disks()
            w = self.wizard
            if w.machine is None:
                return DisksFound(disks, released=released)
            chosen = tuple(w.images[v.name] for v in w.machine.vaults if v.name in w.images)
            captured = self.engine.captured_disks(w.machine, chosen)
            if len(captured) > 1:  # which disk fits is said by the whole plan, in the review
                return DisksFound(disks, released=released, captured=captured)
            return DisksFound(disks, unfit(self.engine, w.machine, chosen, disks, w.skipped), released)

        self.post_answer(found)

    @on(DisksFound)
    def show(self, message: DisksFound) -> None:
        self.disks = message.disks
        self.unfit = message.unfit
        if message.captured != self.captured:
            self.captured, self.asking, self.chosen = message.captured, 0, {}
        self.refresh_bindings()
        if self.several:
            self.HELP = TargetScreen.HELP + self.SEVERAL_HELP
            self.released = "".join(f"{line}\n" for line in message.released)
            self.ask()
            return
        safe = sum(1 for d in self.disks if not d.unsafe_reasons)
        fits = safe - len(self.unfit)
        released = "".join(f"{line}\n" for line in message.released)
        self.status(f"{released}{len(self.disks)} disks, {safe} can be chosen, {fits} can hold this restore. "
                    "The chosen disk is erased.")
        table = self.table()
        table.clear()
        for disk in self.disks:
            state = "UNSAFE" if disk.unsafe_reasons else "NO FIT" if disk.device in self.unfit else "ok"
            table.add_row(disk.device, (disk.model or "-")[:20], human(disk.size), contents(disk)[:24],
                          state, key=disk.device)
        # start on a safe disk that fits, an empty one if there is one: never on the backup or the system
        safe = [i for i, d in enumerate(self.disks) if not d.unsafe_reasons]
        safe = [i for i in safe if self.disks[i].device not in self.unfit] or safe
        first_safe = next((i for i in safe if self.disks[i].empty), safe[0] if safe else 0)
        if self.disks:
            table.move_cursor(row=first_safe)
        table.focus()
        self.describe()

    # a machine with several disks: one question per captured disk

    def taken_by(self, disk: TargetDisk) -> str | None:
        """The captured disk this disk is already the new disk of."""
        return next((old for old, new in self.chosen.items() if new is not None and new.device == disk.device),
                    None)

    def ask(self) -> None:
        """The question for the captured disk at self.asking: the list, with the disks taken marked."""
        old = self.captured[self.asking]
        answered = [f"{o} -> {n.device if n else 'left out'}" for o, n in self.chosen.items()]
        self.status(f"{self.released}New disk for captured {old.shown()}, {self.asking + 1} of "
                    f"{len(self.captured)}" + (f" ({'; '.join(answered)})" if answered else "")
                    + ". Enter chooses it, x leaves it out"
                    + (" (a mirror's half: its arrays then come back degraded)" if old.whole else "")
                    + ". The chosen disk is erased.")
        table = self.table()
        table.clear()
        for disk in self.disks:
            taken = self.taken_by(disk)
            state = ("UNSAFE" if disk.unsafe_reasons else f"for {taken.rsplit('/', 1)[-1]}" if taken else "ok")
            table.add_row(disk.device, (disk.model or "-")[:20], human(disk.size), contents(disk)[:24],
                          state, key=disk.device)
        free = [i for i, d in enumerate(self.disks) if not d.unsafe_reasons and not self.taken_by(d)]
        first = next((i for i in free if self.disks[i].empty), free[0] if free else 0)
        if self.disks:
            table.move_cursor(row=first)
        table.focus()
        self.describe()

    def answer(self, disk: TargetDisk | None) -> None:
        """This captured disk's new disk (None: left out); then the next question, or the review."""
        self.chosen[self.captured[self.asking].device] = disk
        if self.asking + 1 < len(self.captured):
            self.asking += 1
            self.ask()
            return
        if all(new is None for new in self.chosen.values()):
            del self.chosen[self.captured[self.asking].device]
            self.notify("Every disk is left out: there would be nothing to restore. Choose a new disk "
                        "for at least one.", severity="error")
            return
        pairs = tuple((old, new) for old, new in self.chosen.items() if new is not None)
        left_out = tuple(old for old, new in self.chosen.items() if new is None)
        # coming back from the review asks the last captured disk again
        del self.chosen[self.captured[self.asking].device]
        self.ask()
        self.wizard.choose_targets(pairs, left_out)

    def action_leave_out(self) -> None:
        if self.several and self.disks:
            self.answer(None)

    def action_back(self) -> None:
        if self.several and self.asking > 0:
            self.asking -= 1
            self.chosen.pop(self.captured[self.asking].device, None)
            self.ask()
            return
        super().action_back()

    @on(DataTable.RowHighlighted)
    def describe(self) -> None:
        if not self.disks:
            return
        disk = self.disks[self.table().cursor_row]
        text = describe_disk(disk, self.unfit.get(disk.device))
        taken = self.taken_by(disk) if self.several else None
        if taken and not disk.unsafe_reasons:
            text = text.replace("All of this will be destroyed by the restore.", "")
            text = f"{text.rstrip()}\nALREADY CHOSEN as the new disk for captured {taken} (Esc goes back to it)."
        self.detail(text)

    @on(DataTable.RowSelected)
    def action_choose(self) -> None:
        if not self.disks:
            self.notify("No disk to choose.", severity="warning")
            return
        disk = self.disks[self.table().cursor_row]
        if disk.unsafe_reasons:
            self.notify(f"{disk.device} cannot be chosen: the reasons are shown below.", severity="error")
            return
        if self.several:
            taken = self.taken_by(disk)
            if taken:
                self.notify(f"{disk.device} is already the new disk for captured {taken}.", severity="error")
                return
            self.answer(disk)
            return
        self.wizard.choose_target(disk)


def review_text(r: Review) -> str:
    """The review as plain text: readable on any terminal, with or without colour.

    What the restore destroys comes first, then the plan in a few lines, then the details."""
    if r.targets:
        out = [f"Restore {r.client} onto {len(r.targets)} disks: {r.shown_targets}.", ""]
    else:
        out = [f"Restore {r.client} onto {r.target} ({r.target_model or 'unknown model'}, "
               f"{human(r.target_size)}).", ""]
    if r.disks:
        out += ["Every captured disk of the machine and its new disk (each new disk is erased):"]
        out += [f"  {line}" for line in r.disks] + [""]
    if r.destroyed:
        out += [f"On {r.target} now, and DESTROYED by the restore:"] + [f"  - {d}" for d in r.destroyed]
    else:
        out.append(f"On {r.target} now: nothing, the disk is blank.")
    out += ["", "In short:", f"  {len(r.rows)} partitions on a {r.table_label} table "
            f"(old disk {human(r.old_disk_size)}, new disk {human(r.target_size)})"]
    out += [f"  {row.type:<12} {human(row.new_size):>9}"
            + (f"  ({row.note} from {human(row.old_size)})" if row.note in ("grows", "shrinks") else "")
            for row in r.rows]
    files = f" in {r.files_to_copy} files" if r.files_to_copy else ""
    out.append(f"  copy {human(r.bytes_to_copy)}{files}, {len(r.steps)} steps")
    if r.snapshots:
        if r.btrfs_snapshots == "restore":
            out.append(f"  btrfs snapshots: RESTORED as subvolumes holding their data, where a vault holds "
                       f"their files (b leaves them out): {', '.join(r.snapshots)}")
        else:
            out.append(f"  btrfs snapshots: LEFT OUT (b restores them as subvolumes): {', '.join(r.snapshots)}")
    if r.warnings:
        out += ["", "Warnings:"] + [f"  ! {w}" for w in r.warnings]
    out += ["", "Details", "", f"{'':<20} {'old: start':>10} {'size':>9} | {'new: start':>10} {'size':>9}"]
    for row in r.rows:
        out.append(f"{row.number:>2} {row.type[:17]:<17} {human(row.old_start):>10} {human(row.old_size):>9} | "
                   f"{human(row.new_start):>10} {human(row.new_size):>9}  {row.note}")
    out += ["", "Filesystems (made with the captured UUID and label):"]
    for fs in r.filesystems:
        out.append(f"  {fs.device:<14} {fs.fstype:<5} {fs.mountpoint or '-':<10} label {fs.label or '-'}")
        out.append(f"  {'':<14} UUID {fs.uuid or 'new'}")
    out += ["", f"Copy {human(r.bytes_to_copy)}{files}:"]
    for c in r.copies:
        out.append(f"  {c.vault:<12} {c.image:<16} -> {c.mountpoint:<10} {human(c.bytes):>10}"
                   + (f" {c.files} files" if c.files else ""))
    if r.migrations:
        out += ["", "Size changes:"] + [f"  {m}" for m in r.migrations]
    out += ["", f"Steps ({len(r.steps)}):"] + [f"  {i + 1:>2}. {s}" for i, s in enumerate(r.steps)]
    return hang("\n".join(out))


def sizes_text(sizes: tuple[tuple[str, int], ...]) -> str:
    """'/home=20G swap=1G', as the person typed them (and as rescue plan --size takes them)."""
    return " ".join(f"{where}={human(size).replace(' ', '').replace('iB', '')}" for where, size in sizes)


MORE_BELOW = "v More below: Down or PageDown scrolls (partition table, filesystems, steps)"


class ReviewScreen(WizardScreen):
    STEP = "4/7 Review"
    HELP = """\
What the restore will do, before anything is written. First what is on
the target disk now and will be destroyed (or that it is blank), then the
plan in short: each partition's new size and what grows or shrinks. Below
(Down, PageDown, End) the old and new partition table side by side, the
filesystems with the UUIDs and labels they keep (so fstab and grub still
find them), the bytes to copy, and every step in order. s shows the
restore script, which does the same by hand. z sets partition sizes (which
filesystem grows or shrinks) and plans again. A machine with btrfs
snapshots: b switches between leaving them out (the default, listed) and
restoring them as subvolumes holding their data, and plans again.
n goes on to the confirmation."""
    BINDINGS = [
        Binding("n", "next", "Next: confirm"),
        Binding("s", "script", "Script"),
        Binding("z", "sizes", "Sizes"),
        Binding("b", "snapshots", "Snapshots", show=False),  # said in the review when there are any
        Binding("q", "app.quit_wizard", "Quit"),
    ]

    def __init__(self, machine: Machine, images: tuple[Image, ...], target: TargetDisk | tuple[TargetDisk, ...],
                 skipped: tuple[str, ...] = (), disk_map: tuple[tuple[str, str], ...] = (),
                 skip_disks: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.machine = machine
        self.images = images
        self.target = target  # several, in disk_map's order, for a machine with several disks
        self.skipped = skipped
        self.disk_map = disk_map  # (captured, new) per captured disk restored, as --target OLD=NEW
        self.skip_disks = skip_disks  # captured disks left out, as --skip-disk
        self.sizes: tuple[tuple[str, int], ...] = ()  # set with z; empty: the plan's own
        self.snapshots: str | None = None  # set with b (leave-out or restore); None: as the wizard was started
        self.review: Review | None = None

    def compose(self) -> ComposeResult:
        yield from self.compose_title()
        with VerticalScroll(id="review"):
            onto = " and ".join(t.device for t in (self.target if isinstance(self.target, tuple) else (self.target,)))
            yield Static(f"Planning the restore of {self.machine.client} onto {onto}...",
                         id="body", markup=False)
        yield Static("", id="more", markup=False)
        yield from self.compose_footer()

    def on_mount(self) -> None:
        scroll = self.query_one("#review", VerticalScroll)
        scroll.focus()
        self.watch(scroll, "scroll_y", self.hint_more, init=False)
        self.watch(scroll, "virtual_size", self.hint_more, init=False)
        self.build()

    def hint_more(self) -> None:
        """'More below' while there is more below, so nobody takes the first page for all of it."""
        scroll = self.query_one("#review", VerticalScroll)
        more = self.review is not None and scroll.scroll_y < scroll.max_scroll_y
        self.query_one("#more", Static).update(MORE_BELOW if more else "")

    @work(thread=True, exclusive=True, group="plan")
    def build(self) -> None:
        chosen = {"snapshots": self.snapshots} if self.snapshots else {}
        if self.disk_map or self.skip_disks:
            self.post_answer(lambda: PlanReady(self.engine.plan(
                self.machine, self.images, self.target, self.skipped, self.sizes,
                disk_map=self.disk_map, skip_disks=self.skip_disks, **chosen)))
            return
        self.post_answer(lambda: PlanReady(self.engine.plan(self.machine, self.images, self.target,
                                                            self.skipped, self.sizes, **chosen)))

    @on(WorkFailed)
    def failed(self, message: WorkFailed) -> None:
        self.query_one("#body", Static).update(
            "This restore cannot work; nothing has been written.\n\n" + error_text(message.error)
            + "\n\nz sets other partition sizes; Esc goes back to choose another image or disk.")
        self.hint_more()

    @on(PlanReady)
    def show(self, message: PlanReady) -> None:
        self.review = message.review
        text = review_text(message.review)
        if self.sizes:
            text = f"Sizes you set: {sizes_text(self.sizes)}\n{text}"
        self.query_one("#body", Static).update(text)
        self.call_after_refresh(self.hint_more)

    def action_script(self) -> None:
        if self.review is None:
            return
        self.app.push_screen(TextScreen(f"restore.sh for {self.review.client} onto {self.review.shown_targets}",
                                        self.review.script))

    def action_sizes(self) -> None:
        """Change which filesystem grows or shrinks; the engine plans again and the review is shown anew."""
        from rescue.commands.plan import parse_sizes

        rows = "\n".join(f"  {row.number:>2} {row.type[:17]:<17} now {human(row.new_size):>9}"
                         f" (was {human(row.old_size)})" for row in self.review.rows) if self.review else ""

        def answered(typed: str | None) -> None:
            if typed is None:
                return
            try:
                sizes = parse_sizes(typed.split())
            except RescueError as e:
                self.notify(error_text(e).replace("--size ", ""), severity="error")
                return
            self.sizes = sizes
            self.review = None
            asked = sizes_text(sizes) or "the plan's own sizes"
            self.query_one("#body", Static).update(f"Planning again with {asked}...")
            self.build()

        self.app.push_screen(SizesScreen(sizes_text(self.sizes), rows), answered)

    def action_snapshots(self) -> None:
        """Switch what becomes of the btrfs snapshots; the engine plans again and the review is shown anew."""
        if self.review is None or not self.review.snapshots:
            self.notify("This machine has no btrfs snapshots to choose about.", severity="warning")
            return
        self.snapshots = "leave-out" if self.review.btrfs_snapshots == "restore" else "restore"
        self.review = None
        shown = "restoring" if self.snapshots == "restore" else "leaving out"
        self.query_one("#body", Static).update(f"Planning again, {shown} the btrfs snapshots...")
        self.build()

    def action_next(self) -> None:
        if self.review is None:
            self.notify("There is no plan to confirm.", severity="warning")
            return
        self.wizard.confirm(self.review)
