"""Steps 6 and 7: the restore running, its result, and what to do when a step fails."""

from __future__ import annotations

import threading

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, RichLog, Static

from rescue.errors import Aborted, Exit, RescueError
from rescue.events import Output, PlanDone, PlanStarted, Progress, StepDone, StepFailed, StepSkipped, StepStarted
from rescue.tui.facade import Interrupted
from rescue.tui.messages import EngineEvent, RunEnded
from rescue.tui.review import Review, duration, hang, human
from rescue.tui.screens.base import WizardScreen, error_text, unexpected

BAR = 30


def progress_line(p: Progress) -> str:
    """'copy:home [#####.....]  45%  1.2 GiB/2.6 GiB  1200/3000 files  ETA 1:02'"""
    frac = p.bytes_done / p.bytes_total if p.bytes_total else 0.0
    filled = int(frac * BAR)
    bar = "#" * filled + "." * (BAR - filled)
    counts = [f"{human(p.bytes_done)} of {human(p.bytes_total)}"]
    if p.files_total:
        counts.append(f"{p.files_done}/{p.files_total} files")
    elif p.files_done:  # a target that keeps no file count (btrfs) shows none, not "0 files"
        counts.append(f"{p.files_done} files")
    counts.append(f"ETA {duration(p.eta_seconds)}")
    return f"{p.key} [{bar}] {int(frac * 100):>3}%\n" + ", ".join(counts)


class ProgressScreen(WizardScreen):
    STEP = "6/7 Restoring"
    HELP = """\
Each step of the restore with its state: wait, run, done, skip (done in
an earlier run), FAIL. The copy shows bytes and files with the time left.
The log below shows what every command printed.
c cancels: the restore stops at the next safe point (a copy stops part
way, any other step when it ends) and can be resumed later: start rescue
wizard again and it offers to. l shows the whole log."""
    BINDINGS = [
        Binding("escape", "noop", show=False),
        Binding("c", "cancel", "Cancel"),
        Binding("l", "app.view_log", "Log"),
    ]

    def __init__(self, review: Review, resume: bool = False) -> None:
        super().__init__()
        self.review = review
        self.resume = resume
        self.stop = threading.Event()
        self.finished = False
        self.done_event: PlanDone | None = None
        self.failed_step: StepFailed | None = None

    def compose(self) -> ComposeResult:
        yield from self.compose_title()
        yield Static(f"Restoring {self.review.client} onto {self.review.target}", id="status", markup=False)
        table: DataTable = DataTable(id="steps", cursor_type="none", show_cursor=False)
        table.add_column("State", key="state", width=5)
        table.add_column("Step", key="step")
        for i, step in enumerate(self.review.steps):
            table.add_row("wait", step[:70], key=str(i))
        yield table
        yield Static("", id="copy", markup=False)
        yield RichLog(id="log", max_lines=2000, markup=False, highlight=False, wrap=False)
        yield from self.compose_footer()

    def on_mount(self) -> None:
        self.start()

    def on_unmount(self) -> None:
        # the wizard is going away (e.g. its terminal closed): stop at the next safe point
        self.stop.set()

    def start(self) -> None:
        self.stop.clear()
        self.finished = False
        self.done_event = None
        self.failed_step = None
        self.execute()

    def restart(self) -> None:
        """Retry after a failure: the journal makes the engine resume where it stopped."""
        self.resume = True
        for i in range(len(self.review.steps)):
            if self.cell(i) in ("run", "FAIL"):
                self.set_state(i, "wait")
        self.query_one("#status", Static).update(f"Resuming {self.review.client} onto {self.review.target}")
        self.start()

    @work(thread=True, exclusive=True, group="run")
    def execute(self) -> None:
        try:
            self.engine.run(self.review, lambda ev: self.post_message(EngineEvent(ev)), self.stop)
        except Aborted as e:
            self.post_message(RunEnded(e, cancelled=True))
        except RescueError as e:
            self.post_message(RunEnded(e))
        except Exception as e:  # noqa: BLE001 - a bug must not leave the console dead
            self.post_message(RunEnded(unexpected(e)))
        else:
            self.post_message(RunEnded(None))

    def cell(self, index: int) -> str:
        return str(self.query_one("#steps", DataTable).get_cell(str(index), "state"))

    def set_state(self, index: int, state: str) -> None:
        table = self.query_one("#steps", DataTable)
        if 0 <= index < table.row_count:
            table.update_cell(str(index), "state", state)
            if state == "run":
                table.move_cursor(row=index)

    @on(EngineEvent)
    def draw(self, message: EngineEvent) -> None:
        ev = message.event
        line: str | None = None
        if isinstance(ev, PlanStarted):
            line = f"restore started: {ev.total_steps} steps" + (" (resuming)" if ev.resumed else "")
        elif isinstance(ev, StepStarted):
            self.set_state(ev.index, "run")
            line = f"[{ev.index + 1}/{ev.total}] {ev.description}"
        elif isinstance(ev, StepSkipped):
            self.set_state(ev.index, "skip")
            line = f"skip (done earlier): {ev.description}"
        elif isinstance(ev, Progress):
            self.query_one("#copy", Static).update(progress_line(ev))
        elif isinstance(ev, Output):
            line = f"  {ev.line}"
        elif isinstance(ev, StepDone):
            self.set_state(ev.index, "done")
            line = f"done {ev.key} in {duration(ev.seconds)}"
        elif isinstance(ev, StepFailed):
            self.failed_step = ev
            self.set_state(ev.index, "FAIL")
            line = f"FAILED {ev.key}: {ev.message}"
        elif isinstance(ev, PlanDone):
            self.done_event = ev
            line = f"restore {'finished' if ev.ok else 'ended'} in {duration(ev.seconds)}"
        if line is not None:
            self.query_one("#log", RichLog).write(line)
            self.wizard.log_lines.append(line)

    @on(RunEnded)
    def ended(self, message: RunEnded) -> None:
        self.finished = True
        if message.error is None and self.done_event is not None and self.done_event.ok:
            self.wizard.restore_done(self.done_event)
        elif message.cancelled:
            self.query_one("#status", Static).update("Cancelled.")
            self.wizard.restore_failed(self, message.error, self.failed_step, cancelled=True)
        else:
            error = message.error or RescueError("the restore ended without finishing")
            self.wizard.restore_failed(self, error, self.failed_step)
            refused = self.failed_step is None and self.wizard.outcome in (Exit.REFUSED, Exit.UNSAFE)
            self.query_one("#status", Static).update("Refused: nothing more was written." if refused
                                                     else "A step failed.")

    def action_cancel(self) -> None:
        if self.finished:
            return
        self.stop.set()
        self.query_one("#status", Static).update(
            "Cancelling: the restore stops at the next safe point...")
        self.notify("Cancelling: nothing more is started; the restore can be resumed.")


class ResultScreen(WizardScreen):
    STEP = "7/7 Result"
    HELP = """\
The restore finished; above is the verification summary (keep it: l shows
the full log). Take the backup disk out before rebooting so the machine
boots from the restored disk. r reboots, p powers off, s opens a shell
(exit the shell to come back), q leaves the wizard."""
    BINDINGS = [
        Binding("escape", "noop", show=False),
        Binding("r", "app.power('reboot')", "Reboot"),
        Binding("p", "app.power('poweroff')", "Power off"),
        Binding("s", "app.shell", "Shell"),
        Binding("l", "app.view_log", "Log"),
        Binding("q", "app.quit_wizard", "Quit"),
    ]

    def __init__(self, review: Review, done: PlanDone) -> None:
        super().__init__()
        self.review = review
        self.done = done

    def compose(self) -> ComposeResult:
        yield from self.compose_title()
        head = (f"{self.review.client} is restored onto {self.review.target} "
                f"in {duration(self.done.seconds)}.")
        if self.done.incomplete:
            head += "\nINCOMPLETE: some files could not be read from the backup (see the log)."
        yield from self.compose_scroll("summary", hang(head + "\n\n" + self.done.summary))

    def on_mount(self) -> None:
        self.query_one("#summary").focus()


class FailedScreen(WizardScreen):
    STEP = "Restore stopped"
    HELP = """\
The restore stopped before it finished. What was done is recorded, so
r retries and goes on from the step that did not finish. l shows the log,
s opens a shell to look or repair (exit the shell to come back), a aborts:
the disk is left as it is, and rescue wizard offers to resume next time."""
    BINDINGS = [
        Binding("escape", "noop", show=False),
        Binding("r", "retry", "Retry"),
        Binding("l", "app.view_log", "Log"),
        Binding("s", "app.shell", "Shell"),
        Binding("a", "app.abort", "Abort"),
    ]

    def __init__(self, review: Review, error: RescueError | None, step: StepFailed | None,
                 cancelled: bool = False) -> None:
        super().__init__()
        self.review = review
        self.error = error
        self.step = step
        self.cancelled = cancelled

    def compose(self) -> ComposeResult:
        yield from self.compose_title()
        if self.cancelled:
            text = ("The restore was cancelled; nothing more is being written.\n"
                    f"{self.review.target} is only partly restored. r resumes now; or abort and "
                    "start rescue wizard again later: it offers to resume.")
        else:
            if self.step is not None:
                text = f"Step {self.step.index + 1} ({self.step.key}) failed:\n{self.step.message}"
                if self.error is not None and self.error.why:
                    text += f"\nWhy: {self.error.why}"
            else:
                text = error_text(self.error) if self.error else "The restore stopped."
            text += ("\n\nWhat was done is kept. Fix the cause (s opens a shell), then r retries "
                     "from the step that failed; a aborts and leaves the restore resumable.")
        yield from self.compose_scroll("error", text)

    def on_mount(self) -> None:
        self.query_one("#error").focus()

    def action_retry(self) -> None:
        self.wizard.retry()


class ResumeScreen(WizardScreen):
    STEP = "Unfinished restore found"
    HELP = """\
A restore was started earlier and did not finish (it was cancelled, a step
failed, or the power went). r resumes it: done steps are skipped, and you
type the target's name again first. n leaves it and starts a new restore;
q quits."""
    BINDINGS = [
        Binding("r", "resume", "Resume"),
        Binding("n", "new", "New restore"),
        Binding("q", "app.quit_wizard", "Quit"),
    ]

    def __init__(self, interrupted: Interrupted) -> None:
        super().__init__()
        self.interrupted = interrupted

    def compose(self) -> ComposeResult:
        i = self.interrupted
        yield from self.compose_title()
        when = f", started {i.started.replace('T', ' ')[:16]}" if i.started else ""
        yield Static(
            f"An unfinished restore of {i.client} onto {i.target} was found{when}:\n"
            f"{i.steps_done} of {i.steps_total} steps done.\n\n"
            "r resumes it (done steps are skipped), n starts a new restore, q quits.",
            id="body", markup=False)
        yield from self.compose_scroll("steps", hang("\n".join(
            f"{'done' if n < i.steps_done else 'todo'}  {s}" for n, s in enumerate(i.review.steps))))

    def on_mount(self) -> None:
        self.query_one("#steps").focus()

    def action_resume(self) -> None:
        self.wizard.resume(self.interrupted)

    def action_new(self) -> None:
        self.app.pop_screen()
