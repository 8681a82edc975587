"""Where the drill keeps what it can reuse between runs (outside the repository)."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_CACHE = Path("/var/cache/rescue")


def cache_dir() -> Path:
    """RESCUE_CACHE_DIR, or /var/cache/rescue: the rescue image and the drill's builds live here."""
    return Path(os.environ.get("RESCUE_CACHE_DIR", DEFAULT_CACHE))


def drill_cache() -> Path:
    path = cache_dir() / "drill"
    path.mkdir(parents=True, exist_ok=True)
    return path
