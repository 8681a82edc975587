from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rescue.engine.mounts import prove_mounted
from rescue.errors import UnsafeTarget
from rescue.steps.base import Context, Step, sh

SUBVOLUME_INODE = 256  # every btrfs subvolume's root directory has inode 256


def _on_top_level_script(device: str, body: list[str]) -> list[str]:
    """restore.sh lines that run `body` with the btrfs's top level (subvolid=5) at "$TOP"."""
    return ['TOP=$(mktemp -d)', sh("mount", "-t", "btrfs", "-o", "subvolid=5", device) + ' "$TOP"',
            *body, 'umount "$TOP"', 'rmdir "$TOP"']


@contextlib.contextmanager
def _top_level(ctx: Context, device: str) -> Iterator[Path]:
    """The btrfs's top level (subvolid=5) mounted at a private folder, proven to be `device`."""
    top = Path(tempfile.mkdtemp(prefix="rescue-btrfs-top-"))
    ctx.run(["mount", "-t", "btrfs", "-o", "subvolid=5", device, str(top)])
    try:
        why = prove_mounted(ctx.run, top, device, "btrfs")
        if why:
            raise UnsafeTarget(f"mounting {device} did not give {device}", why=why,
                               fix="detach the old disk that carries the same filesystems and rerun")
        yield top
    finally:
        ctx.run(["umount", str(top)], check=False)
        with contextlib.suppress(OSError):
            top.rmdir()


@dataclass(frozen=True)
class MakeSubvolumes(Step):
    """Make a new btrfs's subvolumes at their captured paths, set the default one,
    and mark its nocow folders (chattr +C) before any copy fills them.

    Works on the top level (subvolid=5) mounted at a private folder. Idempotent:
    a subvolume already there is kept, chattr +C on an empty folder is repeated.
    Subvolume ids are new; the default is set by path.
    """

    kind = "subvolumes"
    device: str
    subvolumes: tuple[str, ...]  # paths from the top level, parents first: "@", "@home", "@/var/lib/machines"
    default: str | None = None  # the default subvolume's path; None: the top level
    nocow: tuple[str, ...] = ()  # folders from the top level: "@/srv/vm"

    @property
    def key(self) -> str:
        return f"subvolumes:{self.device}"

    def describe(self) -> str:
        what = f"make btrfs subvolumes {', '.join(self.subvolumes)} on {self.device}"
        if self.default:
            what += f", default {self.default}"
        if self.nocow:
            what += f"; chattr +C {', '.join(self.nocow)}"
        return what

    def script(self) -> list[str]:
        top = '"$TOP"'
        lines = []
        for path in self.subvolumes:
            q = sh(path)
            lines.append(f"[ -d {top}/{q} ] || {{ mkdir -p \"$(dirname {top}/{q})\" && btrfs subvolume create {top}/{q}; }}")
        if self.default:
            lines.append(f"btrfs subvolume set-default {top}/{sh(self.default)}")
        for path in self.nocow:
            q = sh(path)
            lines.append(f"mkdir -p {top}/{q} && chattr +C {top}/{q}")
        return _on_top_level_script(self.device, lines)

    def run(self, ctx: Context) -> None:
        ctx.run(["btrfs", "device", "scan", "--forget"], check=False)
        with _top_level(ctx, self.device) as top:
            for path in self.subvolumes:
                where = top / path.strip("/")
                if where.is_dir() and os.stat(where).st_ino == SUBVOLUME_INODE:
                    continue
                if where.exists():
                    # a plain folder left by an interrupted run: a subvolume must take its place
                    where.rmdir()
                where.parent.mkdir(parents=True, exist_ok=True)
                ctx.run(["btrfs", "subvolume", "create", str(where)])
            if self.default:
                ctx.run(["btrfs", "subvolume", "set-default", str(top / self.default.strip("/"))])
            else:
                ctx.run(["btrfs", "subvolume", "set-default", "5", str(top)])
            for path in self.nocow:
                where = top / path.strip("/")
                where.mkdir(parents=True, exist_ok=True)
                ctx.run(["chattr", "+C", str(where)])


@dataclass(frozen=True)
class MakeReadOnly(Step):
    """Make restored snapshots read-only again, as they were captured, once the copy has filled them.

    A read-only subvolume cannot be filled, so this comes after the copies. Works on the top
    level (subvolid=5) mounted at a private folder. Idempotent: ro true on a read-only
    subvolume is repeated."""

    kind = "readonly-snapshots"
    device: str
    subvolumes: tuple[str, ...]  # paths from the top level: "@/.snapshots/1"

    @property
    def key(self) -> str:
        return f"readonly-snapshots:{self.device}"

    def describe(self) -> str:
        return f"make btrfs snapshots read-only again on {self.device}: {', '.join(self.subvolumes)}"

    def script(self) -> list[str]:
        return _on_top_level_script(self.device, [f'btrfs property set -ts "$TOP"/{sh(path)} ro true'
                                                  for path in self.subvolumes])

    def run(self, ctx: Context) -> None:
        with _top_level(ctx, self.device) as top:
            for path in self.subvolumes:
                ctx.run(["btrfs", "property", "set", "-ts", str(top / path.strip("/")), "ro", "true"])
