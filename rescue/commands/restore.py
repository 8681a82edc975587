"""`rescue restore`: rebuild a machine's disk from its newest good backup, from the command line.

The same engine as the wizard, for scripts, serial consoles and the
unattended boot entry. Nothing is written before the plan is complete and
confirmed (the target's name typed, or --yes). A rerun of the same command
after a failure or a power cut resumes where it stopped.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from rescue.formats.units import duration, human
from rescue import events as ev
from rescue.backups.source import add_source_arguments
from rescue.commands.plan import add_layout_arguments, add_size_argument, add_target_argument, read_request
from rescue.errors import Aborted, Exit, RescueError

if TYPE_CHECKING:
    from rescue.backups.source import Selection
    from rescue.engine.restore import Restore

NAME = "restore"
ORDER = 20
HELP = "restore a machine's disk from its backups onto a new disk (unattended with --yes)"
DESCRIPTION = (
    "Build the restore plan for --client from the images in --bank, --rsnapshot or --tree (the newest "
    "good image of each "
    "vault, or the newest at or before --image DATE) onto --target, show it, and run it once the "
    "target's device name is typed (or --yes). --dry-run prints the plan and restore.sh and writes "
    "nothing. Rerun the same command after a failure or power cut: finished steps are skipped. "
    "A restore that finished is never resumed: running it again restores the disk again from the start."
)

PROGRESS_EVERY = 5.0  # seconds between progress lines (a serial console is slow)
STEP_DONE = ev.STEP_DONE  # with --step-markers: the line a finished step's key follows


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_source_arguments(p)
    p.add_argument("--client", required=True, metavar="NAME", help="the machine to restore (rescue list shows them)")
    p.add_argument("--image", metavar="DATE",
                   help="restore the newest good image at or before DATE (default: the newest good image)")
    add_target_argument(p, "the whole disk to overwrite, e.g. /dev/sdb")
    p.add_argument("--yes", action="store_true", help="do not ask: the target was chosen on purpose")
    p.add_argument("--dry-run", action="store_true", help="print the plan and restore.sh; write nothing")
    p.add_argument("--log", type=Path, metavar="FILE",
                   help="log of every command run (default: restore-DATE.log in the state folder)")
    p.add_argument("--state-dir", type=Path, metavar="DIR",
                   help="where the resume journal is kept (default /var/lib/rescue)")
    add_layout_arguments(p)
    add_size_argument(p)
    p.add_argument("--skip-vault", action="append", default=[], metavar="NAME", help="leave a vault out")
    p.add_argument("--step-markers", action="store_true", help=argparse.SUPPRESS)  # RESCUE-STEP-DONE KEY lines
    add_run_arguments(p)


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """--bootloader and --verify-checksum: how the restore runs, the same for rescue restore and the wizard."""
    p.add_argument("--bootloader", choices=("auto", "install", "skip"), default="auto",
                   help="auto (default): install grub, except onto a loop device where it is reported as "
                        "not attempted; install: always try; skip: do not install")
    p.add_argument("--verify-checksum", action="store_true",
                   help="verify file contents by checksum too (reads everything twice; default: sizes, "
                        "times and all metadata)")
    p.add_argument("--luks-key", action="append", default=[], metavar="NAME=FILE",
                   help="open the LUKS container NAME (its crypttab name or LUKS UUID) with the key in FILE "
                        "(a keyfile, or a passphrase without a trailing newline); checked against the header "
                        "kept at backup time before anything is written; may be repeated. Without it the "
                        "passphrase is asked for, hidden")


def parse_luks_keys(values: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """--luks-key NAME=FILE, as the options keep it: where a key is, never the key."""
    out = []
    for value in values:
        name, sep, file = value.partition("=")
        if not sep or not name.strip() or not file.strip():
            raise RescueError(f"--luks-key {value}: expected NAME=FILE",
                              fix="name the container (its crypttab name or LUKS UUID) and the keyfile, "
                                  "e.g. --luks-key cryptroot=/media/stick/root.key")
        out.append((name.strip(), file.strip()))
    return tuple(out)


def ask_luks_keys(session: Any, plan: Any, yes: bool) -> dict[str, Any]:
    """Each passphrase no --luks-key gives, asked hidden on the terminal and checked against the
    kept header at once: a wrong one is said ("try again"), three wrong ones end the restore with
    nothing written. With --yes, or without a terminal, nothing is asked."""
    import getpass

    from rescue.run import run as gateway
    from rescue.steps.luks import (
        LuksKey,
        MissingKey,
        containers_needing_keys,
        containers_needing_new_keys,
        key_opens,
        keys_from_files,
        wrong_key,
    )

    given = keys_from_files(plan.steps, session.restore.options.luks_keys)
    missing = [c for c in containers_needing_keys(plan.steps) if c.uuid not in given]
    new = [c for c in containers_needing_new_keys(plan.steps) if c.uuid not in given]
    if not (missing or new) or yes or not sys.stdin.isatty():
        return {}
    typed: dict[str, Any] = {}
    for n in new:  # a new master key: its one passphrase, typed twice
        for attempt in range(3):
            first = getpass.getpass(f"new passphrase for LUKS {n.name} (UUID {n.uuid}): ")
            if first and getpass.getpass("the same again: ") == first:
                typed[n.uuid] = LuksKey(first, "new passphrase typed twice")
                break
            if attempt == 2:
                raise MissingKey(f"no new passphrase was given for LUKS {n.name}; nothing was written",
                                 fix="type the same passphrase twice")
            print("the two passphrases differ (or are empty), try again", flush=True)
    for c in missing:
        for attempt in range(3):
            key = LuksKey(getpass.getpass(f"passphrase for LUKS UUID {c.uuid} ({c.name}): "), "passphrase typed")
            if key_opens(gateway, c.header, key):
                typed[c.uuid] = key
                break
            if attempt == 2:
                raise wrong_key(c.uuid, c.name, key)
            print(f"wrong passphrase for LUKS UUID {c.uuid}, try again", flush=True)
    return typed


class ProgressPrinter:
    """Events as plain lines that work on a serial console: no colours, no redraws."""

    def __init__(self, out: TextIO | None = None, every: float = PROGRESS_EVERY,
                 clock: Callable[[], float] = time.monotonic, markers: bool = False,
                 name: str = "restore") -> None:
        self.out = out
        self.name = name  # the command whose steps these are
        self.markers = markers  # a `RESCUE-STEP-DONE KEY` line per finished step, for the drill
        self.every = every
        self.clock = clock  # monotonic time counts from boot: a rescue system up for seconds is near 0
        self.total = 0
        self._last: dict[str, float] = {}
        self._pct: dict[str, int] = {}

    def __call__(self, e: ev.Event) -> None:
        if isinstance(e, ev.PlanStarted):
            self.total = e.total_steps
            self.line(f"{self.name}: {e.total_steps} steps" + (" (resuming an earlier run)" if e.resumed else ""))
        elif isinstance(e, ev.StepSkipped):
            self.line(f"[{e.index + 1}/{self.total}] done already: {e.description}")
            self.marker(e.key)
        elif isinstance(e, ev.StepStarted):
            self.line(f"[{e.index + 1}/{e.total}] {e.description}")
        elif isinstance(e, ev.StepDone):
            self.line(f"      done in {e.seconds:.1f}s")
            self.marker(e.key)
        elif isinstance(e, ev.StepFailed):
            self.line(f"      FAILED: {e.message.splitlines()[0]}")
        elif isinstance(e, ev.Output):
            self.line(f"      {e.line}")
        elif isinstance(e, ev.Progress):
            self.progress(e)

    def progress(self, e: ev.Progress) -> None:
        now = self.clock()
        pct = int(100 * e.bytes_done / e.bytes_total) if e.bytes_total else -1
        final = e.eta_seconds == 0.0
        last = self._last.get(e.key)
        if not final and last is not None and now - last < self.every:
            return
        if final and self._pct.get(e.key) == 100:
            return
        self._last[e.key] = now
        self._pct[e.key] = 100 if final else pct
        text = f"      {human(e.bytes_done)}"
        if e.bytes_total:
            text += f" of {human(e.bytes_total)} ({min(pct, 100)}%)"
        if e.files_total:
            text += f", {e.files_done} of {e.files_total} files"
        elif e.files_done:
            text += f", {e.files_done} files"
        if e.eta_seconds:
            text += f", about {duration(e.eta_seconds)} left"
        self.line(text)

    def marker(self, key: str) -> None:
        """Only what the restore printed when a step ended says it ended (not the plan's text)."""
        if self.markers:
            self.line(f"{STEP_DONE} {key}")

    def line(self, text: str) -> None:
        out = self.out or sys.stdout
        out.write(text + "\n")
        out.flush()


def confirm(targets: Any, ask: Callable[[str], str]) -> None:
    """The person types every target's device name; anything else aborts with nothing written."""
    from rescue.engine.restore import confirmed

    targets = tuple(targets) if isinstance(targets, (list, tuple)) else (targets,)
    names = " ".join(t.device for t in targets)
    disks = " and ".join(t.device for t in targets)
    prompt = (f"\nEverything on {disks} will be destroyed.\n"
              + (f"Type the target's device name ({names}) to go on, anything else aborts: " if len(targets) == 1
                 else f"Type the names of all {len(targets)} targets ({names}) to go on, anything else aborts: "))
    try:
        answer = ask(prompt).strip()
    except EOFError:
        answer = ""
    words = answer.split()
    if len(words) != len(targets) or not all(any(confirmed(w, t.device, t.by_id) for w in words) for t in targets):
        raise Aborted("the restore was not confirmed; nothing was written",
                      why=f"the answer {answer!r} is not {names}" if answer else "no answer was given",
                      fix=f"run again and type {names}, or use --yes in a script")


def _ask(prompt: str) -> str:
    sys.stdout.write(prompt)
    sys.stdout.flush()
    line = sys.stdin.readline()
    if not line:
        raise EOFError
    return line




def _stop_on_sigterm() -> None:
    """A TERM (shutdown, systemctl stop) stops like Ctrl-C: the copy is ended, mounts released."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)


def run(args: argparse.Namespace, ask: Callable[[str], str] = _ask) -> int:
    req = read_request(args, "restore", bootloader=args.bootloader, verify_checksum=args.verify_checksum,
                       state_dir=args.state_dir, log=args.log, luks_keys=parse_luks_keys(args.luks_key))
    return restore_on_console(req.restore, req.selection, req.target, yes=args.yes, dry_run=args.dry_run,
                              markers=args.step_markers, ask=ask)


def restore_on_console(restore: Restore, selection: Selection, device: str | Sequence[str], *, yes: bool = False,
                       dry_run: bool = False, markers: bool = False, ask: Callable[[str], str] = _ask) -> int:
    """The restore as plain lines on a console: `rescue restore` and the unattended entry alike."""

    def say(line: str) -> None:
        print(f"restore: {line}", flush=True)

    if dry_run:  # writes nothing and takes no lock
        plan = restore.plan(selection, device)
        print(plan.review(), flush=True)
        print("\n# ---- restore.sh (nothing was written) ----")
        print(plan.script(), flush=True)
        return int(Exit.OK)
    with restore.session(device, say=say) as session:
        plan = session.plan(selection)
        print(plan.review(), flush=True)
        if not yes:
            confirm(plan.targets, ask)
        typed = ask_luks_keys(session, plan, yes)
        printer = ProgressPrinter(markers=markers)
        _stop_on_sigterm()
        try:
            outcome = session.run(plan, printer, luks_keys=typed)
        except RescueError:
            if session.summary is not None:
                print("\n" + session.summary, flush=True)
                say(f"report kept in {session.report}; every command run is in {session.log_path}")
            raise
        print("\n" + outcome.summary)
        say(f"report kept in {session.report}; every command run is in {session.log_path}")
        return int(Exit.INCOMPLETE if outcome.incomplete else Exit.OK)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m rescue.commands.restore ...`, same as `rescue restore ...`."""
    from rescue.cli import main as cli_main

    return cli_main(["restore", *(argv if argv is not None else sys.argv[1:])])
