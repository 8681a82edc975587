"""The restore journal: what a rerun of the same command needs to resume.

One JSON file per target disk (keyed by the disk's identity, not its name,
which can change between boots), written atomically after every change so a
power cut leaves either the old or the new state, never half of one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

JOURNAL_VERSION = 1
DEFAULT_STATE_DIR = Path("/var/lib/rescue")  # the default only: rescue.paths.host_paths().state_dir is read

STARTED = "started"
DONE = "done"


# What a finished step leaves on the disk that shows it is still the same disk: the table id
# (blkid PTUUID) after the wipe ("" = no table) and the partition step, a filesystem's or swap's
# UUID after mkfs and mkswap, the rescue filesystem's UUID after prepare-disk writes its image. A journal (and restore.sh's markers) resumes only where the disk
# still shows these.
DISK_CHECKS = {"wipe": ("disk", "PTUUID"), "partition": ("disk", "PTUUID"),
               "mkfs": ("device", "UUID"), "mkswap": ("device", "UUID"),
               "image": ("device", "UUID"), "luks-header": ("device", "UUID")}


def disk_check_of(step: Any) -> tuple[str, str] | None:
    """(device, blkid field) that proves a finished step's work is still on the disk, if any."""
    check = DISK_CHECKS.get(getattr(step, "kind", ""))
    return (getattr(step, check[0]), check[1]) if check else None


def identity_name(text: str) -> str:
    """A file-name-safe form of a disk identity (by-id name, serial, device)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", text.strip("/")).strip("_")
    return name or "disk"


def plan_digest(steps: list[dict[str, Any]]) -> str:
    """Fingerprint of a plan: a journal only resumes the plan that wrote it."""
    blob = json.dumps(steps, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def _sane_step(entry: Any) -> bool:
    """A step record as `start`/`finish`/`data` write it (the child is what a rerun may kill)."""
    if not isinstance(entry, dict):
        return False
    attempts, data = entry.get("attempts", 0), entry.get("data", {})
    if not isinstance(attempts, int) or isinstance(attempts, bool) or not isinstance(data, dict):
        return False
    check = entry.get("disk_check")
    if check is not None and not (isinstance(check, dict) and set(check) == {"device", "field", "value"}
                                  and all(isinstance(v, str) for v in check.values())):
        return False
    child = data.get("child")
    if child:
        if not isinstance(child, dict):
            return False
        pid, start = child.get("pid"), child.get("start_time")
        if not (isinstance(pid, int) and not isinstance(pid, bool) and pid > 1
                and isinstance(start, (int, float)) and not isinstance(start, bool)):
            return False
    return True


@dataclass
class Journal:
    """Mutable on purpose: it is the engine's record of progress, saved on each change."""

    path: Path
    digest: str = ""
    target: str = ""
    mount_base: str | None = None  # private mount folder of the run that wrote it
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)  # per step key, for the report
    runs: int = 0
    finished: float | None = None  # when every step of the plan had run: such a journal is never resumed

    @classmethod
    def for_target(cls, state_dir: Path, identity: str) -> Journal:
        return cls.load(Path(state_dir) / identity_name(identity) / "journal.json")

    @classmethod
    def load(cls, path: Path) -> Journal:
        """Read a journal; a missing or unreadable one starts empty (never guesses)."""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError):
            return cls(path=Path(path))
        if not isinstance(data, dict) or data.get("version") != JOURNAL_VERSION:
            return cls(path=Path(path))
        steps, notes, runs = data.get("steps", {}), data.get("notes", {}), data.get("runs", 0)
        mount_base, finished = data.get("mount_base"), data.get("finished")
        # A damaged journal (bad disk, hand edit) is treated like none: the rerun redoes
        # every step, which is safe; guessing from half a record is not.
        if not (isinstance(steps, dict) and all(_sane_step(v) for v in steps.values())
                and isinstance(notes, dict) and all(isinstance(v, list) for v in notes.values())
                and isinstance(runs, int) and not isinstance(runs, bool)
                and (finished is None or (isinstance(finished, (int, float)) and not isinstance(finished, bool)))
                and (mount_base is None or (isinstance(mount_base, str) and os.path.isabs(mount_base)
                                            and ".." not in mount_base.split("/")))):
            return cls(path=Path(path))
        return cls(
            path=Path(path),
            digest=str(data.get("digest", "")),
            target=str(data.get("target", "")),
            mount_base=mount_base,
            steps={str(k): dict(v) for k, v in steps.items()},
            notes={str(k): [str(x) for x in v] for k, v in notes.items()},
            runs=runs,
            finished=finished,
        )

    @property
    def exists(self) -> bool:
        return self.path.exists()

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": JOURNAL_VERSION,
            "digest": self.digest,
            "target": self.target,
            "mount_base": self.mount_base,
            "runs": self.runs,
            "finished": self.finished,
            "steps": self.steps,
            "notes": self.notes,
        }

    def save(self) -> None:
        """Atomic replace plus fsync of file and folder: survives a power cut."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_name(self.path.name + ".tmp")
        data = json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"
        with open(tmp, "w") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def reset(self, digest: str, target: str) -> None:
        """Forget an earlier restore: another plan, a finished one, or one on a disk that changed since."""
        self.digest = digest
        self.target = target
        self.steps = {}
        self.notes = {}
        self.runs = 0
        self.finished = None

    # -- step states --------------------------------------------------------

    def state(self, key: str) -> str | None:
        return self.steps.get(key, {}).get("state")

    def is_done(self, key: str) -> bool:
        return self.state(key) == DONE

    def was_started(self, key: str) -> bool:
        """Started by an earlier run but not finished: the step must redo or resume."""
        return self.state(key) == STARTED

    def start(self, key: str) -> None:
        """The step runs (again): what an earlier attempt noted is no longer the truth, so it goes;
        the report then shows only what the last run of each step found."""
        self.notes.pop(key, None)
        entry = self.steps.setdefault(key, {})
        entry["state"] = STARTED
        entry["started"] = entry.get("started") or time.time()
        entry["attempts"] = int(entry.get("attempts", 0)) + 1
        self.save()

    def finish(self, key: str, seconds: float) -> None:
        entry = self.steps.setdefault(key, {})
        entry["state"] = DONE
        entry["seconds"] = round(seconds, 3)
        entry.pop("child", None)
        self.save()

    def forget_after(self, keys: list[str]) -> None:
        """A step is being redone: everything after it must be redone too."""
        changed = False
        for k in keys:
            if k in self.steps:
                del self.steps[k]
                self.notes.pop(k, None)
                changed = True
        if changed:
            self.save()

    def record_check(self, key: str, device: str, field: str, value: str) -> None:
        """What a finished step left on the disk (blkid's PTUUID or UUID), for the resume check."""
        self.steps.setdefault(key, {})["disk_check"] = {"device": device, "field": field, "value": value}

    def expected_on_disk(self, keys: list[str]) -> dict[tuple[str, str], str]:
        """(device, blkid field) -> value, as the finished steps among `keys` left them.

        In plan order, later steps win: the wipe leaves no table id, the
        partition step after it leaves the new one."""
        found: dict[tuple[str, str], str] = {}
        for key in keys:
            check = self.steps.get(key, {}).get("disk_check")
            if self.is_done(key) and check:
                found[(check["device"], check["field"])] = check["value"]
        return found

    def data(self, key: str) -> dict[str, Any]:
        """Free-form per-step record (e.g. the copy's child process); call save() after."""
        return self.steps.setdefault(key, {}).setdefault("data", {})

    def set_notes(self, key: str, lines: list[str]) -> None:
        self.notes[key] = list(lines)
        self.save()

    def all_notes(self) -> list[str]:
        out: list[str] = []
        for lines in self.notes.values():
            out.extend(lines)
        return out
