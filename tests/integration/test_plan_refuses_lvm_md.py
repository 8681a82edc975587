"""`rescue plan` on a machine captured with md RAID and LVM with a thin pool prints the refusal
(issue 17): rescue makes md arrays and volume groups again, not yet thin pools.

The layout is the one recorded inside the rescue VM (tests/unit/data/lvm-md, see its
README: this host has neither md nor device-mapper); the target is a loop disk, as
`rescue plan` wants a block device. Nothing is written to it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from rescue.devices import attached, make_image_file

DATA = Path(__file__).resolve().parents[1] / "unit" / "data" / "lvm-md"
REPO = Path(__file__).resolve().parents[2]


def test_rescue_plan_refuses_a_thin_pool_on_md_and_says_what_to_do(tmp_path):
    box = tmp_path / "lvmtest"
    (box / "tree" / "etc").mkdir(parents=True)
    (box / "tree" / "usr").mkdir()
    shutil.copytree(DATA, box / "rescue")
    disk = make_image_file(tmp_path / "target.img", 2 << 30)
    with attached(disk) as dev:
        r = subprocess.run([sys.executable, "-m", "rescue", "plan", "--tree", str(box / "tree"),
                            "--client", "lvmtest", "--source-disk", "/dev/vdb", "--target", dev],
                           capture_output=True, text=True, cwd=REPO, timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode == 3, out
    assert "vgtest" in out and "pool (thin-pool)" in out, out
    assert "why:" in out and "vgcfgrestore --force" in out, out
    assert "Traceback" not in out, out
