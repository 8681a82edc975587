"""What the review screen shows, as frozen data.

The plan decides; this only lays its decisions beside the captured layout so
a person can compare old and new before anything is written. Built by the
engine facade from a real Plan, or loaded from recorded facts in tests.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

from rescue.formats.units import duration, human  # noqa: F401  (the screens import them from here)

STEP_COST = 64 << 20  # a step that copies nothing (mkfs, grub, a mount) counts as this many bytes


def hang(text: str, width: int = 76) -> str:
    """Wrap long lines under their own indent, so a wrapped line still reads as part of its item."""
    out = []
    for line in text.splitlines():
        if len(line) <= width:
            out.append(line)
            continue
        lead = line[: len(line) - len(line.lstrip())]
        out += textwrap.wrap(line, width, initial_indent="", subsequent_indent=lead + "    ",
                             break_on_hyphens=False, drop_whitespace=True) or [line]
    return "\n".join(out)


@dataclass(frozen=True)
class TableRow:
    """One partition, old beside new. Sizes in bytes; None where a side has none."""

    number: int
    type: str  # what the partition is for: "ext4 /", "swap", "BIOS boot"
    old_size: int | None
    new_size: int | None
    old_start: int | None = None  # bytes from the start of the disk
    new_start: int | None = None
    note: str = ""  # "grown", "shrunk", "same"


@dataclass(frozen=True)
class FsRow:
    device: str  # on the target
    fstype: str
    uuid: str | None
    label: str | None
    mountpoint: str | None


@dataclass(frozen=True)
class CopyRow:
    vault: str
    image: str
    mountpoint: str
    bytes: int
    files: int


@dataclass(frozen=True)
class Review:
    """Everything the review screen shows about one plan."""

    client: str
    target: str  # device path, also the name the person types to confirm
    target_model: str | None
    target_size: int
    table_label: str  # dos or gpt
    old_disk_size: int
    rows: tuple[TableRow, ...]
    filesystems: tuple[FsRow, ...]
    copies: tuple[CopyRow, ...]
    steps: tuple[str, ...]  # one line per step, in order
    script: str  # restore.sh as generated
    migrations: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    destroyed: tuple[str, ...] = ()  # what is on the target now and will be gone
    weights: tuple[int, ...] = ()  # per step, its share of the whole restore: bytes to copy, or a fixed cost
    disks: tuple[str, ...] = ()  # a machine with several disks: "captured OLD -> NEW" and what NEW loses
    targets: tuple[str, ...] = ()  # every disk the restore erases when there are several: each is typed to confirm
    snapshots: tuple[str, ...] = ()  # the machine's btrfs snapshots: the review shows what becomes of them
    btrfs_snapshots: str = "leave-out"  # the choice in force for them: leave-out or restore (b switches it)

    @property
    def every_target(self) -> tuple[str, ...]:
        return self.targets or (self.target,)

    @property
    def shown_targets(self) -> str:
        """'/dev/sdb' or '/dev/sdb and /dev/sdc', as the screens and the leaving line name them."""
        return " and ".join(self.every_target)

    def weight(self, index: int) -> int:
        return self.weights[index] if index < len(self.weights) else STEP_COST

    @property
    def bytes_to_copy(self) -> int:
        return sum(c.bytes for c in self.copies)

    @property
    def files_to_copy(self) -> int:
        return sum(c.files for c in self.copies)
