"""The shape every restore step shares.

A step is frozen data built by the plan. It can describe itself in a line,
render itself as shell for restore.sh, and run through a Context that the
Executor provides (the gateway, events, the mount root, cancellation).
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Protocol

if TYPE_CHECKING:
    from rescue.events import Event
    from rescue.run import Arg, Result


class Context(Protocol):
    """What a running step may use. Implemented by the engine."""

    root: Path  # private mount point under which the target's filesystems hang

    def run(self, argv: Sequence[Arg], **kwargs: object) -> Result: ...

    def emit(self, event: Event) -> None: ...

    def cancelled(self) -> bool: ...


def sh(*argv: object) -> str:
    """One shell-quoted command line for restore.sh."""
    return shlex.join(str(a) for a in argv)


@dataclass(frozen=True)
class Step:
    kind: ClassVar[str] = "step"

    @property
    def key(self) -> str:
        """Stable identity in the journal: kind plus what it acts on."""
        raise NotImplementedError

    def describe(self) -> str:
        """One line a person reads in the review and the progress list."""
        raise NotImplementedError

    def script(self) -> list[str]:
        """Shell lines that do the same by hand (restore.sh)."""
        raise NotImplementedError

    def run(self, ctx: Context) -> None:
        raise NotImplementedError(f"{self.kind} cannot run yet")
