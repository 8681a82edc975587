from __future__ import annotations

from dataclasses import dataclass

from rescue.steps.base import Step


@dataclass(frozen=True)
class WipeSignatures(Step):
    """Erase old partition-table and filesystem signatures so nothing stale survives."""

    kind = "wipe"
    disk: str

    @property
    def key(self) -> str:
        return f"wipe:{self.disk}"

    def describe(self) -> str:
        return f"erase old signatures on {self.disk}"
