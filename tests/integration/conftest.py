"""Integration tier: root, real loop devices, real tools. It fails, never skips."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

NEEDED = ("losetup", "sfdisk", "mkfs.ext4", "mkfs.xfs", "mkfs.btrfs", "rsync", "dirvish", "blkid")


@pytest.fixture(scope="session", autouse=True)
def _integration_tier_can_run() -> None:
    problems = []
    if os.geteuid() != 0:
        problems.append("not root")
    if not Path("/dev/loop-control").exists():
        problems.append("no /dev/loop-control (loop devices)")
    missing = [t for t in NEEDED if shutil.which(t, path="/usr/sbin:/usr/bin:/sbin:/bin") is None]
    if missing:
        problems.append("missing tools: " + ", ".join(missing) + " (run scripts/setup.sh)")
    if problems:
        pytest.fail("integration tier cannot run: " + "; ".join(problems), pytrace=False)
