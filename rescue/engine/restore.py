"""One restore, whichever face asked for it: `rescue restore`, the wizard, the unattended entry.

Every face turns its answers into the same `RestoreOptions` and drives a
`Restore` through the same stages: choose the images, plan onto a disk,
(the face confirms), run, report; and, on the next start, find the
unfinished restore to resume. So the refusals, the journal folder, the
log, plan.json and the report are the same whichever console a person
uses, and a face only collects answers and draws events.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from rescue import events as ev
from rescue.backups.discover import choose_image
from rescue.backups.dirvish import shown
from rescue.backups.model import Image, Machine
from rescue.backups.source import ImageSource, Selection, partial_machine
from rescue.errors import BackupError, PlanRefused, RescueError
from rescue.paths import host_paths

if TYPE_CHECKING:
    from rescue.engine.executor import Executor, Outcome
    from rescue.layout.model import Layout
    from rescue.plan.model import Plan, PlanOptions
    from rescue.steps.luks import LuksKey
    from rescue.target import TargetDisk

PLAN_FILE = "plan.json"  # beside the journal: the next start offers to resume the plan it holds
Bootloader = Literal["auto", "install", "skip"]


@dataclass(frozen=True)
class RestoreOptions:
    """What a person (or the unattended config) may say about a restore: the same for every face."""

    client: str | None = None  # the machine; the wizard asks for it on a screen instead
    image: str | None = None  # the newest good image at or before this date (or this image's name)
    skip_vaults: tuple[str, ...] = ()  # vaults left out on purpose: their filesystems are made empty
    grow: str | None = None  # mount point or partition number that takes the free space
    sizes: tuple[tuple[str, int], ...] = ()  # (mount point, number or swap; bytes), as --size
    fstypes: tuple[tuple[str, str], ...] = ()  # (mount point, type) to make instead of the captured one
    source_disk: str | None = None  # the older --source-disk: restore this captured disk only
    disk_map: tuple[tuple[str, str], ...] = ()  # (OLD, NEW) per --target OLD=NEW: captured disk -> target
    skip_disks: tuple[str, ...] = ()  # captured disks left out on purpose (--skip-disk)
    bootloader: Bootloader = "auto"  # auto: grub, except onto a loop device; install; skip
    verify_checksum: bool = False  # read every file twice: contents, not only sizes and times
    state_dir: Path | None = None  # the journal's folder (default /var/lib/rescue)
    log: Path | None = None  # the command log (default restore-DATE.log in log_dir)
    log_dir: Path | None = None  # where the log goes (default beside the journal)
    face: str = "rescue restore"  # who holds the disk's lock, as another console's refusal names it
    # (container's crypttab name or LUKS UUID, keyfile): where a key is, never the key itself
    luks_keys: tuple[tuple[str, str], ...] = ()
    luks_new_key: bool = False  # LUKS made with a new master key and a new passphrase (--luks-new-key)
    btrfs_snapshots: str = "leave-out"  # or "restore": btrfs snapshots made as subvolumes (--btrfs-snapshots)

    def plan_options(self) -> PlanOptions:
        from rescue.plan import PlanOptions

        return PlanOptions(source_disk=self.source_disk, grow=self.grow, bootloader=self.bootloader != "skip",
                           skip_vaults=self.skip_vaults, fstypes=self.fstypes, sizes=self.sizes,
                           disk_map=self.disk_map, skip_disks=self.skip_disks, luks_new_key=self.luks_new_key,
                           btrfs_snapshots=self.btrfs_snapshots)


@dataclass(frozen=True)
class Choice:
    """Per vault of a machine the image a restore would use, and why the others have none."""

    machine: Machine
    images: Mapping[str, Image]  # vault -> image
    unusable: Mapping[str, BackupError] = field(default_factory=dict)  # vault -> why no image is usable

    def picked(self, images: Sequence[Image]) -> Choice:
        """The same machine with the images a person picked (the wizard's images screen)."""
        return dataclasses.replace(self, images={i.vault: i for i in images})

    def restorable(self, skip: Sequence[str] = ()) -> tuple[Image, ...]:
        """The images to hand to the plan, in vault order; a vault with none is refused unless left out.

        A vault left out still hands over its image when it has one: the plan then says it is left out."""
        if not self.machine.vaults:
            raise BackupError(f"machine {shown(self.machine.client)} has no vaults",
                              fix="give the bank that holds its vaults with --bank DIR")
        for vault in missing_vaults(self.machine, self.images, skip):
            raise self.unusable.get(vault) or BackupError(
                f"no image chosen for vault {shown(vault)}",
                fix="choose one of its good images, or leave the vault out (--skip-vault, x in the wizard)")
        if all(v.name in skip for v in self.machine.vaults):
            raise PlanRefused("every vault is left out: there would be nothing to restore",
                              fix="leave out fewer vaults")
        return tuple(self.images[v.name] for v in self.machine.vaults if v.name in self.images)


def confirmed(typed: str, device: str, by_id: Sequence[str] = ()) -> bool:
    """The person typed the target's name: its path (/dev/sdb), its kernel name (sdb) or a by-id name."""
    typed = typed.strip()
    return bool(typed) and typed in (device, os.path.basename(device), *by_id)


def missing_vaults(machine: Machine, chosen: Mapping[str, Image], skip: Sequence[str] = ()) -> tuple[str, ...]:
    """Vaults with no image chosen that were not left out: a restore of them is refused."""
    return tuple(v.name for v in machine.vaults if v.name not in chosen and v.name not in skip)


@dataclass(frozen=True)
class Unfinished:
    """A restore that started and did not finish, whose journal still matches its disk."""

    plan: Plan
    steps_done: int
    started: str  # when its plan was written, to the minute
    why: str  # why it stopped, in a few words


class Restore:
    """One restore's life: choose, plan, run (resuming what its journal says is done), report."""

    def __init__(self, source: ImageSource, options: RestoreOptions,
                 backup_folders: Sequence[Path] | None = None) -> None:
        self.source = source
        self.options = options
        # the folders whose disks are never a target: those named, or what the wizard found mounted
        self.backup_folders = tuple(backup_folders) if backup_folders is not None else source.folders

    @property
    def state_dir(self) -> Path:
        return self.options.state_dir or host_paths().state_dir

    # -- choose -------------------------------------------------------------

    def choose(self, machine: Machine) -> Choice:
        """Per vault the newest good image (at or before options.image); never a failed one."""
        images: dict[str, Image] = {}
        unusable: dict[str, BackupError] = {}
        for vault in machine.vaults:
            try:
                images[vault.name] = choose_image(vault, self.options.image)
            except BackupError as e:
                unusable[vault.name] = e
        return Choice(machine, images, unusable)

    def select(self) -> Selection:
        """The images of options.client and their layout, or the refusal saying why not."""
        from rescue.layout.legacy import newest_layout

        if not self.options.client:
            raise BackupError("no machine named", fix="name the machine to restore with --client NAME")
        self.source.check()
        backups = self.source.find()
        images = self.choose(backups.machine(self.options.client)).restorable(self.options.skip_vaults)
        notes = backups.notes + tuple(n for i in images if (n := partial_machine(i)))
        return Selection(images, newest_layout(images), notes)

    # -- plan ---------------------------------------------------------------

    def probe(self, device: str) -> TargetDisk:
        from rescue.probe import probe_disk

        return probe_disk(device, backup_sources=self.backup_folders)

    def plan(self, selection: Selection | Choice,
             target: TargetDisk | str | Sequence[str] | Sequence[TargetDisk]) -> Plan:
        """The whole restore as steps (pure: reads the disks' facts, writes nothing), or a refusal.

        Several targets come in the order of options.disk_map."""
        from rescue.layout.legacy import newest_layout
        from rescue.plan import build_plan

        if isinstance(selection, Choice):
            images = selection.restorable(self.options.skip_vaults)
            layout: Layout | None = newest_layout(images)
        else:
            images, layout = selection.images, selection.layout
        if isinstance(target, str) or not isinstance(target, Sequence):
            disks: TargetDisk | list[TargetDisk] = self.probe(target) if isinstance(target, str) else target
        else:
            disks = [self.probe(d) if isinstance(d, str) else d for d in target]  # the wizard's are probed
        return build_plan(layout, images, disks, self.options.plan_options())

    # -- run ----------------------------------------------------------------

    @contextmanager
    def session(self, device: str | Sequence[str], say: Callable[[str], None] = lambda line: None,
                cancel: threading.Event | None = None) -> Iterator[Session]:
        """Hold the disks' locks from before a killed run's leftovers are released to the end.

        One restore per disk: another console's wizard or restore is refused
        (DiskBusy, naming who holds it) as this one is while another holds it.
        A restore onto several disks holds every one; its journal lives with the first."""
        session = Session(self, device, say, cancel)
        with session.executor.locked():
            # A killed earlier run may have left its mounts and copy process: release them (only
            # what its journal names) so the target probes as free again.
            for line in session.executor.release_leftovers():
                say(line)
            yield session

    def usable_state_dir(self, say: Callable[[str], None]) -> Path:
        """The journal's folder; on a read-only rescue root, /run (lost at power-off, said so)."""
        wanted = self.state_dir
        try:
            wanted.mkdir(parents=True, exist_ok=True, mode=0o700)
            if os.access(wanted, os.W_OK):
                return wanted
        except OSError:
            pass
        fallback = host_paths().fallback_state_dir
        say(f"{wanted} is not writable; keeping the journal in {fallback} "
            "(a restore cut off by a power loss then starts over)")
        return fallback

    def release_leftovers(self) -> list[str]:
        """Release what killed earlier runs left (their copy process, their mounts in the
        runtime folder), on every disk the journals name, as a restore's start does on its own disk.

        The wizard does this before it lists the disks: a disk a killed run left mounted
        would show as unsafe and could not be chosen to start again. A disk whose lock
        another console holds is left alone: its restore is running, not left over."""
        from rescue.engine.executor import Executor
        from rescue.engine.journal import Journal
        from rescue.engine.lock import DiskBusy

        done: list[str] = []
        for state in self._state_folders():
            if not state.is_dir():
                continue
            for path in sorted(state.glob("*/journal.json")):
                journal = Journal.load(path)
                if not journal.exists or not journal.target:
                    continue
                executor = Executor(target=journal.target, state_dir=state, face=self.options.face)
                try:
                    done += [f"{journal.target}: {line}" for line in executor.release_leftovers(journal)]
                except DiskBusy:
                    continue
                except RescueError as e:  # its mounts could not be released: the disk stays unsafe, said why
                    done.append(f"{journal.target}: {e.what}")
        return done

    def _state_folders(self) -> list[Path]:
        """Where journals are kept: the state folder, and /run when a session had to fall back to it."""
        folders = [self.state_dir]
        if not os.access(self.state_dir if self.state_dir.exists() else self.state_dir.parent, os.W_OK):
            folders.append(host_paths().fallback_state_dir)  # where a session kept it (usable_state_dir)
        return folders

    # -- resume -------------------------------------------------------------

    def unfinished(self) -> Unfinished | None:
        """The newest unfinished restore whose plan was kept beside its journal, on a disk that still
        is what that journal recorded (the Executor's own resume rule): only that one is offered."""
        from rescue.engine.executor import resume_decision, step_record
        from rescue.engine.journal import Journal, plan_digest
        from rescue.jsonform import FormError
        from rescue.plan.model import Plan

        found: list[tuple[float, Path, Plan, int]] = []
        for state in self._state_folders():
            if not state.is_dir():
                continue
            for plan_file in state.glob(f"*/{PLAN_FILE}"):
                journal = Journal.load(plan_file.with_name("journal.json"))
                if not journal.exists:
                    continue
                try:
                    plan = Plan.from_json(json.loads(plan_file.read_text()))
                    when = plan_file.stat().st_mtime
                except (OSError, ValueError, FormError):
                    continue
                digest = plan_digest([step_record(s) for s in plan.steps])
                if not resume_decision(journal, plan.steps, digest).resume:
                    continue  # another plan by now, finished, or the disk changed: a restore starts over
                done = sum(1 for s in plan.steps if journal.is_done(s.key))
                found.append((when, plan_file.parent, plan, done))
        if not found:
            return None
        when, folder, plan, done = max(found, key=lambda f: f[0])
        return Unfinished(plan=plan, steps_done=done,
                          started=datetime.fromtimestamp(when).isoformat(timespec="minutes"),
                          why=stop_reason(folder, when))


class Session:
    """One run onto its disks, under their locks: the journal folder, the log, plan.json, the report."""

    def __init__(self, restore: Restore, device: str | Sequence[str], say: Callable[[str], None],
                 cancel: threading.Event | None) -> None:
        from rescue.engine.executor import Executor
        from rescue.engine.journal import identity_name
        from rescue.probe import identity_of
        from rescue.safety import assert_still_safe

        self.restore = restore
        self.devices = (device,) if isinstance(device, str) else tuple(device)
        # the journal, the log and the report live with one of them, whatever order they were named in
        self.device = device = min(self.devices)
        options = restore.options
        self.state_dir = restore.usable_state_dir(say)
        identity = identity_of(device)
        self.folder = self.state_dir / identity_name(identity)
        self.stamp = time.strftime("%Y%m%d-%H%M%S")
        self.log_path = options.log or (options.log_dir or self.folder) / f"restore-{self.stamp}.log"
        folders = restore.backup_folders
        self.executor: Executor = Executor(
            target=device, identity=identity, state_dir=self.state_dir, log_path=self.log_path,
            recheck=lambda: [assert_still_safe(d, backup_sources=folders) for d in self.devices] and None,
            bootloader=options.bootloader, verify_checksum=options.verify_checksum, cancel=cancel,
            title=f"restore onto {self.shown}", face=options.face,  # run() names the machine
            more_targets=tuple(d for d in self.devices if d != device))
        self.summary: str | None = None  # the last run's summary, also when it failed
        self.report: Path | None = None

    def plan(self, selection: Selection | Choice) -> Plan:
        """Probe the disks now, under the locks and after the leftovers are released, and plan."""
        return self.restore.plan(selection, self.devices if len(self.devices) > 1 else self.device)

    @property
    def shown(self) -> str:
        """The targets in words: '/dev/sdb' or '/dev/sdb and /dev/sdc'."""
        return " and ".join(self.devices)

    def luks_keys(self, plan: Plan, typed: Mapping[str, LuksKey] | None = None) -> dict[str, LuksKey]:
        """The key of each LUKS container the plan opens: the keyfiles the options name, then
        what a person typed (the wizard, the console); each checked against its kept header.

        MissingKey or WrongKey ("wrong passphrase ..., try again") before anything is written."""
        from rescue.run import run
        from rescue.steps.luks import check_keys, keys_from_files

        keys = keys_from_files(plan.steps, self.restore.options.luks_keys)
        keys.update(typed or {})
        check_keys(run, plan.steps, keys)
        return keys

    def run(self, plan: Plan, on_event: Callable[[ev.Event], None] = lambda e: None,
            luks_keys: Mapping[str, LuksKey] | None = None) -> Outcome:
        """Run the confirmed plan; plan.json beside the journal so the next start can offer to resume.

        `luks_keys`: passphrases a person typed (LUKS UUID -> key), held in memory only. The
        report is written whenever the run ended, failed or not."""
        planned = sorted(t.device for t in plan.targets)
        if planned != sorted(self.devices):
            raise PlanRefused(f"the plan is for {' and '.join(planned)}, not {self.shown}",
                              fix="plan again onto the disks to restore")
        self.executor.luks_keys = self.luks_keys(plan, luks_keys)  # a wrong key: nothing written
        self.executor.title = f"restore of {self.restore.options.client or plan.client} onto {self.shown}"
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        (self.folder / PLAN_FILE).write_text(plan.dumps())
        self.log_path.parent.mkdir(parents=True, exist_ok=True)

        def seen(e: ev.Event) -> None:
            if isinstance(e, ev.PlanDone):
                self.summary = e.summary
            on_event(e)

        from rescue.engine.report import write_report

        try:
            return self.executor.run(plan, seen)
        finally:
            if self.summary is not None:
                self.report = write_report(self.folder, self.summary, self.stamp)


def stop_reason(folder: Path, since: float) -> str:
    """Why the restore kept in folder stopped, from the report its last run wrote (one is written
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
