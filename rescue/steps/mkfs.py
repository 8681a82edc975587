from __future__ import annotations

from dataclasses import dataclass

from rescue.steps.base import Step


@dataclass(frozen=True)
class MakeFilesystem(Step):
    """mkfs with the captured UUID and label, so fstab and grub keep working."""

    kind = "mkfs"
    device: str
    fstype: str  # ext2, ext3, ext4, xfs, btrfs, vfat
    uuid: str | None
    label: str | None
    mountpoint: str | None = None  # for the description only

    @property
    def key(self) -> str:
        return f"mkfs:{self.device}"

    def describe(self) -> str:
        what = f" for {self.mountpoint}" if self.mountpoint else ""
        return f"make {self.fstype} on {self.device}{what} (UUID {self.uuid or 'new'}, label {self.label or '-'})"
