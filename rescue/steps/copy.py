from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from rescue.engine.copyerrors import counted
from rescue.errors import StepFailed
from rescue.events import Progress
from rescue.run import CommandError
from rescue.steps.base import Context, Step, at_root, sh, slug

NO_SPACE = "No space left on device"


def _mounts_below(target: Path) -> list[str]:
    """Mount points strictly below `target`, relative to it (the restored system's child filesystems)."""
    from rescue.engine.mounts import mountinfo

    top = str(target).rstrip("/") + "/"
    return sorted({m.target[len(top):] for m in mountinfo() if m.target.startswith(top)})


def _free_bytes(path: Path) -> int | None:
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bfree * st.f_frsize


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
    # A whole-machine image (rsnapshot, a plain folder) fills every filesystem: this copy is
    # one mount point of it, and `skip` names the mount points below it (copied empty here).
    part: bool = False
    skip: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return f"copy:{self.vault}:{self.mountpoint}" if self.part else f"copy:{self.vault}"

    def describe(self) -> str:
        return f"copy vault {self.vault} image {self.image} to {self.mountpoint}"

    def script(self) -> list[str]:
        from rescue.engine.copy import cp_argv, rsync_argv

        work = '"$WORK"/' + shlex.quote(slug(self.mountpoint))
        if self.skip:
            argv = rsync_argv(self.source, Path("DEST"), xattrs=self.xattrs, acls=self.acls,
                              progress=False, skip=self.skip)
        else:
            argv = cp_argv(self.source, Path("DEST"), xattrs=self.xattrs, acls=self.acls)
        return [
            f"mkdir -p {work}",
            f"mount --bind {at_root(self.mountpoint)} {work}",
            sh(*argv[:-1]) + f" {work}/",
            f"umount {work}",
        ]

    def _no_space(self, ctx: Context, room: int | None) -> StepFailed:
        """The filesystem filled up: say which, how much the image holds and how much is missing.

        Happens when the backup grew after its layout was captured and the plan shrank the
        partition to the captured size; the plan could not know."""
        try:
            need = int(ctx.run(["du", "-s", "-B1", "--", str(self.source)]).stdout.split()[0])
        except (CommandError, ValueError, IndexError):
            need = None
        mib = 1 << 20
        if need is not None and room is not None:
            short = max(need - room, 0)
            detail = (f"the image holds {-(-need // mib)} MiB but {self.mountpoint} had {room // mib} MiB free: "
                      f"about {max(-(-short // mib), 1)} MiB short")
        else:
            detail = "the image holds more than the filesystem can take"
        return StepFailed(
            f"{self.mountpoint} is full: no space left on device while copying vault {self.vault}",
            why=f"{detail} (the backup grew after its layout was captured)",
            fix=f"restore onto a bigger disk, or give {self.mountpoint} more room with --grow {self.mountpoint}; "
                "rescue plan shows the sizes",
        )

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

            room = _free_bytes(work)
            try:
                result = copy_tree(ctx, self.source, work, resume=ctx.resuming, xattrs=self.xattrs,
                                   acls=self.acls, total_bytes=self.bytes, total_files=self.files,
                                   progress=progress, protect=_mounts_below(target), skip=self.skip)
            except CommandError as e:
                if NO_SPACE in e.stderr:
                    raise self._no_space(ctx, room) from None
                raise
            if any(NO_SPACE in line for line in result.unreadable):
                raise self._no_space(ctx, room)
            problems = self._sort_errors(ctx, result.unreadable, work) if result.unreadable else None
        finally:
            ctx.run(["umount", str(work)], check=False)
        data = ctx.data()
        data["method"] = result.method
        data["copied_bytes"] = result.bytes
        data["copied_files"] = result.files
        data["seconds"] = round(result.seconds, 2)
        for k in ("unreadable", "copy_errors"):
            data.pop(k, None)
        if problems is not None:
            unreadable, target, other = problems
            if unreadable:
                data["unreadable"] = unreadable
                shown = ", ".join(unreadable[:5]) + (f" and {len(unreadable) - 5} more" if len(unreadable) > 5 else "")
                ctx.note(f"{self.mountpoint}: {counted(unreadable)} could not be read from the backup "
                         f"and are not restored: {shown}")
            if target or other:
                data["copy_errors"] = [*target, *other][:50]
                ctx.note(f"{self.mountpoint}: the copy reported {len(target) + len(other)} other problem(s), "
                         f"first: {(target or other)[0]} (verify checks the result)")
        ctx.save()

    def _sort_errors(self, ctx: Context, lines: tuple[str, ...], work: Path
                     ) -> tuple[list[str], list[str], list[str]]:
        """cp/rsync's error lines as (unreadable paths, target problems, other lines).

        Paths are relative to this filesystem. What cp or rsync half-wrote of an
        unreadable file is removed with its hard links (their names join the list):
        a half-written file would pass for the real one. Nothing when the target itself
        is gone: its write errors are not the backup's fault (the Executor names the cause).
        """
        from rescue.engine.copyerrors import classify, drop_partial_copies, mark_folders

        lost = getattr(ctx, "target_lost", None)
        if lost is not None and lost():
            return [], [], []
        log = getattr(ctx, "log", None)
        if log is not None:
            log.write("\n".join(f"  ! {line}" for line in lines))
        found = classify(lines, self.source, work)
        unreadable = list(found.unreadable)
        other = list(found.other)
        if unreadable:
            removed = drop_partial_copies(work, unreadable)
            unreadable += [r for r in removed if r not in unreadable]
        elif other and not found.target:
            # The copy said something went wrong without naming a file rescue can place:
            # keep its words, so the result is still called incomplete and the lines are seen.
            unreadable, other = [f"(not a file name) {line}" for line in other[:20]], []
        return sorted(mark_folders(self.source, unreadable)), list(found.target), other
