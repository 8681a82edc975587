"""The wizard's engine on a real machine: every call goes to rescue's own modules.

Nothing here decides how to restore: discovery is rescue.backups, disks are
rescue.probe, the plan is rescue.plan.build_plan, the run is rescue.engine.
This only adapts their answers to what the screens draw.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rescue.backups import Image, Machine
from rescue.backups.source import ImageSource
from rescue.engine.restore import Restore, RestoreOptions
from rescue.errors import RescueError
from rescue.events import Event, Output
from rescue.paths import host_paths
from rescue.plan.disks import CapturedDisk
from rescue.target import TargetDisk
from rescue.tui.facade import SHELL_MOUNT, Discovery, Interrupted
from rescue.tui.review import STEP_COST, CopyRow, FsRow, Review, TableRow

if TYPE_CHECKING:
    from rescue.plan.model import Plan


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
        disks=mapping_lines(plan),
        targets=tuple(t.device for t in plan.targets) if plan.more else (),
        snapshots=plan.snapshots, btrfs_snapshots=plan.options.btrfs_snapshots,
        weights=tuple(next((c.bytes for c in plan.copies if s.kind == "copy" and s.key == f"copy:{c.vault}"),
                           STEP_COST) for s in plan.steps))


def mapping_lines(plan: Plan) -> tuple[str, ...]:
    """A machine with several disks: each captured disk and its new disk (and what that loses), or left out."""
    several = plan.more or plan.options.disk_map or plan.options.skip_disks
    if not several:
        return ()
    lines = [line for d in plan.disks for line in (
        f"captured {d.source.device} ({_h(d.source.size)}) -> {d.target.device} ({_h(d.target.size)})"
        + (f", {d.target.model}" if d.target.model else ""),
        *(f"    DESTROYED on {d.target.device}: {x}" for x in d.destroyed))]
    mapped = {d.source.device for d in plan.disks}
    lines += [f"captured {old}: LEFT OUT, nothing of it is restored" for old in plan.options.skip_disks
              if old not in mapped]
    return tuple(lines)


def _h(n: int) -> str:
    from rescue.tui.review import human

    return human(n)


class RealEngine:
    """rescue's modules behind the wizard's Engine interface."""

    def __init__(self, banks: Sequence[Path] = (), config: Path | None = None,
                 backup_mount: Path | None = None, state_dir: Path | None = None,
                 log_dir: Path | None = None, master_conf: Path | None = None,
                 source: ImageSource | None = None, options: RestoreOptions | None = None) -> None:
        hosts = host_paths()  # the rescue system's /backup and /etc/dirvish/master.conf by default
        # what --bank, --rsnapshot and --tree named (the banks given alone: the older callers)
        self.given = source if source is not None else ImageSource(banks=tuple(banks))
        self.config = config
        self.backup_mount = backup_mount or hosts.backup_mount
        self.master_conf = master_conf or hosts.dirvish_master
        # the same options as rescue restore; the machine, vaults left out and sizes come from the screens
        self.options = dataclasses.replace(options or RestoreOptions(), face="rescue wizard",
                                           **{k: v for k, v in (("state_dir", state_dir), ("log_dir", log_dir))
                                              if v is not None})
        self.plans: dict[Review, Plan] = {}
        self.last_log: Path | None = None
        self.last_report: Path | None = None
        self.backup_devices: tuple[str, ...] = ()
        self.shell_mount = SHELL_MOUNT
        self.luks_typed: dict[str, Any] = {}  # LUKS UUID -> LuksKey typed in the wizard: memory only
        self._new_luks_key: dict[str, Any] = {}  # a new passphrase typed once, waiting for the second

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

    def restore(self, **options: Any) -> Restore:
        """The one restore object rescue restore and the unattended entry drive too."""
        return Restore(self.source()[0], dataclasses.replace(self.options, **options),
                       backup_folders=self._sources())

    def choose(self, machine: Machine) -> Mapping[str, Image]:
        """The default image per vault; a vault with none is refused at plan time unless left out."""
        return self.restore().choose(machine).images

    # -- disks and plan -----------------------------------------------------

    def disks(self) -> tuple[TargetDisk, ...]:
        from rescue.probe import list_disks

        return tuple(list_disks(backup_sources=self._sources()))

    def release_leftovers(self) -> tuple[str, ...]:
        return tuple(self.restore().release_leftovers())

    def captured_disks(self, machine: Machine, images: tuple[Image, ...]) -> tuple[CapturedDisk, ...]:
        from rescue.layout.legacy import newest_layout
        from rescue.plan.build import captured_disks

        layout = newest_layout(images)
        return captured_disks(layout) if layout is not None else ()

    def plan(self, machine: Machine, images: tuple[Image, ...], target: TargetDisk | tuple[TargetDisk, ...],
             skip: tuple[str, ...] = (), sizes: tuple[tuple[str, int], ...] = (),
             disk_map: tuple[tuple[str, str], ...] = (), skip_disks: tuple[str, ...] = (),
             snapshots: str | None = None) -> Review:
        # the same options as `rescue restore --target OLD=NEW --skip-disk OLD --btrfs-snapshots CHOICE`
        restore = self.restore(skip_vaults=tuple(skip), sizes=tuple(sizes), disk_map=tuple(disk_map),
                               skip_disks=tuple(skip_disks),
                               btrfs_snapshots=snapshots or self.options.btrfs_snapshots)
        plan = restore.plan(restore.choose(machine).picked(images), target)
        review = review_of(plan)
        self.plans[review] = plan
        return review

    # -- running ------------------------------------------------------------

    @property
    def state_dir(self) -> Path | None:
        return self.options.state_dir

    @state_dir.setter
    def state_dir(self, folder: Path | None) -> None:
        self.options = dataclasses.replace(self.options, state_dir=folder)

    def interrupted(self) -> Interrupted | None:
        """The engine's unfinished restore (its own resume rule), laid out for the resume screen."""
        found = self.restore().unfinished()
        if found is None:
            return None
        plan = found.plan
        review = review_of(plan)
        self.plans[review] = plan
        return Interrupted(client=plan.client, target=plan.target.device, steps_done=found.steps_done,
                           steps_total=len(plan.steps), review=review, started=found.started, why=found.why)

    def _sources(self) -> tuple[Path, ...]:
        source, _notes = self.source()
        sources = list(source.folders)
        if source.config is not None:
            from rescue.backups.dirvish import banks_from_master

            sources.extend(banks_from_master(source.config))
        return tuple(sources) or (self.backup_mount,)

    def luks_needed(self, review: Review) -> tuple[tuple[str, str], ...]:
        """(LUKS UUID, name) of each container the restore opens that no keyfile or typed passphrase opens yet."""
        from rescue.steps.luks import containers_needing_keys, containers_needing_new_keys, keys_from_files

        steps = self.plans[review].steps
        given = keys_from_files(steps, self.options.luks_keys)
        return tuple((c.uuid, c.name) for c in [*containers_needing_keys(steps), *containers_needing_new_keys(steps)]
                     if c.uuid not in given and c.uuid not in self.luks_typed)

    def check_luks_key(self, uuid: str, passphrase: str) -> str | None:
        """None when the passphrase opens the container's kept header (it is then kept in memory
        for the run), else what to tell the person. Runs cryptsetup: call it from a worker."""
        from rescue.run import run
        from rescue.steps.luks import LuksKey, containers_needing_keys, containers_needing_new_keys, key_opens

        key = LuksKey(passphrase, "passphrase typed")
        for plan in self.plans.values():
            if any(c.uuid == uuid for c in containers_needing_new_keys(plan.steps)):
                first = self._new_luks_key.pop(uuid, None)  # a new master key: typed twice, then kept
                if first is None:
                    self._new_luks_key[uuid] = key
                    return "type the new passphrase again"
                if first == key:
                    self.luks_typed[uuid] = key
                    return None
                return "the two passphrases differ, type the new passphrase again"
            for c in containers_needing_keys(plan.steps):
                if c.uuid == uuid:
                    if key_opens(run, c.header, key):
                        self.luks_typed[uuid] = key
                        return None
                    return f"wrong passphrase for LUKS UUID {uuid}, try again"
        return f"this restore opens no LUKS container with UUID {uuid}"

    def run(self, review: Review, emit: Callable[[Event], None], cancel: threading.Event) -> None:
        """Run as `rescue restore` does: the same lock, leftovers released, journal, plan.json, log and report."""
        plan = self.plans[review]

        def say(line: str) -> None:
            emit(Output("resume", line))

        devices = [t.device for t in plan.targets]  # a resumed restore onto several disks holds them all
        with self.restore().session(devices[0] if len(devices) == 1 else devices, say=say,
                                    cancel=cancel) as session:
            self.last_log = session.log_path
            try:
                session.run(plan, emit, luks_keys=self.luks_typed)
            finally:
                self.last_report = session.report

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
