"""Backups as data: banks hold vaults, vaults hold images, a machine is its vaults.

Dirvish's words are used for every kind of source (rsnapshot intervals and
plain folders are presented as vaults and images too).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path


class SourceKind(StrEnum):
    DIRVISH = "dirvish"
    RSNAPSHOT = "rsnapshot"
    PLAIN = "plain"


class ImageStatus(StrEnum):
    SUCCESS = "success"
    # dirvish's "warning (24) -- file vanished on sender": files deleted while
    # rsync ran. Every backup of a live system can end so, and dirvish itself
    # counts such images as good; refusing them would refuse most real banks.
    WARNING = "warning"
    FAILED = "failed"  # summary Status: is anything but success
    INCOMPLETE = "incomplete"  # no summary yet: still being written, or the run died


@dataclass(frozen=True)
class Image:
    """One snapshot of one vault (one client path) on one night."""

    kind: SourceKind
    bank: Path
    vault: str
    name: str  # the image folder's name, e.g. 2026-1126-0300
    path: Path  # the image folder
    tree: Path  # the copied files: path/tree for dirvish
    client: str
    source: str  # the path on the client that was backed up (summary "tree:"), e.g. "/home"
    status: ImageStatus
    status_text: str = ""  # the summary's Status: line as written
    created: str | None = None  # ISO 8601 from Image-now (or the folder's mtime)
    expires: str | None = None  # ISO 8601 from the summary's Expire: (dirvish), "never", or None: unknown
    reference: str | None = None  # the image it was hard-linked against
    rsync_options: tuple[str, ...] = ()
    excludes: tuple[str, ...] = ()
    layout_dir: Path | None = None  # path/rescue when a layout was captured
    flags: tuple[str, ...] = ()  # dirvish's SET line: xdev, sparse, numeric-ids, ...
    size: int | None = None  # bytes rsync counted ("Total file size" in the image's log)
    files: int | None = None  # entries rsync counted ("Number of files")

    @property
    def usable(self) -> bool:
        return self.status in (ImageStatus.SUCCESS, ImageStatus.WARNING)

    @property
    def whole_machine(self) -> bool:
        """rsnapshot and plain folders hold every filesystem of the machine in one tree
        (a dirvish vault holds one, its others being vaults of their own)."""
        return self.kind is not SourceKind.DIRVISH


@dataclass(frozen=True)
class Vault:
    bank: Path
    name: str
    images: tuple[Image, ...]  # oldest first
    kind: SourceKind = SourceKind.DIRVISH
    configured_client: str | None = None  # dirvish/default.conf "client:", for vaults without images
    configured_source: str | None = None  # dirvish/default.conf "tree:"
    configured_xdev: bool | None = None  # dirvish/default.conf "xdev:" (None: not said there)

    @property
    def xdev(self) -> bool | None:
        """Whether rsync stays on one filesystem (-x): the newest image's SET/UNSET line says
        what dirvish did; a vault without images has only its default.conf (None: unknown)."""
        for image in reversed(self.images):
            if image.flags:
                return "xdev" in image.flags
        return self.configured_xdev

    @property
    def client(self) -> str | None:
        for image in reversed(self.images):
            if image.client:
                return image.client
        return self.configured_client


@dataclass(frozen=True)
class Machine:
    """All vaults whose images name the same client."""

    client: str
    vaults: tuple[Vault, ...]
