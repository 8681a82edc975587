"""The Executor: runs a plan's steps in order, journals them, emits events.

A rerun of the same plan onto the same disk resumes an unfinished restore:
finished steps are skipped (StepSkipped), steps whose effect does not
survive (mounts) run again, and an interrupted step is redone in its
idempotent way. Only the unfinished restore the journal belongs to resumes
(resume_decision): the disk must still show the table id and filesystem
UUIDs the finished steps left; a finished restore is never resumed, a new
confirmed one starts over. Leftovers of
a killed run (its copy process, its mounts) are cleaned up first. Everything
mounted is unmounted at the end, also after a failure.

Only one restore runs onto a disk at a time, whichever face started it
(wizard on tty1 or serial, rescue restore, the unattended entry): run() and
release_leftovers() take the disk's lock (rescue.engine.lock) before they
touch anything, and a second one is refused with DiskBusy, nothing written.
"""

from __future__ import annotations

import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rescue import events as ev
from rescue.devices import wait_free
from rescue.engine.context import Child, CommandLog, EngineContext, TargetLost
from rescue.engine.journal import Journal, disk_check_of, plan_digest
from rescue.engine.lock import DiskLock
from rescue.engine.mounts import (
    mounts_of_disk,
    remove_empty_tree,
    swaps_of_disk,
    unmount_all,
)
from rescue.engine.report import summary_text
from rescue.errors import Aborted, RescueError, StepFailed, UnsafeTarget
from rescue.steps.luks import close_left_container
from rescue.steps.lvm import deactivate_left_group
from rescue.steps.md import stop_left_array
from rescue.jsonform import to_json
from rescue.paths import host_paths
from rescue.run import run

DEFAULT_MOUNT_DIR = Path("/run/rescue")


@dataclass(frozen=True)
class Outcome:
    ok: bool
    incomplete: bool
    summary: str
    seconds: float
    journal: Path
    skipped: int  # steps skipped because an earlier run finished them


def step_record(step: Any) -> dict[str, Any]:
    return {"kind": step.kind, **to_json(step)}


WHAT = {"PTUUID": "partition table id", "UUID": "filesystem UUID"}

ReadDevice = Callable[[str], "dict[str, str] | None"]  # rescue.probe.blkid_probe: {} nothing, None unreadable


def _blkid(device: str) -> dict[str, str] | None:
    from rescue.probe import blkid_probe

    return blkid_probe(device)


def _norm(value: str) -> str:
    return value.strip().lower().removeprefix("0x")


def _bare_uuid(value: str) -> str:
    """An md or LVM UUID as blkid and mdadm/lvm each print it, compared without separators."""
    return value.replace(":", "").replace("-", "").strip().lower()


def _layer_evidence(steps: Sequence[Any]) -> dict[str, list[tuple[str, str]]]:
    """For each array, LUKS container and LV the plan makes: (partition, UUID it carries) that show
    it is there while it is not active (after a reboot the arrays are not assembled, the containers
    not open, the VGs not activated: their steps run again on a resume, after this check)."""
    from rescue.steps.luks import OpenLuks
    from rescue.steps.lvm import MakeVolumeGroup, dm_name
    from rescue.steps.md import MakeArray

    arrays = {s.device: s for s in steps if isinstance(s, MakeArray)}
    opened = {f"/dev/mapper/{s.name}": s for s in steps if isinstance(s, OpenLuks)}

    def under(device: str, uuid: str) -> list[tuple[str, str]]:
        o = opened.get(device)
        if o is not None:  # what is inside a closed container: its partition (or array) carries its LUKS UUID
            return under(o.device, _bare_uuid(o.uuid))
        a = arrays.get(device)
        if a is None:
            return [(device, uuid)]
        return [(m, _bare_uuid(a.uuid)) for m in a.members if m]

    evidence = {d: under(d, "") for d in arrays}
    evidence |= {d: under(d, "") for d in opened}
    for s in steps:
        if isinstance(s, MakeVolumeGroup):
            pvs = [e for dev, uuid in s.pvs for e in under(dev, _bare_uuid(uuid))]
            for lv in (*s.lvs, *(t.name for t in s.thin), *(p.name for p in s.pools)):
                evidence[f"/dev/mapper/{dm_name(s.name, lv)}"] = pvs
    return evidence


def disk_differences(journal: Journal, steps: Sequence[Any], read: ReadDevice | None = None) -> list[str]:
    """Where the disk no longer is what the journal's finished steps left on it (empty: it is)."""
    read = read or _blkid
    keys = [s.key for s in steps]
    diffs = []
    for s in steps:
        if journal.is_done(s.key) and disk_check_of(s) and not journal.steps[s.key].get("disk_check"):
            diffs.append(f"'{s.describe()}' finished without a record of what it left on the disk")
    layers = _layer_evidence(steps)
    for (device, field), want in journal.expected_on_disk(keys).items():
        found = read(device)
        if found is None and device in layers and not os.path.exists(device):
            # an array or LV not active (a reboot since): its partitions must still carry it
            gone = [part for part, uuid in layers[device] if _bare_uuid((read(part) or {}).get("UUID", "")) != uuid]
            if gone:
                diffs.append(f"{device} is not active and {', '.join(gone)} no longer carry it")
            continue
        if found is None:
            diffs.append(f"{device} cannot be read")
            continue
        have = found.get(field, "")
        if _norm(have) != _norm(want):
            what = WHAT.get(field, field) + ("" if field == "PTUUID" else f" of {device}")
            diffs.append(f"{what} differs: {want or 'none'} recorded, {have or 'none'} now")
    return diffs


@dataclass(frozen=True)
class ResumeDecision:
    resume: bool
    why: str | None = None  # said to the person when an earlier journal is not resumed


def resume_decision(journal: Journal, steps: Sequence[Any], digest: str,
                    read: ReadDevice | None = None, work: str = "restore") -> ResumeDecision:
    """Resume only the unfinished restore of this plan on the disk it was writing (DESIGN.md).

    A finished restore is never resumed: a new confirmed restore starts over.
    An unfinished one resumes only when the disk still shows the table id and
    filesystem UUIDs its finished steps left; else it starts over, saying why.
    """
    if not journal.steps:
        return ResumeDecision(False)
    if journal.digest != digest:
        return ResumeDecision(False, f"an earlier {work} onto this disk followed another plan: starting over")
    if journal.finished is not None or all(journal.is_done(s.key) for s in steps):
        when = (f" on {time.strftime('%Y-%m-%d at %H:%M', time.localtime(journal.finished))}"
                if journal.finished else "")
        return ResumeDecision(False, f"an earlier {work} onto this disk finished{when}: "
                                     f"this is a new {work}, so every step runs again")
    diffs = disk_differences(journal, steps, read)
    if diffs:
        return ResumeDecision(False, f"the journal of an earlier {work} does not match this disk "
                                     f"({'; '.join(diffs)}): starting over")
    return ResumeDecision(True)


def minimal_target_check(target: str, backup_paths: Sequence[Path] = ()) -> None:
    """The engine's own last look before the first write: a whole, unmounted disk, not the backup's.

    Runs after rescue.safety.assert_still_safe (a fresh probe): minutes may
    have passed since the plan was made.
    """
    name = os.path.basename(os.path.realpath(target))
    sys_dir = Path("/sys/class/block") / name
    if not os.path.exists(target) or not sys_dir.is_dir():
        raise UnsafeTarget(f"{target} is not a block device", fix="name the whole target disk, e.g. /dev/sdb")
    if (sys_dir / "partition").exists():
        raise UnsafeTarget(f"{target} is a partition, not a whole disk",
                           fix=f"name the disk it belongs to, not {target}")
    mounted = mounts_of_disk(target)
    if mounted:
        raise UnsafeTarget(f"{target} has mounted filesystems: {', '.join(m.target for m in mounted)}",
                           why="writing a disk in use destroys what is running from it",
                           fix="unmount them (or choose another disk) and run again")
    swaps = swaps_of_disk(target)
    if swaps:
        raise UnsafeTarget(f"{target} has active swap: {', '.join(swaps)}", fix="swapoff it and run again")
    from rescue.engine.mounts import disk_devnums

    nums = disk_devnums(target)
    for p in backup_paths:
        try:
            st = os.stat(p)
        except OSError:
            continue
        if (os.major(st.st_dev), os.minor(st.st_dev)) in nums:
            raise UnsafeTarget(f"{target} holds the backup being restored ({p})",
                               fix="choose the new blank disk as target")


def _still_safe(target: str, backup_paths: Sequence[Path]) -> None:
    """rescue.safety's full probe and check, then the engine's own device-number look."""
    from rescue.safety import assert_still_safe

    assert_still_safe(target, backup_sources=tuple(backup_paths))
    minimal_target_check(target, backup_paths)


def _ours(base: Path, mount_dir: Path) -> bool:
    """A private mount folder made by Executor.run: mount_dir/target-XXXX, no links."""
    try:
        return (base.name.startswith("target-") and base.parent.resolve() == mount_dir.resolve()
                and not base.is_symlink())
    except OSError:
        return False


class Executor:
    def __init__(
        self,
        *,
        target: str,
        identity: str | None = None,
        state_dir: Path | None = None,
        log_path: Path | None = None,
        mount_dir: Path = DEFAULT_MOUNT_DIR,
        recheck: Callable[[], None] | None = None,
        backup_paths: Sequence[Path] = (),
        bootloader: str = "auto",
        verify_checksum: bool = False,
        cancel: threading.Event | None = None,
        title: str = "",
        face: str = "rescue restore",
        lock_dir: Path | None = None,
        read_device: ReadDevice | None = None,
        work: str = "restore",
        more_targets: Sequence[str] = (),
        luks_keys: Mapping[str, Any] | None = None,
    ) -> None:
        self.target = target
        self.more_targets = tuple(more_targets)  # the other disks of a restore onto several
        self.luks_keys = luks_keys  # LUKS UUID -> LuksKey, handed to the steps in memory only
        self.identity = identity or target
        self.state_dir = Path(state_dir) if state_dir is not None else host_paths().state_dir
        self.log_path = log_path
        self.mount_dir = Path(mount_dir)
        self.recheck = recheck or (lambda: [_still_safe(d, backup_paths) for d in (target, *self.more_targets)]
                                   and None)
        self.bootloader = bootloader
        self.verify_checksum = verify_checksum
        self.cancel = cancel or threading.Event()
        self.title = title
        # the disk locks live beside the mounts, in the runtime folder every face shares (/run/rescue);
        # several are always taken in the same (sorted) order, so two restores never wait on each other
        self.disk_locks = tuple(DiskLock(disk, face, lock_dir or self.mount_dir / "locks")
                                for disk in sorted({target, *self.more_targets}))
        self._lock_depth = 0
        self.read_device = read_device or _blkid
        self.work = work  # what the plan does, in the messages: "restore", "prepare-disk"

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold every target's one-restore-per-disk lock; DiskBusy names who holds one.

        Re-entrant: run() and release_leftovers() take it themselves, and a
        face that writes beside the journal first (plan.json) holds it around both.
        """
        if self._lock_depth == 0:
            taken: list[DiskLock] = []
            try:
                for lock in self.disk_locks:
                    lock.acquire()
                    taken.append(lock)
            except BaseException:
                for lock in reversed(taken):
                    lock.release()
                raise
        self._lock_depth += 1
        try:
            yield
        finally:
            self._lock_depth -= 1
            if self._lock_depth == 0:
                for lock in reversed(self.disk_locks):
                    lock.release()

    def journal(self) -> Journal:
        return Journal.for_target(self.state_dir, self.identity)

    def release_leftovers(self, journal: Journal | None = None, log: CommandLog | None = None) -> list[str]:
        """End a killed run's copy process and unmount its mounts, so the disk is free again.

        Only what the journal says an earlier rescue run started is touched, and
        only under the disk's lock: a restore running now from another face is not
        "an earlier run". Returns what was done, for the log.
        """
        with self.locked():
            return self._release_leftovers(journal or self.journal(), log)

    def _release_leftovers(self, journal: Journal, log: CommandLog | None) -> list[str]:
        done = []
        for key, entry in journal.steps.items():
            child = entry.get("data", {}).get("child")
            if not child:
                continue
            c = Child(int(child["pid"]), int(child["start_time"]))
            if c.alive():
                try:
                    os.killpg(c.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    os.kill(c.pid, signal.SIGKILL)
                for _ in range(100):
                    if not c.alive():
                        break
                    time.sleep(0.05)
                done.append(f"ended the copy process {c.pid} left by an earlier run ({key})")
            entry["data"].pop("child", None)
        base = Path(journal.mount_base) if journal.mount_base else None
        if base is not None and not _ours(base, self.mount_dir):
            # Only a folder this engine makes (mount_dir/target-*) is ever unmounted: a damaged
            # journal naming "/" or /home must not unmount the rescue system's own mounts.
            done.append(f"left {base} alone: the journal names it, but rescue makes its mounts "
                        f"only in {self.mount_dir}/target-*")
            base = None
        if base is not None and base.exists():

            def logged(argv: list[str], **kw: Any) -> Any:
                r = run(argv, **kw)
                if log:
                    log.command(argv, r)
                return r

            left = unmount_all(logged, base)
            if left:
                raise StepFailed(f"an earlier run's mounts could not be released: {', '.join(left)}",
                                 fix="unmount them by hand and run again")
            remove_empty_tree(base)
            done.append(f"released the mounts of an earlier run under {base}")
        # once nothing on them is mounted: the VGs an earlier run made first (they may lie on its arrays)
        made = [(key, entry.get("data", {})) for key, entry in journal.steps.items()]
        for key, data in made:
            vg = data.get("vg")
            if isinstance(vg, dict) and isinstance(vg.get("devices"), list) and deactivate_left_group(
                    run, str(vg.get("name")), str(vg.get("uuid")), [str(d) for d in vg["devices"]]):
                done.append(f"deactivated LVM volume group {vg['name']}, which an earlier run made ({key})")
        for key, data in made:  # then the LUKS containers it opened (they may lie on its arrays)
            luks = data.get("luks")
            if isinstance(luks, dict) and close_left_container(run, str(luks.get("name")), str(luks.get("device"))):
                done.append(f"closed LUKS /dev/mapper/{luks['name']}, which an earlier run opened ({key})")
        for key, data in made:
            array = data.get("array")
            if isinstance(array, dict) and stop_left_array(run, str(array.get("device")), str(array.get("uuid"))):
                done.append(f"stopped md {array['device']}, which an earlier run made ({key})")
        if done and journal.exists:
            journal.save()
        return done

    def run(self, plan: Any, on_event: Callable[[ev.Event], None] = lambda e: None) -> Outcome:
        with self.locked():  # before the journal, the log or the leftovers are touched
            return self._run(plan, on_event)

    def _run(self, plan: Any, on_event: Callable[[ev.Event], None]) -> Outcome:
        steps = list(plan.steps if hasattr(plan, "steps") else plan)
        keys = [s.key for s in steps]
        if len(set(keys)) != len(keys):
            raise RescueError("the plan has two steps with the same key", fix="this is a bug in the plan")
        t0 = time.monotonic()
        journal = self.journal()
        log = CommandLog(self.log_path)
        log.write(f"== rescue {self.work} onto {self.target} at {time.strftime('%Y-%m-%d %H:%M:%S')}")
        digest = plan_digest([step_record(s) for s in steps])
        for line in self._release_leftovers(journal, log):
            log.write(f"  # {line}")
            on_event(ev.Output("resume", line))
        decision = resume_decision(journal, steps, digest, self.read_device, self.work)
        resumed = decision.resume
        if decision.why:
            log.write(f"  # {decision.why}")
            on_event(ev.Output("resume", decision.why))
        if not resumed:
            journal.reset(digest, self.target)
        self.mount_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        base = Path(tempfile.mkdtemp(prefix="target-", dir=self.mount_dir))
        journal.mount_base = str(base)
        journal.runs += 1
        journal.save()
        ctx = EngineContext(target=self.target, journal=journal, mount_base=base, log=log, emit=on_event,
                            cancel=self.cancel, bootloader=self.bootloader,
                            verify_checksum=self.verify_checksum, more_targets=self.more_targets,
                            luks_keys=self.luks_keys)
        ctx.root.mkdir(mode=0o755)
        ctx.work.mkdir(mode=0o700)
        on_event(ev.PlanStarted(len(steps), resumed))

        checked = False
        prefix_done = True  # every persistent step so far was finished by an earlier run
        skipped = 0
        failure: str | None = None
        try:
            for i, step in enumerate(steps):
                persistent = getattr(step, "persistent", True)
                if persistent and prefix_done and journal.is_done(step.key):
                    skipped += 1
                    on_event(ev.StepSkipped(i, step.key, step.describe()))
                    continue
                if self.cancel.is_set():
                    raise Aborted(f"the {self.work} was cancelled between steps",
                                  fix="rerun the same command to resume where it stopped")
                if not checked:
                    self.recheck()
                    # what a killed run left (a mount in a dying namespace, a child still exiting)
                    # lets go within moments; anything else holding the target is named, nothing written
                    for disk in (self.target, *self.more_targets):
                        wait_free(disk)
                    checked = True
                ctx.key = step.key
                ctx.resuming = journal.was_started(step.key)
                if persistent:
                    prefix_done = False
                    journal.forget_after(keys[i + 1:])
                on_event(ev.StepStarted(i, len(steps), step.key, step.describe()))
                log.write(f"== step {i + 1}/{len(steps)}: {step.describe()}"
                          + (" (resuming)" if ctx.resuming else ""))
                journal.start(step.key)
                t1 = time.monotonic()
                try:
                    step.run(ctx)
                    lost = ctx.lost_target_error(f"step {i + 1} ({step.describe()})")
                    if lost:  # the step ended "well" on a disk that is no longer there
                        raise lost
                except (RescueError, OSError) as e:
                    # a vanished target disk is named as the cause, not the I/O error it caused
                    err = ctx.lost_target_error(f"step {i + 1} ({step.describe()})", e) or e
                    failure = (_one_line(err) if isinstance(err, TargetLost)
                               else f"step {i + 1} ({step.describe()}): {_one_line(err)}")
                    log.write(f"!! {failure}")
                    on_event(ev.StepFailed(i, step.key, str(err)))
                    if err is e:
                        raise
                    raise err from e
                if persistent:
                    # What the step wrote must be on the disk before the journal says "done": after
                    # a power cut the rerun skips done steps (a copy marked done with its files still
                    # in the page cache came back with empty files).
                    os.sync()
                    self._record_disk_check(journal, step)
                journal.finish(step.key, time.monotonic() - t1)
                on_event(ev.StepDone(i, step.key, time.monotonic() - t1))
        except (Aborted, UnsafeTarget):
            self._finish(ctx, steps, journal, on_event, t0, ok=False, failure=failure)
            raise
        except (RescueError, OSError) as e:
            self._finish(ctx, steps, journal, on_event, t0, ok=False, failure=failure)
            raise StepFailed(
                failure or _one_line(e),
                why=getattr(e, "why", None) or (str(e) if isinstance(e, OSError) else None),
                fix=getattr(e, "fix", None) or "fix the cause and rerun the same command: finished steps are skipped",
            ) from e
        except BaseException:
            self._finish(ctx, steps, journal, on_event, t0, ok=False, failure="interrupted")
            raise
        outcome = self._finish(ctx, steps, journal, on_event, t0, ok=True, failure=None, skipped=skipped)
        if outcome.ok:  # a finished restore is never resumed: the next confirmed one starts over
            journal.finished = time.time()
            journal.save()
        if not outcome.ok:
            raise StepFailed(f"the {self.work} finished but its filesystems could not all be unmounted",
                             fix="close programs using them, unmount them, and rerun the same command")
        return outcome

    def _record_disk_check(self, journal: Journal, step: Any) -> None:
        """Note what the step left on the disk, read back from the disk itself (blkid -p)."""
        check = disk_check_of(step)
        if check is None:
            return
        device, field = check
        found = self.read_device(device)
        if found is not None:  # unreadable: nothing recorded, so a resume starts over
            journal.record_check(step.key, device, field, found.get(field, ""))

    def _finish(self, ctx: EngineContext, steps: list[Any], journal: Journal,
                on_event: Callable[[ev.Event], None], t0: float, *, ok: bool, failure: str | None,
                skipped: int = 0) -> Outcome:
        gone = ctx.target_lost()
        if gone:  # nothing on a vanished disk can be flushed: detach at once, never block on it
            ctx.log.write(f"  # {gone}: its filesystems are detached lazily")
        left = unmount_all(ctx.run, ctx.mount_base, lazy=gone is not None)
        remove_empty_tree(ctx.mount_base)
        if left:
            ok = False
            failure = failure or f"could not unmount {', '.join(left)}"
        seconds = time.monotonic() - t0
        incomplete = any(e.get("data", {}).get("unreadable") for e in journal.steps.values())
        text = summary_text(title=self.title, target=self.target, steps=steps, journal=journal, ok=ok,
                            seconds=seconds, failure=failure)
        ctx.log.write(text)
        ctx.log.close()
        on_event(ev.PlanDone(ok, seconds, text, incomplete))
        return Outcome(ok, incomplete, text, seconds, journal.path, skipped)


def _one_line(e: BaseException) -> str:
    what = getattr(e, "what", None) or str(e)
    return str(what).splitlines()[0] if what else type(e).__name__
