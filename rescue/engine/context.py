"""The concrete Context a running step gets from the Executor.

Everything a step does to the system goes through `ctx.run` / `ctx.spawn`
(the one gateway, plus a `+ cmd` line in the restore's log file), and
everything it wants a person to know goes through `ctx.emit` / `ctx.note`.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from rescue import run as gateway
from rescue.engine.journal import Journal
from rescue.errors import StepFailed
from rescue.events import Event, Output
from rescue.run import Arg, CommandError, Result

# How the bootloader step behaves. "auto": install, except onto a loop device
# (grub-install cannot find a GRUB drive there), which is reported as not attempted.
BOOTLOADER_MODES = ("auto", "install", "skip")


class CommandLog:
    """The restore's log file: every command run, its exit code and output."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._f: IO[str] | None = None
        self._lock = threading.Lock()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._f = open(path, "a", encoding="utf-8", errors="replace")

    def write(self, text: str) -> None:
        if self._f is None:
            return
        with self._lock:
            self._f.write(text if text.endswith("\n") else text + "\n")
            self._f.flush()

    def command(self, argv: Sequence[str], result: Result | None, error: CommandError | None = None) -> None:
        stamp = time.strftime("%H:%M:%S")
        lines = [f"[{stamp}] + {shlex.join(argv)}"]
        if result is not None:
            if result.stdout.strip():
                out = result.stdout
                if len(out) > 20000:
                    out = out[:20000] + f"\n... ({len(result.stdout)} characters in all)"
                lines.append(_indent(out))
            if result.stderr.strip():
                lines.append(_indent(result.stderr))
            lines.append(f"  = exit {result.returncode}")
        if error is not None:
            if error.stderr.strip():
                lines.append(_indent(error.stderr))
            lines.append(f"  = exit {error.returncode}")
        self.write("\n".join(lines))

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


def _indent(text: str) -> str:
    return "\n".join("  | " + line for line in text.rstrip("\n").splitlines())


@dataclass(frozen=True)
class Child:
    """A long-running command a step started, recorded so a rerun can end a leftover one."""

    pid: int
    start_time: int  # /proc/PID/stat field 22: tells a reused pid apart

    @classmethod
    def of(cls, pid: int) -> Child:
        return cls(pid, process_start_time(pid) or 0)

    def alive(self) -> bool:
        return self.start_time != 0 and process_start_time(self.pid) == self.start_time


def process_start_time(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name may hold spaces and parentheses: split after the last ')'
    fields = stat[stat.rfind(")") + 2:].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def _sys_text(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


@dataclass(frozen=True)
class DiskIdentity:
    """What tells the target disk apart, taken before the restore writes it.

    A disk that is unplugged, loses power or dies during a restore makes the
    running command fail with an I/O error that says nothing about why; one
    that comes back (or another disk plugged in) may get the same /dev name.
    The Executor compares these facts after a step fails, to name the cause.
    """

    device: str
    name: str  # kernel name, e.g. vdb, sdb
    devnum: str  # "major:minor" from /sys/class/block/NAME/dev
    sectors: int  # size in 512-byte sectors
    serial: str  # serial or wwid when the kernel shows one, else ""

    @classmethod
    def of(cls, device: str) -> DiskIdentity | None:
        name = os.path.basename(os.path.realpath(device))
        sys_dir = Path("/sys/class/block") / name
        if not sys_dir.is_dir():
            return None
        serial = ""
        for rel in ("serial", "device/serial", "wwid", "device/wwid"):
            serial = _sys_text(sys_dir / rel)
            if serial:
                break
        try:
            sectors = int(_sys_text(sys_dir / "size") or 0)
        except ValueError:
            sectors = 0
        return cls(device, name, _sys_text(sys_dir / "dev"), sectors, serial)

    def lost(self) -> str | None:
        """None while the same disk is still there; else what happened to it, in a phrase."""
        now = DiskIdentity.of(self.device)
        if now is None or not os.path.exists(self.device):
            return f"{self.device} is gone: the kernel no longer lists a disk {self.name}"
        if now.sectors == 0 and self.sectors:
            return f"{self.device} now has no medium (size 0): it stopped answering"
        changed = [f"{what} {a or '-'} -> {b or '-'}" for what, a, b in (
            ("device number", self.devnum, now.devnum),
            ("serial", self.serial, now.serial),
            ("size (sectors)", str(self.sectors), str(now.sectors)),
        ) if a != b]
        if changed:
            return f"{self.device} is now another disk ({'; '.join(changed)})"
        return None


class TargetLost(StepFailed):
    """The target disk vanished (or was replaced) while the restore wrote it."""

    @classmethod
    def during(cls, step: str, why_lost: str, disk: DiskIdentity, cause: str = "") -> TargetLost:
        label = f"{disk.device}" + (f" (serial {disk.serial})" if disk.serial else "")
        return cls(
            f"the target disk {label} disappeared during {step}",
            why=why_lost + ". It was unplugged, lost power or failed while being written"
            + (f"; the step itself said: {cause}" if cause else "")
            + ". The backup was only read and is unchanged.",
            fix=f"reattach {label} (check its cable and power) and rerun the same command: finished "
                "steps are skipped; or choose another disk as --target and start a new restore",
        )


class EngineContext:
    """What steps use while the Executor runs them (implements steps.base.Context)."""

    def __init__(
        self,
        *,
        target: str,
        journal: Journal,
        mount_base: Path,
        log: CommandLog,
        emit: Callable[[Event], None],
        cancel: threading.Event | None = None,
        bootloader: str = "auto",
        verify_checksum: bool = False,
        more_targets: Sequence[str] = (),
        luks_keys: Mapping[str, Any] | None = None,
    ) -> None:
        if bootloader not in BOOTLOADER_MODES:
            raise ValueError(f"bootloader mode {bootloader!r} is not one of {BOOTLOADER_MODES}")
        self.target = target
        self.targets = (target, *more_targets)  # a restore onto several disks writes them all
        self.journal = journal
        self.mount_base = mount_base
        self.root = mount_base / "root"  # the restored system's / hangs here
        self.work = mount_base / "work"  # single-filesystem bind mounts for copy and verify
        self.log = log
        self._emit = emit
        self._cancel = cancel or threading.Event()
        self.bootloader = bootloader
        self.verify_checksum = verify_checksum
        self._luks_keys = dict(luks_keys or {})  # LUKS UUID -> LuksKey: in memory only, never journaled
        self.key = ""  # the running step's journal key, set by the Executor
        self.resuming = False  # the running step was started by an earlier run
        self.results: dict[str, Any] = {}  # facts steps hand to later steps in this run
        # the target as it was when the run began (None when it is not a disk /sys knows,
        # e.g. in a test with a fake target)
        self.disk = DiskIdentity.of(target)

    def target_lost(self) -> str | None:
        """Why the target is no longer the disk this run began writing, or None."""
        return self.disk.lost() if self.disk is not None else None

    def lost_target_error(self, step: str, cause: BaseException | None = None) -> TargetLost | None:
        """A TargetLost for `step` when the target vanished (None while it is there).

        What the step concluded from its failed commands is dropped from the
        journal: with the target gone, "could not be read from the backup" or
        "full" would blame the wrong disk.
        """
        if isinstance(cause, TargetLost):
            return cause
        why = self.target_lost()
        if why is None or self.disk is None:
            return None
        self.journal.notes.pop(self.key, None)
        self.data().pop("unreadable", None)
        self.journal.save()
        said = ""
        if cause is not None:
            said = str(getattr(cause, "what", None) or cause).splitlines()[0] if str(cause) else type(cause).__name__
        return TargetLost.during(step, why, self.disk, said)

    def luks_key(self, uuid: str) -> Any:
        """The key a face was given for a LUKS container (rescue.steps.luks.LuksKey), or None."""
        return self._luks_keys.get(uuid)

    # -- the gateway ---------------------------------------------------------

    def run(self, argv: Sequence[Arg], **kwargs: Any) -> Result:
        args = [os.fspath(a) for a in argv]
        try:
            result = gateway.run(args, **kwargs)
        except CommandError as e:
            self.log.command(args, None, e)
            raise
        self.log.command(args, result)
        return result

    def spawn(self, argv: Sequence[Arg], **kwargs: Any) -> subprocess.Popen[bytes]:
        """Start a long command; its pid goes into the journal so a rerun can end a leftover."""
        args = [os.fspath(a) for a in argv]
        self.log.write(f"[{time.strftime('%H:%M:%S')}] + {shlex.join(args)} &")
        proc = gateway.spawn(args, **kwargs)
        child = Child.of(proc.pid)
        self.data()["child"] = {"pid": child.pid, "start_time": child.start_time}
        self.journal.save()
        return proc

    def child_done(self, proc: subprocess.Popen[bytes]) -> None:
        self.log.write(f"  = exit {proc.returncode} (pid {proc.pid})")
        self.data().pop("child", None)
        self.journal.save()

    # -- events and notes ----------------------------------------------------

    def emit(self, event: Event) -> None:
        self._emit(event)

    def say(self, line: str) -> None:
        """A line for the person watching (not kept in the report)."""
        self.log.write(f"  # {line}")
        self._emit(Output(self.key, line))

    def note(self, line: str) -> None:
        """A line for the person watching that also goes into the kept report."""
        self.say(line)
        notes = self.journal.notes.setdefault(self.key, [])
        if line not in notes:
            notes.append(line)
        self.journal.save()

    def cancelled(self) -> bool:
        return self._cancel.is_set()

    # -- per-step records ----------------------------------------------------

    def data(self, key: str | None = None) -> dict[str, Any]:
        """This step's (or another step's) record in the journal; call save() after changing it."""
        return self.journal.data(key or self.key)

    def save(self) -> None:
        self.journal.save()

    def path(self, mountpoint: str) -> Path:
        """Where a mount point of the restored system is, under the private root.

        Resolved as chroot would ('..' and symlinks never lead out of the root)."""
        from rescue.steps.base import confined

        return confined(self.root, mountpoint)

    def uuid_changes(self) -> list[dict[str, Any]]:
        """Filesystems that could not keep their captured UUID (recorded by mkfs/mkswap)."""
        out = []
        for entry in self.journal.steps.values():
            ch = entry.get("data", {}).get("uuid_changed")
            if ch:
                out.append(ch)
        return out
