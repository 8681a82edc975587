"""Captured storage layouts: data model and parsers (no I/O beyond reading files)."""

from rescue.layout.model import (
    SCHEMA_VERSION,
    Boot,
    BootMode,
    Disk,
    Filesystem,
    FstabEntry,
    Layout,
    Mount,
    Partition,
    PartitionTable,
    RootMeta,
    Swap,
)

__all__ = [
    "SCHEMA_VERSION", "Boot", "BootMode", "Disk", "Filesystem", "FstabEntry", "Layout",
    "Mount", "Partition", "PartitionTable", "RootMeta", "Swap",
]
