from __future__ import annotations

from dataclasses import dataclass

from rescue.layout.model import BootMode
from rescue.steps.base import Step


@dataclass(frozen=True)
class InstallBootloader(Step):
    """grub-install for the captured boot mode, then grub-mkconfig, inside the restored system."""

    kind = "bootloader"
    disk: str
    mode: BootMode
    esp: str | None = None  # ESP mount point inside the restored system

    @property
    def key(self) -> str:
        return "bootloader"

    def describe(self) -> str:
        how = "UEFI (with removable fallback)" if self.mode is BootMode.UEFI else "BIOS"
        return f"install grub for {how} on {self.disk}"
