"""VM tier: qemu boots under TCG. It fails, never skips."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from rescue.qemu import OVMF_CODE


@pytest.fixture(scope="session", autouse=True)
def _vm_tier_can_run() -> None:
    problems = []
    if os.geteuid() != 0:
        problems.append("not root")
    if shutil.which("qemu-system-x86_64") is None:
        problems.append("qemu-system-x86_64 missing (run scripts/setup.sh)")
    if not OVMF_CODE.exists():
        problems.append(f"{OVMF_CODE} missing (package ovmf)")
    if not Path("/dev/loop-control").exists():
        problems.append("no loop devices")
    if problems:
        pytest.fail("vm tier cannot run: " + "; ".join(problems), pytrace=False)
