from __future__ import annotations

from dataclasses import dataclass

from rescue.errors import StepFailed
from rescue.steps.base import Context, Step


@dataclass(frozen=True)
class UnmountAll(Step):
    """Unmount everything the restore mounted, deepest first (also run after a failure)."""

    kind = "unmount"
    persistent = False

    @property
    def key(self) -> str:
        return "unmount"

    def describe(self) -> str:
        return "unmount the restored filesystems"

    def script(self) -> list[str]:
        return ['umount --recursive "$WORK" 2>/dev/null || true', 'umount --recursive "$ROOT"', "sync"]

    def run(self, ctx: Context) -> None:
        from rescue.engine.mounts import unmount_all

        ctx.run(["sync"])
        left = unmount_all(ctx.run, ctx.work) + unmount_all(ctx.run, ctx.root)
        if left:
            raise StepFailed("some restored filesystems could not be unmounted: " + ", ".join(left),
                             fix="close programs using them, then run umount on each")
