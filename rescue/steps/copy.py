from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rescue.steps.base import Step


@dataclass(frozen=True)
class CopyTree(Step):
    """Copy one vault's image tree onto its mounted filesystem, with full metadata."""

    kind = "copy"
    vault: str
    image: str  # image name, e.g. 2026-1126-0300
    source: Path  # the image's tree/ folder (read only)
    mountpoint: str  # where it goes inside the restored system
    bytes: int = 0  # expected, for progress (0 = unknown)
    files: int = 0
    xattrs: bool = True
    acls: bool = True

    @property
    def key(self) -> str:
        return f"copy:{self.vault}"

    def describe(self) -> str:
        return f"copy vault {self.vault} image {self.image} to {self.mountpoint}"
