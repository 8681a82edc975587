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

from rescue.layout.df import DfEntry, parse_df
from rescue.layout.findmnt import parse_findmnt
from rescue.layout.fstab import parse_fstab
from rescue.layout.legacy import load_layout, load_legacy
from rescue.layout.lsblk import BlockDevice, parse_lsblk
from rescue.layout.sfdisk import parse_sfdisk, render_sfdisk
from rescue.layout.swaps import parse_swaps

__all__ = [
    "BlockDevice", "DfEntry", "load_layout", "load_legacy", "parse_df", "parse_findmnt", "parse_fstab",
    "parse_lsblk", "parse_sfdisk", "parse_swaps", "render_sfdisk",
    "SCHEMA_VERSION", "Boot", "BootMode", "Disk", "Filesystem", "FstabEntry", "Layout",
    "Mount", "Partition", "PartitionTable", "RootMeta", "Swap",
]
