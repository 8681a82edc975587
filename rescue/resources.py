"""Where the files that ship beside the code live.

grub/ and image-builder/ sit at the top of the repository; a built wheel
carries them as rescue/_data/. Both layouts are looked up here, nowhere else.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def _data_dir(name: str) -> Path:
    for candidate in (_PACKAGE / "_data" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"rescue's {name}/ folder is missing from {_PACKAGE}; reinstall rescue")


def grub_dir() -> Path:
    """Jinja2 templates for the rescue partition's grub.cfg."""
    return _data_dir("grub")


def recipe_dir() -> Path:
    """The image builder's recipe: package lists, trim rules, overlay files."""
    return _data_dir("image-builder")


def templates_dir() -> Path:
    """Jinja2 templates that belong to the package itself (restore.sh, reports)."""
    return _PACKAGE / "templates"
