"""manifest.json: what a built rescue image holds, for people and for writers."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from rescue.errors import RescueError
from rescue.jsonform import from_json, to_json

MANIFEST = "manifest.json"
IMAGE = "rescue-root.img"
BMAP = "rescue-root.bmap"


@dataclass(frozen=True)
class Package:
    name: str
    version: str


@dataclass(frozen=True)
class Manifest:
    image: str  # file name beside the manifest
    bmap: str
    label: str
    fs_uuid: str
    total_bytes: int  # filesystem (and image file) size
    used_bytes: int  # blocks the filesystem uses: what a writer writes
    sha256: str  # of the whole image file
    kernel: str  # version of the kernel in /boot
    suite: str
    mirror: str
    rescue_version: str
    build_key: str  # recipe + code: the same key means the same image
    base_key: str
    built: str  # ISO 8601 UTC
    build_seconds: float
    unattended_placeholder: bool  # True when scripts/unattended-restore was missing
    packages: tuple[Package, ...]


def save(manifest: Manifest, out: Path) -> Path:
    path = out / MANIFEST
    path.write_text(json.dumps(to_json(manifest), indent=2) + "\n")
    return path


def load(out_or_file: Path) -> Manifest:
    path = out_or_file / MANIFEST if out_or_file.is_dir() else out_or_file
    try:
        return from_json(Manifest, json.loads(path.read_text()))
    except FileNotFoundError:
        raise RescueError(f"{path} does not exist", fix="build the image: rescue-image build") from None
    except (ValueError, TypeError, KeyError) as e:
        raise RescueError(f"{path} is not a rescue image manifest", why=str(e),
                          fix="build the image again: rescue-image build") from None
