"""The md arrays of a restore: which captured arrays come back, from which new partitions.

Pure: the captured arrays and where each captured partition went in, steps and words out.
A member whose disk is not restored leaves its slot empty: the array comes back degraded
and says so (the review and the report tell how to complete it with a disk added later).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from rescue.errors import PlanRefused
from rescue.layout.model import Filesystem, MdArray
from rescue.steps.md import MakeArray, StopArrays

# what rescue makes again; linear/raid0 have no redundancy to lose, but also nothing to
# gain from a slot left empty: a missing member of those is refused
LEVELS = ("raid0", "raid1", "raid4", "raid5", "raid6", "raid10", "linear")
REDUNDANT = {"raid1": 1, "raid4": 1, "raid5": 1, "raid6": 2, "raid10": 1}  # members that may be missing


@dataclass(frozen=True)
class MdRestore:
    """The arrays a plan makes, and what a person must know about them."""

    steps: tuple[MakeArray, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def stop(self) -> StopArrays | None:
        return StopArrays(tuple(s.device for s in self.steps)) if self.steps else None


def _slots(array: MdArray) -> list[str | None]:
    """Captured members by role: slot 0 first; spares and faulty members are not slots."""
    count = array.raid_devices or sum(1 for m in array.members if (m.role or "").isdigit())
    slots: list[str | None] = [None] * count
    for member in array.members:
        if (member.role or "").isdigit() and int(member.role) < count:
            slots[int(member.role)] = member.device
    return slots


def plan_arrays(arrays: Sequence[MdArray], new_partition: Mapping[str, str]) -> MdRestore:
    """One MakeArray per captured array whose members are restored (`new_partition`: captured
    member -> its new partition). An array none of whose members is restored is left out."""
    steps: list[MakeArray] = []
    warnings: list[str] = []
    for array in arrays:
        level = (array.level or "").lower()
        if level not in LEVELS:
            raise PlanRefused(
                f"md {array.device} is {array.level or 'of an unknown level'}",
                why=f"rescue makes md arrays of levels {', '.join(LEVELS)}",
                fix="restore this array by hand from the image's rescue/ files (mdadm --create with the "
                    "recorded --uuid and --metadata), then restore the filesystems on it",
            )
        slots = _slots(array)
        members = tuple(new_partition.get(old) if old else None for old in slots)
        present = [m for m in members if m]
        if not present:
            continue
        missing = len(members) - len(present)
        if missing > REDUNDANT.get(level, 0):
            lost = ", ".join(old or f"slot {i}" for i, old in enumerate(slots) if not members[i])
            raise PlanRefused(
                f"md {array.device} ({level}) would lack {missing} of its {len(members)} members: {lost}",
                why=f"a {level} array cannot run with that many members missing",
                fix="give a target disk for each disk that held a member (--target OLD=NEW)",
            )
        if missing:
            warnings.append(
                f"md {array.device} ({level}) comes back degraded, {len(present)} of {len(members)} members: "
                f"add a disk later with its partition made like the others, then "
                f"mdadm {array.device} --add NEW-PARTITION (it then resyncs)")
        if array.metadata and not array.metadata.startswith(("1", "0.9")):
            raise PlanRefused(
                f"md {array.device} has {array.metadata} metadata (firmware RAID)",
                why="rescue makes md arrays with md's own metadata (0.90, 1.0, 1.1, 1.2)",
                fix="make the firmware RAID set in the machine's setup screen, then restore onto it",
            )
        steps.append(MakeArray(
            device=array.device, uuid=array.uuid, level=level, members=members,
            metadata=array.metadata or "1.2", name=array.name, chunk=array.chunk, layout=array.layout,
            bitmap=array.bitmap, data_offset=array.data_offset,
        ))
    return MdRestore(tuple(steps), tuple(warnings))


# signatures of a layer's member (blkid TYPE): such a partition is made by its layer, never by mkfs
MEMBER_TYPES = frozenset({"linux_raid_member", "LVM2_member", "crypto_LUKS"})


@dataclass(frozen=True)
class ArraysOnDisk:
    """The captured arrays with a member on the disk being replayed, and what lies on them."""

    arrays: tuple[MdArray, ...] = ()
    members: Mapping[str, int] = dataclasses.field(default_factory=dict)  # captured member -> partition number
    filesystems: tuple[Filesystem, ...] = ()  # made on an array (swap too)

    def array_of(self, device: str) -> MdArray | None:
        return next((a for a in self.arrays if device in _names(a)), None)

    def first_member(self, array: MdArray) -> int:
        """The partition number shown for what lies on the array (its first member on this disk)."""
        return min(self.members[m.device] for m in array.members if m.device in self.members)


def _names(array: MdArray) -> set[str]:
    """The names the captured system used for the array: /dev/md0, /dev/md/0, /dev/md/host:0."""
    names = {array.device}
    if array.name:
        short = array.name.split(":", 1)[-1]
        names |= {f"/dev/md/{array.name}", f"/dev/md/{short}"}
        if short.isdigit():
            names.add(f"/dev/md{short}")
    return names


def arrays_on_disk(arrays: Sequence[MdArray], filesystems: Sequence[Filesystem],
                   number: Callable[[str], int | None]) -> ArraysOnDisk:
    """Arrays with at least one member among the disk's partitions (`number`: captured device ->
    its partition number on the disk being replayed, or None), and the filesystems on them."""
    on: list[MdArray] = []
    members: dict[str, int] = {}
    for array in arrays:
        mine = {m.device: number(m.device) for m in array.members}
        mine = {dev: n for dev, n in mine.items() if n is not None}
        if mine:
            on.append(array)
            members.update(mine)
    found = ArraysOnDisk(tuple(on), members)
    held = tuple(fs for fs in filesystems if found.array_of(fs.device) and fs.fstype not in MEMBER_TYPES)
    return dataclasses.replace(found, filesystems=held)
