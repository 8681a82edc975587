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


# --- the rescue image and backup disks (issue 4) ------------------------------------------------

import subprocess  # noqa: E402
import sys  # noqa: E402
from collections.abc import Callable  # noqa: E402

from rescue.devices import make_image_file  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def rescue_image(_vm_tier_can_run: None) -> Path:
    """rescue-root.img, built once and cached in /var/cache/rescue/image across runs.

    It is rebuilt only when the recipe, grub/ or rescue's code changed (a
    few minutes with a warm package cache; see rescue.image.build).
    """
    from rescue.image.build import ensure_image

    image, _ = ensure_image()
    return image


@pytest.fixture()
def backup_disk(rescue_image: Path, tmp_path: Path) -> Callable[..., Path]:
    """Make a backup disk image FILE with `rescue prepare-disk` (the real command)."""

    def make(name: str = "backup.img", size_gib: float = 2.0, table: str = "gpt",
             backup_fs: str = "ext4", label: str = "BACKUP") -> Path:
        disk = make_image_file(tmp_path / name, int(size_gib * (1 << 30)))
        result = subprocess.run(
            [sys.executable, "-m", "rescue", "prepare-disk", str(disk), "--image", str(rescue_image),
             "--table", table, "--backup-fs", backup_fs, "--label", label, "--yes"],
            capture_output=True, text=True, cwd=REPO, timeout=600,
        )
        assert result.returncode == 0, f"prepare-disk failed:\n{result.stdout}\n{result.stderr}"
        return disk

    return make
