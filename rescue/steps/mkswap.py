from __future__ import annotations

from dataclasses import dataclass

from rescue.steps.base import Step


@dataclass(frozen=True)
class MakeSwap(Step):
    kind = "mkswap"
    device: str
    uuid: str | None
    label: str | None

    @property
    def key(self) -> str:
        return f"mkswap:{self.device}"

    def describe(self) -> str:
        return f"make swap on {self.device} (UUID {self.uuid or 'new'})"
