"""Steps 6 and 7: the restore running, its result, and what to do when a step fails."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from dataclasses import dataclass

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, RichLog, Static

from rescue.errors import Aborted, Exit, PlanRefused, RescueError
from rescue.events import Output, PlanDone, PlanStarted, Progress, StepDone, StepFailed, StepSkipped, StepStarted
from rescue.tui.facade import SHELL_MOUNT, Interrupted
from rescue.tui.messages import EngineEvent, RunEnded
from rescue.tui.review import Review, duration, hang, human
from rescue.tui.screens.base import WizardScreen, error_text, unexpected
from rescue.tui.screens.common import AskScreen, PassphraseScreen

BAR = 30  # characters of a progress bar. Drawn as [####....], not with Textual's ProgressBar: that one
# tells done from to-do by colour alone (the same line character in two colours), which a monochrome
# console or a serial line does not show; # and . read everywhere, and in the snapshot tests too.


def clock() -> str:
    """The wall-clock time a try started or ended, as a person at the console reads it."""
    return time.strftime("%H:%M:%S")


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


def seconds() -> float:
    """A monotonic clock for the elapsed time and the ETA (tests hold it still)."""
    return time.monotonic()


def whole_line(fraction: float, step: int, total: int, elapsed: float, eta: float | None) -> str:
    """'All     [#######........]  38%  step 10 of 15, 1:02 so far, ETA 3:10'"""
    filled = int(fraction * BAR)
    return (f"{'all':<{len('copy:home')}} [{'#' * filled}{'.' * (BAR - filled)}] {int(fraction * 100):>3}%\n"
            f"step {step} of {total}, {duration(elapsed)} so far, ETA {duration(eta)}")


class ProgressScreen(WizardScreen):
    STEP = "6/7 Restoring"
    HELP = """\
Each step of the restore with its state: wait, run, done, skip (done in
an earlier run), FAIL. The first bar is the whole restore (the bytes of
every vault plus a fixed share per other step) with the time left; the
second is the copy running now, with its bytes, files and time left.
The log below shows what every command printed.
c cancels, after you answer y: the restore stops at the next safe point
(a copy stops part way, any other step when it ends) and can be resumed
later: start rescue wizard again and it offers to. l shows the whole log."""
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
        self.last_step: StepStarted | None = None  # the step that ran last
        self.last_step_done = False
        self.started_at = ""  # the wall-clock time this try started, as HH:MM:SS

    def compose(self) -> ComposeResult:
        yield from self.compose_title()
        yield Static(f"Restoring {self.review.client} onto {self.review.shown_targets}", id="status",
                     markup=False)
        table: DataTable = DataTable(id="steps", cursor_type="none", show_cursor=False)
        table.add_column("State", key="state", width=5)
        table.add_column("Step", key="step")
        for i, step in enumerate(self.review.steps):
            table.add_row("wait", step[:70], key=str(i))
        yield table
        yield Static("", id="total", markup=False)
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
        self.last_step = None
        self.last_step_done = False
        self.started_at = clock()
        self.t0 = seconds()
        self.finished_weight = 0  # done or skipped steps' share
        self.earlier_weight = 0  # the share done by earlier runs (skipped now): not part of this run's speed
        self.copy_done = 0  # bytes of the copy running now
        self.ask_passphrases()

    def ask_passphrases(self) -> None:
        """Each LUKS passphrase the restore still needs, asked hidden and checked (nothing is
        written before); then the run. Esc on a question ends it: nothing written."""
        needed = getattr(self.engine, "luks_needed", None)
        try:
            missing = list(needed(self.review)) if needed else []
        except RescueError as e:  # a keyfile named but unreadable: said, nothing written
            self.post_message(RunEnded(e))
            return
        if not missing:
            self.execute()
            return
        uuid, name = missing[0]

        def answered(ok: bool | None) -> None:
            if ok:
                self.ask_passphrases()
            else:
                self.post_message(RunEnded(Aborted(f"no passphrase was given for LUKS {name}; nothing was written",
                                                   fix="start again and type one of its old passphrases"),
                                           cancelled=True))

        self.app.push_screen(PassphraseScreen(uuid, name, self.engine.check_luks_key), answered)

    def stop_point(self) -> str:
        """Where the run stopped, as a person reads it: 'in step 9 of 14 (copy ...)'."""
        s = self.last_step
        if s is None:
            return "before its first step"
        where = "after" if self.last_step_done else "in"
        return f"{where} step {s.index + 1} of {s.total} ({s.description})"

    def restart(self) -> None:
        """Retry after a failure: the journal makes the engine resume where it stopped."""
        self.resume = True
        for i in range(len(self.review.steps)):
            if self.cell(i) in ("run", "FAIL"):
                self.set_state(i, "wait")
        self.start()
        self.query_one("#status", Static).update(
            f"Try {len(self.wizard.tries) + 1}, started {self.started_at}: resuming {self.review.client} "
            f"onto {self.review.shown_targets}")

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
            self.last_step, self.last_step_done = ev, False
            self.set_state(ev.index, "run")
            line = f"[{ev.index + 1}/{ev.total}] {ev.description}"
        elif isinstance(ev, StepSkipped):
            self.finished_weight += self.review.weight(ev.index)
            self.earlier_weight += self.review.weight(ev.index)
            self.set_state(ev.index, "skip")
            line = f"skip (done earlier): {ev.description}"
        elif isinstance(ev, Progress):
            self.copy_done = ev.bytes_done
            self.query_one("#copy", Static).update(progress_line(ev))
        elif isinstance(ev, Output):
            line = f"  {ev.line}"
        elif isinstance(ev, StepDone):
            self.last_step_done = True
            self.finished_weight += self.review.weight(ev.index)
            self.copy_done = 0
            self.set_state(ev.index, "done")
            line = f"done {ev.key} in {duration(ev.seconds)}"
        elif isinstance(ev, StepFailed):
            self.failed_step = ev
            self.set_state(ev.index, "FAIL")
            line = f"FAILED {ev.key}: {ev.message}"
        elif isinstance(ev, PlanDone):
            self.done_event = ev
            line = f"restore {'finished' if ev.ok else 'ended'} in {duration(ev.seconds)}"
        self.draw_whole()
        if line is not None:
            self.query_one("#log", RichLog).write(line)
            self.wizard.log_lines.append(line)

    def draw_whole(self) -> None:
        """The whole restore's bar: done steps, plus the running copy's bytes, over every step's share."""
        total = sum(self.review.weight(i) for i in range(len(self.review.steps))) or 1
        running = self.last_step is not None and not self.last_step_done
        current = min(self.copy_done, self.review.weight(self.last_step.index)) if running and self.last_step else 0
        done = min(total, self.finished_weight + current)
        elapsed = seconds() - self.t0
        this_run = done - self.earlier_weight
        eta = (total - done) * elapsed / this_run if this_run > 0 and elapsed > 1 else None
        step = (self.last_step.index + 1) if self.last_step else 0
        self.query_one("#total", Static).update(whole_line(done / total, step, len(self.review.steps), elapsed,
                                                           eta))

    @on(RunEnded)
    def ended(self, message: RunEnded) -> None:
        self.finished = True
        while self.app.screen is not self and len(self.app.screen_stack) > 1:
            self.app.pop_screen()  # a question, the log or help still open: the result comes first
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
        """Ask first: the restore is long, and a stray key must not stop it."""
        if self.finished or self.stop.is_set():
            return

        def answered(yes: bool | None) -> None:
            if yes and not self.finished:
                self.stop.set()
                self.query_one("#status", Static).update(
                    "Cancelling: the restore stops at the next safe point...")
                self.notify("Cancelling: nothing more is started; the restore can be resumed.")

        self.app.push_screen(AskScreen(
            "Cancel the restore?",
            f"The restore is {self.stop_point()}. Cancelling stops it at the next safe point and "
            f"leaves {self.review.shown_targets} partly restored; it can be resumed later.\n"
            "The restore goes on while this question is open.",
            yes="cancel the restore", no="go on restoring"), answered)


class ResultScreen(WizardScreen):
    STEP = "7/7 Result"
    HELP = """\
The restore finished; above is the verification summary (keep it: l shows
the full log). Take the backup disk out before rebooting so the machine
boots from the restored disk. r reboots, p powers off, s opens a shell
with the restored filesystems mounted at /mnt/target (exit the shell to
come back; they are unmounted then), q leaves the wizard."""
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
        head = (f"{self.review.client} is restored onto {self.review.shown_targets} "
                f"in {duration(self.done.seconds)}.")
        if self.done.incomplete:
            head += "\nINCOMPLETE: some files could not be read from the backup (see the log)."
        yield from self.compose_scroll("summary", hang(head + "\n\n" + self.done.summary))

    def on_mount(self) -> None:
        self.query_one("#summary").focus()


def wizard_words(text: str) -> str:
    """The engine's advice names what to do on the command line; in the wizard that is r."""
    return (text.replace("rerun the same command", "press r to retry")
            .replace("and rerun", "and press r to retry"))


@dataclass(frozen=True)
class Try:
    """One run of the restore in this wizard: when it started and how it ended."""

    started: str  # HH:MM:SS
    result: str  # "failed in step 9 of 14 (copy ...)", "cancelled after step 3 of 14 (...)"


def tries_text(tries: tuple[Try, ...]) -> str:
    """Every try so far, so a retry that failed the same way is seen to have run."""
    if len(tries) < 2:
        return ""
    lines = [f"Tries in this wizard ({len(tries)}):"]
    lines += [f"  {n}. {t.started}  {t.result}" for n, t in enumerate(tries, 1)]
    if tries[-1].result == tries[-2].result:
        lines.append(f"The retry at {tries[-1].started} ended the same way as the try before it.")
    return "\n".join(lines)


class FailedScreen(WizardScreen):
    STEP = "Restore stopped"
    HELP = """\
The restore stopped before it finished. What was done is recorded, so
r retries and goes on from the step that did not finish; each try is
listed with its time and result. l shows the log, s opens a shell to
look or repair, with the target's filesystems that exist so far mounted
at /mnt/target (exit the shell to come back), a leaves the wizard: the
disk is left as it is, and rescue wizard offers to resume next time."""
    BINDINGS = [
        Binding("escape", "noop", show=False),
        Binding("r", "retry", "Retry"),
        Binding("l", "app.view_log", "Log"),
        Binding("s", "app.shell", "Shell"),
        Binding("a", "app.abort", "Leave"),
    ]

    def __init__(self, review: Review, error: RescueError | None, step: StepFailed | None,
                 cancelled: bool = False, where: str = "", tries: tuple[Try, ...] = (),
                 log: Path | None = None, report: Path | None = None) -> None:
        super().__init__()
        self.review = review
        self.error = error
        self.step = step
        self.cancelled = cancelled
        self.where = where
        self.tries = tries
        self.log_file = log
        self.report_file = report

    def compose(self) -> ComposeResult:
        yield from self.compose_title()
        target = self.review.shown_targets
        if self.cancelled:
            text = (f"You cancelled the restore {self.where}.\n"
                    f"Nothing more is being written; {target} is only partly restored.")
        elif self.step is not None:
            text = f"Step {self.step.index + 1} ({self.step.key}) failed:\n{self.step.message}"
            if self.error is not None and self.error.why:
                text += f"\nWhy: {self.error.why}"
        elif isinstance(self.error, PlanRefused):
            text = error_text(self.error)  # a refusal's own what-to-do names no command to rerun
        elif self.error is not None:
            text = str(self.error.what) + (f"\nWhy: {self.error.why}" if self.error.why else "")
        else:
            text = "The restore stopped."
        if self.tries:
            text += f"\nThis try started at {self.tries[-1].started}."
        history = tries_text(self.tries)
        if history:
            text += "\n\n" + history
        text += ("\n\nWhat you can do here (what was done is kept):\n"
                 f"  s  open a shell to look or repair (the target is mounted at {SHELL_MOUNT});\n"
                 "     exit it to come back here\n"
                 "  r  try again: finished steps are skipped\n"
                 "  l  read the log of every command\n"
                 f"  a  leave the wizard; {target} stays as it is, and rescue wizard\n"
                 "     offers to resume when you start it again")
        paths = f"Log:    {self.log_file or 'none written'}\nReport: {self.report_file or 'none written'}"
        yield from self.compose_scroll("error", hang(wizard_words(text)) + "\n\n" + paths)  # paths unsplit

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
        nxt = (f"; next: step {i.steps_done + 1} ({i.review.steps[i.steps_done]})"
               if i.steps_done < len(i.review.steps) else "")
        lines = [f"An unfinished restore of {i.client} onto {i.target} was found.",
                 f"Started: {i.started.replace('T', ' ') if i.started else 'unknown'}",
                 f"Stopped: {i.why or 'unknown'}",
                 f"Done:    {i.steps_done} of {i.steps_total} steps{nxt}", "",
                 "r resumes it (done steps are skipped), n starts a new restore, q quits."]
        yield Static(hang("\n".join(lines)), id="body", markup=False)
        yield from self.compose_scroll("steps", hang("\n".join(
            f"{'done' if n < i.steps_done else 'todo'}  {s}" for n, s in enumerate(i.review.steps))))

    def on_mount(self) -> None:
        self.query_one("#steps").focus()

    def action_resume(self) -> None:
        self.wizard.resume(self.interrupted)

    def action_new(self) -> None:
        self.app.pop_screen()
