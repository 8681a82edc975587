from __future__ import annotations

from dataclasses import dataclass

from rescue.layout.model import FstabEntry, RootMeta
from rescue.steps.base import Step


@dataclass(frozen=True)
class Fixups(Step):
    """Put back what rsync never saved: root modes, /tmp 1777, /proc /sys /dev /run."""

    kind = "fixups"
    roots: tuple[RootMeta, ...]
    fstab: tuple[FstabEntry, ...] = ()  # mount points to create

    @property
    def key(self) -> str:
        return "fixups"

    def describe(self) -> str:
        return "restore filesystem root modes, create /proc /sys /dev /run, /tmp 1777"
