"""The image builder's recipe: packages, trim rules, overlay files.

The default recipe is image-builder/recipe.toml. A user's recipe file may say
`extends = "default"` and then only add: `extra_packages`, `extra_trim`,
`extra_modules_keep`, `extra_enable_units`, and an `overlay` folder (relative
to the recipe file) whose files are copied over the default overlay.
"""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path

from rescue.errors import RescueError
from rescue.resources import recipe_dir


class RecipeError(RescueError):
    pass


@dataclass(frozen=True)
class Recipe:
    name: str
    suite: str
    variant: str
    label: str
    size_mib: int
    max_used_mib: int
    packages: tuple[str, ...]
    dpkg_exclude: tuple[str, ...]
    dpkg_include: tuple[str, ...]
    trim: tuple[str, ...]
    modules_keep: tuple[str, ...]
    enable_units: tuple[str, ...]
    mask_units: tuple[str, ...]
    kernel_cmdline: str
    overlays: tuple[Path, ...]  # copied in order; later ones win
    source: Path

    def base_key(self) -> str:
        """What decides the installed packages: the cache key of the base root."""
        h = hashlib.sha256()
        for part in (self.suite, self.variant, *self.packages, "|", *self.dpkg_exclude,
                     "|", *self.dpkg_include, "|", *self.trim, "|", *self.modules_keep):
            h.update(part.encode() + b"\0")
        return h.hexdigest()[:16]


_LISTS = ("packages", "dpkg_exclude", "dpkg_include", "trim", "modules_keep", "enable_units", "mask_units")
_SCALARS = {"name": str, "suite": str, "variant": str, "label": str, "size_mib": int,
            "max_used_mib": int, "kernel_cmdline": str}
_EXTRAS = {f"extra_{k}": k for k in ("packages", "trim", "modules_keep", "enable_units", "mask_units")}


def default_path() -> Path:
    return recipe_dir() / "recipe.toml"


def _read(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise RecipeError(f"recipe file {path} does not exist", fix="give an existing file to --recipe") from None
    except tomllib.TOMLDecodeError as e:
        raise RecipeError(f"{path}: not valid TOML", why=str(e), fix="fix the file's syntax") from None


def load(path: Path | None = None) -> Recipe:
    """Read a recipe; None means the default one shipped with rescue."""
    path = (path or default_path()).resolve()
    data = _read(path)
    base: Recipe | None = None
    if "extends" in data:
        if data.pop("extends") != "default":
            raise RecipeError(f"{path}: extends must be \"default\"",
                              fix="write extends = \"default\" or give a complete recipe")
        base = load(None)
    known = set(_LISTS) | set(_SCALARS) | set(_EXTRAS) | {"overlay"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise RecipeError(f"{path}: unknown keys: {', '.join(unknown)}",
                          why="a typo here would silently drop a package or a rule",
                          fix=f"use only: {', '.join(sorted(known))}")
    overlay = path.parent / data.pop("overlay", "overlay")
    overlays = (overlay,) if overlay.is_dir() else ()
    for key, typ in _SCALARS.items():
        if key in data and not isinstance(data[key], typ):
            raise RecipeError(f"{path}: {key} must be a {typ.__name__}")
    for key in (*_LISTS, *_EXTRAS):
        if key in data and not (isinstance(data[key], list) and all(isinstance(x, str) for x in data[key])):
            raise RecipeError(f"{path}: {key} must be a list of strings")
    if base is None:
        missing = sorted((set(_SCALARS) | set(_LISTS)) - set(data))
        if missing:
            raise RecipeError(f"{path}: missing keys: {', '.join(missing)}",
                              fix="add them, or start the file with extends = \"default\"")
        return Recipe(
            **{k: data[k] for k in _SCALARS},
            **{k: tuple(data[k]) for k in _LISTS},
            overlays=overlays,
            source=path,
        )
    changes: dict = {k: data[k] for k in _SCALARS if k in data}
    changes.update({k: tuple(data[k]) for k in _LISTS if k in data})
    for extra, key in _EXTRAS.items():
        if extra in data:
            changes[key] = tuple(changes.get(key, getattr(base, key))) + tuple(data[extra])
    return replace(base, **changes, overlays=base.overlays + overlays, source=path)
