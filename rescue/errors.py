"""One exception root for everything rescue reports to a person.

Every error says what is wrong, why, and what to do. The CLI prints it and
exits with the error's code; no traceback ever reaches the user.
"""

from __future__ import annotations

from enum import IntEnum


class Exit(IntEnum):
    """Exit codes, documented in the README."""

    OK = 0
    ERROR = 1  # a command failed or input was bad; nothing was written
    USAGE = 2  # wrong arguments
    REFUSED = 3  # the plan cannot work (too small, no layout, failed image)
    UNSAFE = 4  # the target is not safe to write (backup disk, root, mounted)
    ABORTED = 5  # the person did not confirm, or cancelled between steps
    FAILED = 6  # a restore step failed; rerun the same command to resume
    INCOMPLETE = 7  # finished, but some files could not be read from the backup


class RescueError(Exception):
    """An error a person can act on: what is wrong, why, what to do."""

    exit_code: Exit = Exit.ERROR

    def __init__(self, what: str, why: str | None = None, fix: str | None = None) -> None:
        super().__init__(what)
        self.what = what
        self.why = why
        self.fix = fix

    def __str__(self) -> str:
        lines = [self.what]
        if self.why:
            lines.append(f"  why: {self.why}")
        if self.fix:
            lines.append(f"  what to do: {self.fix}")
        return "\n".join(lines)


class LayoutError(RescueError):
    """A captured layout file (sfdisk dump, lsblk JSON, fstab, ...) is unusable."""

    def __init__(self, file: str, line: int | None, what: str, fix: str | None = None) -> None:
        where = f"{file}:{line}" if line else file
        super().__init__(
            f"{where}: {what}",
            why="the captured disk layout cannot be read as written",
            fix=fix or "capture the layout again (rescue capture) or repair the file by hand",
        )
        self.file = file
        self.line = line


class BackupError(RescueError):
    """A bank, vault or image is missing, unreadable or not usable."""


class PlanRefused(RescueError):
    """The restore cannot work as asked; nothing has been written."""

    exit_code = Exit.REFUSED


class UnsafeTarget(PlanRefused):
    """The chosen target must never be written (safety rules in DESIGN.md)."""

    exit_code = Exit.UNSAFE


class Aborted(RescueError):
    """The person said no, or cancelled; nothing more was written."""

    exit_code = Exit.ABORTED


class StepFailed(RescueError):
    """A restore step failed part way; the journal lets a rerun resume."""

    exit_code = Exit.FAILED
