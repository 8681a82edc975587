from __future__ import annotations

from dataclasses import dataclass

from rescue.layout.model import BootMode
from rescue.steps.base import Step
from rescue.steps.copy import CopyTree
from rescue.steps.mkfs import MakeFilesystem
from rescue.steps.mkswap import MakeSwap


@dataclass(frozen=True)
class Verify(Step):
    """Restored trees equal the image trees; UUIDs as captured; boot code present."""

    kind = "verify"
    disk: str
    copies: tuple[CopyTree, ...]
    filesystems: tuple[MakeFilesystem, ...]
    swaps: tuple[MakeSwap, ...] = ()
    mode: BootMode = BootMode.BIOS
    check_boot: bool = True

    @property
    def key(self) -> str:
        return "verify"

    def describe(self) -> str:
        return f"verify {len(self.copies)} trees, UUIDs and boot code on {self.disk}"
