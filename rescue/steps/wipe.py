from __future__ import annotations

import os
from dataclasses import dataclass

from rescue.steps.base import Context, Step, rescan_disk, sh


def partitions_of(disk: str) -> list[str]:
    """The disk's partition device nodes the kernel knows now (from /sys)."""
    from rescue.devices import kernel_partitions

    return [f"/dev/{p.name}" for p in kernel_partitions(disk)]


@dataclass(frozen=True)
class WipeSignatures(Step):
    """Erase old partition-table and filesystem signatures so nothing stale survives.

    Each old partition is wiped first (a new table with the same offsets would
    otherwise show the old filesystems again), then the disk itself, which
    removes the MBR, both GPT headers and any whole-disk filesystem.
    """

    kind = "wipe"
    disk: str

    @property
    def key(self) -> str:
        return f"wipe:{self.disk}"

    def describe(self) -> str:
        return f"erase old signatures on {self.disk}"

    def script(self) -> list[str]:
        return [
            f"for part in $(lsblk -lnpo NAME {sh(self.disk)} | tail -n +2); do wipefs --all --force \"$part\"; done",
            sh("wipefs", "--all", "--force", self.disk),
            sh("partprobe", self.disk) + " || true",
        ]

    def run(self, ctx: Context) -> None:
        for part in partitions_of(self.disk):
            if os.path.exists(part):
                ctx.run(["wipefs", "--all", "--force", part])
        ctx.run(["wipefs", "--all", "--force", self.disk])
        rescan_disk(ctx, self.disk)
