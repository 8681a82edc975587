"""The wizard app: which screen follows which, and the keys every screen shares.

Built by make_app(engine) for both `rescue wizard` and the tests. The app
keeps what the person chose; the engine does all the work.
"""

from __future__ import annotations

from pathlib import Path

from textual.app import App, SuspendNotSupported
from textual.binding import Binding

from rescue.backups.model import Image, Machine
from rescue.errors import Exit, PlanRefused, RescueError
from rescue.events import PlanDone, StepFailed
from rescue.target import TargetDisk
from rescue.tui.facade import Engine, Interrupted
from rescue.tui.review import Review
from rescue.tui.screens.backups import BackupsScreen, ImagesScreen
from rescue.tui.screens.base import WizardScreen
from rescue.tui.screens.common import ConfirmScreen, HelpScreen, PowerScreen, TextScreen
from rescue.tui.screens.run import FailedScreen, ProgressScreen, ResultScreen, ResumeScreen, Try, clock
from rescue.tui.screens.target import ReviewScreen, TargetScreen

CSS_PATH = Path(__file__).with_name("wizard.tcss")


class Wizard(App[int]):
    """Restore a machine from its backups, one screen per decision."""

    CSS_PATH = CSS_PATH
    TITLE = "rescue wizard"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS = [
        Binding("f1", "help", "Help"),
        Binding("question_mark", "help", "Help", show=False),
        Binding("ctrl+c", "quit_wizard", "Quit", show=False, priority=True),
    ]

    def __init__(self, engine: Engine) -> None:
        super().__init__()
        self.engine = engine
        self.machine: Machine | None = None
        self.images: dict[str, Image] = {}
        self.skipped: tuple[str, ...] = ()  # vaults left out of the restore
        self.target: TargetDisk | None = None
        self.review: Review | None = None
        self.log_lines: list[str] = []
        self.outcome: Exit = Exit.ABORTED  # until a restore finishes
        self.offered_resume = False
        self.tries: list[Try] = []  # each run of the restore in this wizard, for the person to see
        self.stopped: str = ""  # how the last run stopped, for the line printed on leaving

    def on_mount(self) -> None:
        self.push_screen(BackupsScreen())

    # the steps, in order

    def offer_resume(self, interrupted: Interrupted) -> None:
        if not self.offered_resume:
            self.offered_resume = True
            self.push_screen(ResumeScreen(interrupted))

    def choose_machine(self, machine: Machine) -> None:
        self.machine = machine
        self.images = dict(self.engine.choose(machine))
        self.skipped = ()
        self.push_screen(ImagesScreen(machine, self.images))

    def choose_images(self, images: dict[str, Image], skipped: tuple[str, ...] = ()) -> None:
        self.images = images
        self.skipped = skipped
        self.push_screen(TargetScreen())

    def choose_target(self, disk: TargetDisk) -> None:
        assert self.machine is not None
        self.target = disk
        # a vault left out still hands over its image when it has one: the plan then says so
        chosen = tuple(self.images[v.name] for v in self.machine.vaults if v.name in self.images)
        self.push_screen(ReviewScreen(self.machine, chosen, disk, self.skipped))

    def choose_targets(self, pairs: tuple[tuple[str, TargetDisk], ...], left_out: tuple[str, ...] = ()) -> None:
        """A machine with several disks: each captured disk with its new disk (`--target OLD=NEW`),
        and the captured disks left out (`--skip-disk OLD`)."""
        assert self.machine is not None
        self.target = pairs[0][1]
        chosen = tuple(self.images[v.name] for v in self.machine.vaults if v.name in self.images)
        self.push_screen(ReviewScreen(self.machine, chosen, tuple(new for _, new in pairs), self.skipped,
                                      disk_map=tuple((old, new.device) for old, new in pairs),
                                      skip_disks=left_out))

    def confirm(self, review: Review, resume: bool = False) -> None:
        def answered(yes: bool | None) -> None:
            if yes:
                self.review = review
                self.push_screen(ProgressScreen(review, resume=resume))
            else:
                self.notify("Not confirmed: nothing was written.", severity="warning")

        self.push_screen(ConfirmScreen(review.target, review.target_model, review.target_size,
                                       review.client, resume=resume, devices=review.targets,
                                       disks=tuple(line for line in review.disks if line.startswith("captured"))),
                         answered)

    def resume(self, interrupted: Interrupted) -> None:
        self.confirm(interrupted.review, resume=True)

    def restore_done(self, done: PlanDone) -> None:
        assert self.review is not None
        self.outcome = Exit.INCOMPLETE if done.incomplete else Exit.OK
        self.tries.append(Try(clock(), "finished"))
        self.switch_screen(ResultScreen(self.review, done))

    def restore_failed(self, progress: ProgressScreen, error: RescueError | None,
                       step: StepFailed | None, cancelled: bool = False) -> None:
        # a refusal (the target turned unsafe, the plan cannot work) keeps its own code, as
        # `rescue restore` exits with it; anything else that stopped the run is a failed step
        where = progress.stop_point()
        if cancelled:
            self.outcome = Exit.ABORTED
            result = f"cancelled {where}"
        elif isinstance(error, PlanRefused):
            self.outcome = error.exit_code
            result = f"refused before writing: {error.what}"
        else:
            self.outcome = Exit.FAILED
            result = f"failed {where}"
        self.stopped = result
        self.tries.append(Try(progress.started_at, result))
        self.push_screen(FailedScreen(progress.review, error, step, cancelled=cancelled, where=where,
                                      tries=tuple(self.tries), log=self.engine.log_path(),
                                      report=self.engine.report_path()))

    def retry(self) -> None:
        self.pop_screen()
        screen = self.screen
        if isinstance(screen, ProgressScreen):
            screen.restart()

    # keys every screen shares

    def action_help(self) -> None:
        screen = self.screen
        if isinstance(screen, HelpScreen):
            return
        if isinstance(screen, WizardScreen):
            self.push_screen(HelpScreen(screen.STEP, screen.HELP))
        elif isinstance(screen, ConfirmScreen):
            self.push_screen(HelpScreen("Confirm", """\
Typing the target disk's name is the last check before anything is written.
Type it exactly as shown and press Enter; anything else, or Esc, goes back
and writes nothing. A restore onto several disks asks for every disk's
name, separated by spaces."""))
        elif isinstance(screen, TextScreen):
            self.push_screen(HelpScreen(screen.text_title, "Up/Down/PageUp/PageDown scroll; Esc closes."))

    def action_view_log(self) -> None:
        path = self.engine.log_path()
        if path is not None and path.exists():
            text = path.read_text(errors="replace")
            title = f"Log: {path}"
        else:
            text = "\n".join(self.log_lines) or "Nothing has been logged yet."
            title = "Log"
        self.push_screen(TextScreen(title, text))

    def action_power(self, action: str) -> None:
        def answered(yes: bool | None) -> None:
            if not yes:
                return
            try:
                self.engine.power(action)
            except RescueError as e:
                self.notify(str(e), severity="error")

        self.push_screen(PowerScreen(action), answered)

    def action_shell(self) -> None:
        if self.is_headless:  # tests: no terminal to hand over
            self.engine.shell(self.review)
            return
        try:
            with self.suspend():
                try:
                    self.engine.shell(self.review)
                except RescueError as e:
                    print(e)
        except SuspendNotSupported:
            self.notify("A shell cannot be started from this terminal: use another console (Alt+F2).",
                        severity="error")

    def farewell(self) -> str:
        """The one line printed on leaving: what state the disk is in and what to do next."""
        r = self.review
        if r is None:
            return "rescue wizard: nothing was written to any disk."
        if self.outcome in (Exit.OK, Exit.INCOMPLETE):
            report = self.engine.report_path()
            missing = (" except files the backup could not give" if self.outcome == Exit.INCOMPLETE else "")
            return (f"rescue wizard: {r.client} is restored onto {r.shown_targets}{missing}; take out the backup "
                    f"disk and reboot" + (f" (report: {report})" if report else "") + ".")
        if self.outcome in (Exit.REFUSED, Exit.UNSAFE) and not any(
                not t.result.startswith("refused") for t in self.tries):
            return (f"rescue wizard: nothing was written to {r.shown_targets} ({self.stopped}); "
                    "fix that and start rescue wizard again.")
        log = self.engine.log_path()
        return (f"rescue wizard: {r.shown_targets} {'are' if r.targets else 'is'} only partly restored "
                f"({self.stopped}); start rescue wizard "
                "again to resume, finished steps are skipped" + (f" (log: {log})" if log else "") + ".")

    def action_abort(self) -> None:
        self.exit(int(self.outcome), return_code=int(self.outcome))

    def action_quit_wizard(self) -> None:
        screen = self.screen
        if isinstance(screen, ProgressScreen) and not screen.finished:
            screen.action_cancel()
            return
        self.exit(int(self.outcome), return_code=int(self.outcome))


def make_app(engine: Engine) -> Wizard:
    """The wizard over an engine: RealEngine for `rescue wizard`, RecordedEngine in tests."""
    return Wizard(engine)
