"""The restore plan as frozen data: what will be written where, and why.

A Plan is built by `build_plan` (a pure function) and is complete before any
byte is written: the review a person reads, restore.sh and the engine all
come from the same Plan.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, fields
from typing import Any

from rescue.backups.model import Image
from rescue.jsonform import FormError, from_json, to_json
from rescue.layout.model import Disk, PartitionTable
from rescue.steps import (
    CopyTree,
    Fixups,
    InstallBootloader,
    MakeFilesystem,
    MakeReadOnly,
    MakeSubvolumes,
    MakeSwap,
    MountFilesystem,
    Step,
    UnmountAll,
    Verify,
    WipeSignatures,
    WritePartitionTable,
)
from rescue.steps.luks import AddLuksKeyfile, AskNewLuksKey, CheckLuksKey, CloseLuks, FormatLuks, OpenLuks, RestoreLuksHeader
from rescue.steps.lvm import DeactivateVolumeGroups, MakeVolumeGroup
from rescue.steps.md import MakeArray, StopArrays
from rescue.target import TargetDisk

PLAN_SCHEMA = 1

# --btrfs-snapshots: what becomes of a btrfs's snapshots (leave-out, the default, lists them)
SNAPSHOT_CHOICES = ("leave-out", "restore")

STEP_KINDS: dict[str, type[Step]] = {
    cls.kind: cls
    for cls in (
        WipeSignatures, WritePartitionTable, MakeFilesystem, MakeSwap, MountFilesystem,
        CopyTree, Fixups, InstallBootloader, Verify, UnmountAll, MakeSubvolumes, MakeReadOnly, MakeArray, StopArrays,
        MakeVolumeGroup, DeactivateVolumeGroups, CheckLuksKey, RestoreLuksHeader, OpenLuks, CloseLuks,
        AskNewLuksKey, FormatLuks, AddLuksKeyfile,
    )
}


@dataclass(frozen=True)
class PlanOptions:
    """What the person chose beyond client, images and target."""

    source_disk: str | None = None  # the older --source-disk: this captured disk only, the others left out
    disk_map: tuple[tuple[str, str], ...] = ()  # (OLD, NEW) per --target OLD=NEW: captured disk -> target
    skip_disks: tuple[str, ...] = ()  # captured disks left out on purpose (--skip-disk): their vaults too
    grow: str | None = None  # mount point ("/home") or partition number ("3") that takes all the free space
    bootloader: bool = True  # install grub after the copy
    state_dir: str | None = None  # restore.sh markers; default /var/lib/rescue/<target name>
    skip_vaults: tuple[str, ...] = ()  # vaults left out of this restore
    fstypes: tuple[tuple[str, str], ...] = ()  # (mount point or captured device, fstype) to make instead
    sizes: tuple[tuple[str, int], ...] = ()  # (mount point, number or "swap", bytes): exactly this size
    luks_new_key: bool = False  # LUKS made anew by luksFormat (new master key), not from the kept header
    btrfs_snapshots: str = "leave-out"  # or "restore": snapshots made as subvolumes and filled (--btrfs-snapshots)


@dataclass(frozen=True)
class Migration:
    """How one partition moves from the captured disk to the target. Sectors."""

    number: int
    node: str  # the partition on the target
    old_start: int
    old_size: int
    new_start: int
    new_size: int
    sector_size: int = 512
    mountpoint: str | None = None
    fstype: str | None = None
    container: bool = False  # a dos extended partition

    @property
    def change(self) -> str:
        """'grows', 'shrinks', 'moves' or 'stays'."""
        if self.new_size > self.old_size:
            return "grows"
        if self.new_size < self.old_size:
            return "shrinks"
        if self.new_start != self.old_start:
            return "moves"
        return "stays"


@dataclass(frozen=True)
class NewFilesystem:
    """A filesystem the restore makes on a target partition, and what fills it."""

    device: str  # target partition
    number: int
    fstype: str
    size: int  # bytes of the new partition
    uuid: str | None = None
    label: str | None = None
    mountpoint: str | None = None
    captured_device: str | None = None
    used: int | None = None  # captured used bytes (df)
    vault: str | None = None  # None: made empty
    image: str | None = None
    esp: bool = False
    copy_bytes: int | None = None  # what the copy reads: the image's byte count, else df's used bytes
    files: int | None = None  # files in the image, when its log says
    shown_on: str | None = None  # on an array or LV: the target whose partition `number` it is shown on


@dataclass(frozen=True)
class NewSwap:
    device: str
    number: int
    size: int
    uuid: str | None = None
    label: str | None = None
    captured_device: str | None = None
    shown_on: str | None = None  # on an array or LV: the target whose partition `number` it is shown on


@dataclass(frozen=True)
class DiskPlan:
    """One target of the restore: the captured disk it replaces, its table before and after."""

    target: TargetDisk
    source: Disk
    old_table: PartitionTable
    new_table: PartitionTable
    migrations: tuple[Migration, ...]
    destroyed: tuple[str, ...]  # what is on this target now and will be lost


@dataclass(frozen=True)
class Plan:
    """Everything a restore will do, in order. Built by build_plan; never changed after."""

    client: str
    images: tuple[Image, ...]
    target: TargetDisk
    source: Disk  # the captured disk this target replaces
    old_table: PartitionTable
    new_table: PartitionTable
    migrations: tuple[Migration, ...]
    filesystems: tuple[NewFilesystem, ...]
    swaps: tuple[NewSwap, ...]
    mount_order: tuple[str, ...]  # mount points, parents before children
    copies: tuple[CopyTree, ...]
    destroyed: tuple[str, ...]  # what is on the target now and will be lost
    warnings: tuple[str, ...]
    steps: tuple[Step, ...]
    options: PlanOptions = PlanOptions()
    captured_at: str | None = None
    layout_warnings: tuple[str, ...] = ()
    more: tuple[DiskPlan, ...] = ()  # the other targets of a machine with several disks
    snapshots: tuple[str, ...] = ()  # the btrfs snapshots of the restored filesystems, whatever options.btrfs_snapshots
    schema: int = PLAN_SCHEMA

    @property
    def disks(self) -> tuple[DiskPlan, ...]:
        """Every target with the captured disk it replaces, the first (target, source, ...) included."""
        first = DiskPlan(target=self.target, source=self.source, old_table=self.old_table,
                         new_table=self.new_table, migrations=self.migrations, destroyed=self.destroyed)
        return (first, *self.more)

    @property
    def targets(self) -> tuple[TargetDisk, ...]:
        """Every disk this plan erases: each is checked, confirmed and locked."""
        return tuple(d.target for d in self.disks)

    # -- forms ---------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """Plain JSON data; steps carry their kind, key and description."""
        data: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "steps":
                data[f.name] = [step_to_json(s) for s in value]
            else:
                data[f.name] = to_json(value)
        return data

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2) + "\n"

    @classmethod
    def from_json(cls, data: Any) -> Plan:
        """Read a plan written by to_json (or `rescue plan --json`, which adds its fingerprint)."""
        if not isinstance(data, dict):
            raise FormError("$: expected an object")
        if data.get("schema") != PLAN_SCHEMA:
            raise FormError(f"$.schema: plan schema {data.get('schema')!r} is not {PLAN_SCHEMA}")
        rest = {k: v for k, v in data.items() if k not in ("steps", "fingerprint")}
        rest["steps"] = []
        plan = from_json(cls, rest)
        steps = data.get("steps")
        if not isinstance(steps, list):
            raise FormError("$.steps: expected a list")
        parsed = tuple(step_from_json(s, f"$.steps[{i}]") for i, s in enumerate(steps))
        return _replace(plan, steps=parsed)

    @property
    def fingerprint(self) -> str:
        """Short hash of what the plan does (its steps, on which disk): restore.sh resumes only
        the same work. What the target held before is left out, so planning again after a
        half-finished run gives the same fingerprint and the rerun carries on."""
        what: dict[str, Any] = {"steps": [step_to_json(s) for s in self.steps],
                                "target": [self.target.device, self.target.size]}
        if self.more:
            what["more"] = [[d.target.device, d.target.size] for d in self.more]
        text = json.dumps(what, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def review(self) -> str:
        from rescue.plan.review import render_review

        return render_review(self)

    def script(self) -> str:
        from rescue.plan.script import render_script

        return render_script(self)


def step_to_json(step: Step) -> dict[str, Any]:
    data = {"kind": step.kind, "key": step.key, "describe": step.describe()}
    data.update(to_json(step))
    return data


def step_from_json(data: Any, where: str = "$") -> Step:
    if not isinstance(data, dict):
        raise FormError(f"{where}: expected an object")
    kind = data.get("kind")
    cls = STEP_KINDS.get(kind)  # type: ignore[arg-type]
    if cls is None:
        raise FormError(f"{where}.kind: unknown step kind {kind!r}")
    rest = {k: v for k, v in data.items() if k not in ("kind", "key", "describe")}
    return from_json(cls, rest, where)


def _replace(obj: Any, **changes: Any) -> Any:
    import dataclasses

    return dataclasses.replace(obj, **changes)
