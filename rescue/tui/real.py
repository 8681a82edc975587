"""The wizard's engine on a real machine: every call goes to rescue's own modules.

Nothing here decides how to restore: discovery is rescue.backups, disks are
rescue.probe, the plan is rescue.plan.build_plan, the run is rescue.engine.
This only adapts their answers to what the screens draw.
"""

from __future__ import annotations

import dataclasses

import json
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from rescue.backups import Image, Machine, choose_image
from rescue.backups.source import ImageSource
from rescue.errors import BackupError, RescueError
from rescue.events import Event
from rescue.paths import host_paths
from rescue.target import TargetDisk
from rescue.tui.facade import SHELL_MOUNT, Discovery, Interrupted
from rescue.tui.review import STEP_COST, CopyRow, FsRow, Review, TableRow

if TYPE_CHECKING:
    from rescue.plan.model import Plan

PLAN_FILE = "plan.json"  # beside the journal, written by rescue restore and the wizard alike


def looks_like_bank(folder: Path) -> bool:
    """A dirvish bank holds vaults, and a vault holds a dirvish/ folder with default.conf."""
    try:
        return any((child / "dirvish" / "default.conf").is_file() for child in folder.iterdir()
                   if child.is_dir())
    except OSError:
        return False


def folders_under(mount: Path, looks_right: Callable[[Path], bool]) -> tuple[Path, ...]:
    """Backup folders on a mounted backup partition: the partition itself, or folders one level down."""
    if not mount.is_dir():
        return ()
    if looks_right(mount):
        return (mount,)
    try:
        children = sorted(c for c in mount.iterdir() if c.is_dir() and not c.is_symlink())
    except OSError:
        return ()
    return tuple(c for c in children if looks_right(c))


def banks_under(mount: Path) -> tuple[Path, ...]:
    return folders_under(mount, looks_like_bank)


def looks_like_rsnapshot_root(folder: Path) -> bool:
    """An rsnapshot snapshot_root holds INTERVAL.N folders (daily.0, hourly.3, ...)."""
    from rescue.backups.rsnapshot import _INTERVAL

    try:
        return any(_INTERVAL.fullmatch(c.name) and c.is_dir() and not c.is_symlink() for c in folder.iterdir())
    except OSError:
        return False


def rsnapshot_roots_under(mount: Path) -> tuple[Path, ...]:
    return folders_under(mount, looks_like_rsnapshot_root)


def review_of(plan: Plan) -> Review:
    """Lay a Plan out for the review screen: old and new side by side, in bytes."""
    old_sector = plan.old_table.sector_size or 512
    fs_by_number = {f.number: f for f in plan.filesystems}
    swap_by_number = {s.number: s for s in plan.swaps}
    rows = []
    for m in plan.migrations:
        if m.number in fs_by_number:
            fs = fs_by_number[m.number]
            what = f"{fs.fstype} {fs.mountpoint or ''}".strip()
        elif m.number in swap_by_number:
            what = "swap"
        elif m.container:
            what = "extended"
        else:
            what = m.fstype or "other"
        rows.append(TableRow(number=m.number, type=what, old_size=m.old_size * old_sector,
                             new_size=m.new_size * m.sector_size, old_start=m.old_start * old_sector,
                             new_start=m.new_start * m.sector_size,
                             note={"stays": "same", "moves": "moved"}.get(m.change, m.change)))
    filesystems = [FsRow(f.device, f.fstype, f.uuid, f.label, f.mountpoint) for f in plan.filesystems]
    filesystems += [FsRow(s.device, "swap", s.uuid, s.label, None) for s in plan.swaps]
    copies = tuple(CopyRow(c.vault, c.image, c.mountpoint, c.bytes, c.files) for c in plan.copies)
    migrations = tuple(
        f"partition {m.number} ({m.mountpoint or m.fstype or m.node}) {m.change}: "
        f"{_h(m.old_size * old_sector)} -> {_h(m.new_size * m.sector_size)}"
        for m in plan.migrations if m.change in ("grows", "shrinks"))
    return Review(
        client=plan.client, target=plan.target.device, target_model=plan.target.model,
        target_size=plan.target.size, table_label=plan.new_table.label, old_disk_size=plan.source.size,
        rows=tuple(rows), filesystems=tuple(filesystems), copies=copies,
        steps=tuple(s.describe() for s in plan.steps), script=plan.script(),
        migrations=migrations, warnings=tuple(plan.warnings) + tuple(plan.layout_warnings),
        destroyed=tuple(plan.destroyed),
        weights=tuple(next((c.bytes for c in plan.copies if s.kind == "copy" and s.key == f"copy:{c.vault}"),
                           STEP_COST) for s in plan.steps))


def stop_reason(folder: Path, since: float) -> str:
    """Why the restore kept in folder stopped, from the report its last run wrote (the engine writes one
    whenever a run ends, failed or cancelled); no report since it started means it never ended."""
    reports = sorted((p for p in folder.glob("restore-*.txt") if p.stat().st_mtime >= since),
                     key=lambda p: p.stat().st_mtime)
    if not reports:
        return "it never ended: the power went, the machine was reset, or the restore was killed"
    for line in reports[-1].read_text(errors="replace").splitlines():
        if line.startswith("result:"):
            result = line.removeprefix("result:").strip()
            if result == "FAILED":  # no step failed: the run was stopped between steps or in a copy
                return "it was cancelled (or stopped) before it finished"
            inner = result.removeprefix("FAILED (").removesuffix(")") if result.startswith("FAILED (") else result
            return f"it was cancelled: {inner}" if "cancelled" in inner else f"a step failed: {inner}"
    return "its last report says nothing about the result"


def _h(n: int) -> str:
    from rescue.tui.review import human

    return human(n)


class RealEngine:
    """rescue's modules behind the wizard's Engine interface."""

    def __init__(self, banks: Sequence[Path] = (), config: Path | None = None,
                 backup_mount: Path | None = None, state_dir: Path | None = None,
                 log_dir: Path | None = None, master_conf: Path | None = None,
                 source: ImageSource | None = None) -> None:
        hosts = host_paths()  # the rescue system's /backup and /etc/dirvish/master.conf by default
        # what --bank, --rsnapshot and --tree named (the banks given alone: the older callers)
        self.given = source if source is not None else ImageSource(banks=tuple(banks))
        self.config = config
        self.backup_mount = backup_mount or hosts.backup_mount
        self.master_conf = master_conf or hosts.dirvish_master
        self.state_dir = state_dir
        self.log_dir = log_dir
        self.plans: dict[Review, Plan] = {}
        self.last_log: Path | None = None
        self.last_report: Path | None = None
        self.backup_devices: tuple[str, ...] = ()
        self.shell_mount = SHELL_MOUNT

    # -- finding backups ----------------------------------------------------

    def source(self) -> tuple[ImageSource, list[str]]:
        """The backups to read: those given, else the backup partition's banks and master.conf's."""
        notes: list[str] = []
        if self.given.folders:
            return dataclasses.replace(self.given, config=self.config), notes
        banks = banks_under(self.backup_mount)
        roots = rsnapshot_roots_under(self.backup_mount)
        config = self.config or (self.master_conf if self.master_conf.is_file() else None)
        if not banks and not roots and config is None:
            notes.append(f"no bank or rsnapshot root on {self.backup_mount} and no {self.master_conf}: "
                         "mount the backup partition or start with --bank DIR (or --rsnapshot ROOT)")
        return ImageSource(banks=banks, rsnapshot_roots=roots, config=config), notes

    def discover(self) -> Discovery:
        source, notes = self.source()
        if source.empty:
            return Discovery(banks=(), machines=(), warnings=tuple(notes))
        found = source.find()
        seen = tuple(dict.fromkeys([*source.folders, *(v.bank for v in found.vaults)]))
        return Discovery(banks=seen, machines=found.machines, warnings=tuple(notes) + found.notes)

    def choose(self, machine: Machine) -> Mapping[str, Image]:
        chosen: dict[str, Image] = {}
        for vault in machine.vaults:
            try:
                chosen[vault.name] = choose_image(vault)
            except BackupError:
                continue
        return chosen

    # -- disks and plan -----------------------------------------------------

    def disks(self) -> tuple[TargetDisk, ...]:
        from rescue.probe import list_disks

        return tuple(list_disks(backup_sources=self._sources()))

    def plan(self, machine: Machine, images: tuple[Image, ...], target: TargetDisk,
             skip: tuple[str, ...] = (), sizes: tuple[tuple[str, int], ...] = ()) -> Review:
        from rescue.layout.legacy import newest_layout
        from rescue.plan import PlanOptions, build_plan

        layout = newest_layout(images)  # as rescue restore does
        plan = build_plan(layout, images, target, PlanOptions(skip_vaults=tuple(skip), sizes=tuple(sizes)))
        review = review_of(plan)
        self.plans[review] = plan
        return review

    # -- running ------------------------------------------------------------

    def _state_dir(self) -> Path:
        return self.state_dir or host_paths().state_dir

    def interrupted(self) -> Interrupted | None:
        """The newest unfinished restore whose plan was kept beside its journal, on a disk that still is
        what that journal recorded (the engine's own resume rule): only that one is offered."""
        from rescue.engine.executor import resume_decision, step_record
        from rescue.engine.journal import Journal, plan_digest
        from rescue.jsonform import FormError
        from rescue.plan.model import Plan

        state = self._state_dir()
        if not state.is_dir():
            return None
        found: list[tuple[float, Plan, int]] = []
        for plan_file in state.glob(f"*/{PLAN_FILE}"):
            journal = Journal.load(plan_file.with_name("journal.json"))
            if not journal.exists:
                continue
            try:
                plan = Plan.from_json(json.loads(plan_file.read_text()))
            except (OSError, ValueError, FormError):
                continue
            if not resume_decision(journal, plan.steps, plan_digest([step_record(s) for s in plan.steps])).resume:
                continue  # another plan by now, finished, or the disk changed: a restore from here starts over
            done = sum(1 for s in plan.steps if journal.is_done(s.key))
            found.append((plan_file.stat().st_mtime, plan, done))
        if not found:
            return None
        when, plan, done = max(found, key=lambda f: f[0])
        review = review_of(plan)
        self.plans[review] = plan
        started = datetime.fromtimestamp(when).isoformat(timespec="minutes")
        folder = next(f.parent for f in state.glob(f"*/{PLAN_FILE}") if f.stat().st_mtime == when)
        return Interrupted(client=plan.client, target=plan.target.device, steps_done=done,
                           steps_total=len(plan.steps), review=review, started=started,
                           why=stop_reason(folder, when))

    def _sources(self) -> tuple[Path, ...]:
        source, _notes = self.source()
        sources = list(source.folders)
        if source.config is not None:
            from rescue.backups.dirvish import banks_from_master

            sources.extend(banks_from_master(source.config))
        return tuple(sources) or (self.backup_mount,)

    def run(self, review: Review, emit: Callable[[Event], None], cancel: threading.Event) -> None:
        """Run as `rescue restore` does: same journal, plan.json, log, report and last safety look."""
        from rescue.engine.executor import Executor
        from rescue.engine.journal import identity_name
        from rescue.engine.report import write_report
        from rescue.events import PlanDone
        from rescue.probe import identity_of
        from rescue.safety import assert_still_safe

        plan = self.plans[review]
        device = plan.target.device
        identity = identity_of(device)
        folder = self._state_dir() / identity_name(identity)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        log_dir = self.log_dir or folder
        log_path = log_dir / f"restore-{stamp}.log"
        sources = self._sources()
        executor = Executor(target=device, identity=identity, state_dir=self._state_dir(),
                            log_path=log_path, cancel=cancel,
                            recheck=lambda: assert_still_safe(device, backup_sources=sources) and None,
                            title=f"restore of {plan.client} onto {device}", face="rescue wizard")
        summary: list[str] = []

        def on_event(e: Event) -> None:
            if isinstance(e, PlanDone):
                summary.append(e.summary)
            emit(e)

        # One restore per disk (the other console's wizard, rescue restore): the engine's lock,
        # taken before plan.json is written over the one a running restore keeps beside its journal.
        with executor.locked():
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            (folder / PLAN_FILE).write_text(plan.dumps())  # so the next start can offer to resume
            log_dir.mkdir(parents=True, exist_ok=True)
            self.last_log = log_path
            try:
                executor.run(plan, on_event)
            finally:
                if summary:
                    self.last_report = write_report(folder, summary[-1], stamp)

    def log_path(self) -> Path | None:
        return self.last_log

    def report_path(self) -> Path | None:
        return self.last_report

    def power(self, action: str) -> None:
        from rescue.run import run

        if action not in ("reboot", "poweroff"):
            raise RescueError(f"unknown power action {action!r}")
        run(["systemctl", action] if os.path.isdir("/run/systemd/system") else [action])

    def shell(self, review: Review | None = None) -> None:
        """A login shell in root's home with a real terminal; the restore's target filesystems
        mounted under SHELL_MOUNT by the engine's own mount step (which proves the device), and
        unmounted when the shell ends."""
        from rescue.engine.mounts import is_mountpoint, remove_empty_tree, unmount_all
        from rescue.run import interactive, run

        plan = self.plans.get(review) if review is not None else None
        base = self.shell_mount
        mounted: list[str] = []
        if plan is not None:
            if base.exists() and (is_mountpoint(base) or any(base.iterdir())):
                print(f"{base} is in use: the target's filesystems are not mounted for this shell.")
            else:
                mounted = mount_for_shell(plan, base)
        home = Path(os.environ.get("HOME") or "/root")
        if mounted:
            print(f"{plan.target.device} is mounted at {base}: " + ", ".join(mounted))
            print(f"Fix things there (e.g. chroot {base}); leave {base} before typing exit.")
        print("Type exit to go back to the rescue wizard.")
        try:
            interactive([os.environ.get("SHELL") or "/bin/bash", "-l"], cwd=home if home.is_dir() else "/")
        finally:
            if mounted:
                left = unmount_all(run, base)
                if left:
                    print(f"still mounted (something uses them): {', '.join(left)}")
                else:
                    remove_empty_tree(base)


def mount_for_shell(plan: Plan, base: Path) -> list[str]:
    """Mount what the restore made, root first, with the plan's own mount steps; a filesystem not
    made yet (the restore stopped before its mkfs) is left out. Returns the mount points."""
    from rescue.errors import RescueError as Error
    from rescue.run import run
    from rescue.steps.mount import MountFilesystem

    class Where:  # the two things a mount step asks of its context
        root = base

        @staticmethod
        def run(argv, **kw):  # type: ignore[no-untyped-def]
            return run(argv, **kw)

    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    done: list[str] = []
    for step in plan.steps:
        if isinstance(step, MountFilesystem):
            try:
                step.run(Where())  # type: ignore[arg-type]
                done.append(step.mountpoint)
            except (Error, OSError) as e:
                print(f"not mounted: {step.device} ({step.mountpoint}): {getattr(e, 'what', e)}")
                if step.mountpoint == "/":
                    break  # nothing else has a place to go
    return done
