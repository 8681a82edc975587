"""Restore and prepare-disk steps: one module per kind. A plan builds them; the engine runs them."""

from rescue.steps.bank import MakeBank
from rescue.steps.base import Context, Step
from rescue.steps.bootcode import InstallBootCode
from rescue.steps.bootloader import InstallBootloader
from rescue.steps.copy import CopyTree
from rescue.steps.fixups import Fixups
from rescue.steps.mkfs import MakeEsp, MakeFilesystem
from rescue.steps.mkswap import MakeSwap
from rescue.steps.mount import MountFilesystem
from rescue.steps.partition import WritePartitionTable
from rescue.steps.subvolumes import MakeReadOnly, MakeSubvolumes
from rescue.steps.rescue_image import WriteRescueImage
from rescue.steps.unmount import UnmountAll
from rescue.steps.verify import Verify
from rescue.steps.wipe import WipeSignatures

__all__ = [
    "Context", "Step", "WipeSignatures", "WritePartitionTable", "MakeFilesystem", "MakeSwap",
    "MountFilesystem", "CopyTree", "Fixups", "InstallBootloader", "Verify", "UnmountAll",
    "MakeEsp", "WriteRescueImage", "InstallBootCode", "MakeBank", "MakeSubvolumes",
    "MakeReadOnly",
]
