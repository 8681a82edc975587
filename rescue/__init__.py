"""rescue: bootable backup disks and bare-metal restore from dirvish snapshots."""

__version__ = "0.1.0"
