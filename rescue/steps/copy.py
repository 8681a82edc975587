from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from rescue.errors import StepFailed
from rescue.events import Progress
from rescue.steps.base import Context, Step, at_root, sh, slug


@dataclass(frozen=True)
class CopyTree(Step):
    """Copy one vault's image tree onto its mounted filesystem, with full metadata.

    The copy goes into a non-recursive bind mount of that one filesystem, so
    it never writes into (or, when resumed with --delete, removes from) a
    child filesystem mounted below it.
    """

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

    def script(self) -> list[str]:
        from rescue.engine.copy import cp_argv

        work = '"$WORK"/' + shlex.quote(slug(self.mountpoint))
        argv = cp_argv(self.source, Path("DEST"), xattrs=self.xattrs, acls=self.acls)
        return [
            f"mkdir -p {work}",
            f"mount --bind {at_root(self.mountpoint)} {work}",
            sh(*argv[:-1]) + f" {work}/",
            f"umount {work}",
        ]

    def run(self, ctx: Context) -> None:
        from rescue.engine.copy import copy_tree

        if not self.source.is_dir():
            raise StepFailed(f"the image tree {self.source} is missing",
                             fix="check that the backup partition is mounted and the image exists")
        target = ctx.path(self.mountpoint)
        work = ctx.work / slug(self.mountpoint)
        os.makedirs(work, exist_ok=True)
        ctx.run(["mount", "--bind", str(target), str(work)])
        try:
            if ctx.resuming:
                ctx.say("an earlier run started this copy: finishing it with rsync (complete files are kept)")

            def progress(bd: int, bt: int, fd: int, ft: int, eta: float | None) -> None:
                ctx.emit(Progress(ctx.key, bd, bt, fd, ft, eta))

            result = copy_tree(ctx, self.source, work, resume=ctx.resuming, xattrs=self.xattrs,
                               acls=self.acls, total_bytes=self.bytes, total_files=self.files,
                               progress=progress)
        finally:
            ctx.run(["umount", str(work)], check=False)
        data = ctx.data()
        data["method"] = result.method
        data["copied_bytes"] = result.bytes
        data["copied_files"] = result.files
        data["seconds"] = round(result.seconds, 2)
        if result.unreadable:
            data["unreadable"] = list(result.unreadable)
            ctx.note(f"{self.mountpoint}: {len(result.unreadable)} item(s) could not be read from the backup, "
                     f"first: {result.unreadable[0]}")
        else:
            data.pop("unreadable", None)
        ctx.save()
