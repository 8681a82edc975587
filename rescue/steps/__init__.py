"""Restore steps: one module per kind. The plan builds them; the engine runs them."""

from rescue.steps.base import Context, Step
from rescue.steps.bootloader import InstallBootloader
from rescue.steps.copy import CopyTree
from rescue.steps.fixups import Fixups
from rescue.steps.mkfs import MakeFilesystem
from rescue.steps.mkswap import MakeSwap
from rescue.steps.mount import MountFilesystem
from rescue.steps.partition import WritePartitionTable
from rescue.steps.unmount import UnmountAll
from rescue.steps.verify import Verify
from rescue.steps.wipe import WipeSignatures

__all__ = [
    "Context", "Step", "WipeSignatures", "WritePartitionTable", "MakeFilesystem", "MakeSwap",
    "MountFilesystem", "CopyTree", "Fixups", "InstallBootloader", "Verify", "UnmountAll",
]
