from __future__ import annotations

from dataclasses import dataclass

from rescue.steps.base import Step


@dataclass(frozen=True)
class MountFilesystem(Step):
    """Mount a new filesystem under the private root, and prove it is that device."""

    kind = "mount"
    device: str
    mountpoint: str  # inside the restored system: "/", "/home"
    fstype: str
    options: str = ""

    @property
    def key(self) -> str:
        return f"mount:{self.mountpoint}"

    def describe(self) -> str:
        return f"mount {self.device} at {self.mountpoint}"
