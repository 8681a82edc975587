from __future__ import annotations

from dataclasses import dataclass

from rescue.layout.model import PartitionTable
from rescue.steps.base import Step


@dataclass(frozen=True)
class WritePartitionTable(Step):
    """Write the planned table with sfdisk, then read it back and compare."""

    kind = "partition"
    disk: str
    table: PartitionTable  # already migrated to the target: device, sizes, no stale last-lba

    @property
    def key(self) -> str:
        return f"partition:{self.disk}"

    def describe(self) -> str:
        return f"write {self.table.label} partition table ({len(self.table.partitions)} partitions) to {self.disk}"
