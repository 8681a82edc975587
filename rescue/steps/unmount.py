from __future__ import annotations

from dataclasses import dataclass

from rescue.steps.base import Step


@dataclass(frozen=True)
class UnmountAll(Step):
    """Unmount everything the restore mounted, deepest first (also run after a failure)."""

    kind = "unmount"

    @property
    def key(self) -> str:
        return "unmount"

    def describe(self) -> str:
        return "unmount the restored filesystems"
