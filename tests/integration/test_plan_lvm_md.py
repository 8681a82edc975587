"""`rescue plan` on a machine captured with md RAID1 and LVM with a thin pool (issue 17): the
review shows the array made degraded from the one disk restored, the volume group made again
from its vgcfgbackup and the thin pool by lvcreate; restore.sh carries every command.

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
from rescue.run import run

DATA = Path(__file__).resolve().parents[1] / "unit" / "data" / "lvm-md"
REPO = Path(__file__).resolve().parents[2]


def test_rescue_plan_shows_the_array_the_volume_group_and_the_thin_pool_it_makes(tmp_path):
    box = tmp_path / "lvmtest"
    (box / "tree" / "etc").mkdir(parents=True)
    (box / "tree" / "usr").mkdir()
    shutil.copytree(DATA, box / "rescue")
    disk = make_image_file(tmp_path / "target.img", 512 << 20)
    script = tmp_path / "restore.sh"
    with attached(disk) as dev:
        before = run(["sha256sum", dev]).stdout.split()[0]
        r = subprocess.run([sys.executable, "-m", "rescue", "plan", "--tree", str(box / "tree"),
                            "--client", "lvmtest", "--source-disk", "/dev/vdb", "--target", dev,
                            "--script", str(script)],
                           capture_output=True, text=True, cwd=REPO, timeout=300)
        after = run(["sha256sum", dev]).stdout.split()[0]
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "make md raid1 /dev/md0" in out and "degraded, 1 of 2 members" in out, out
    assert "make LVM volume group vgtest" in out and "thin pool pool is made again by lvcreate" in out, out
    assert "Traceback" not in out, out
    text = script.read_text()
    assert "mdadm --create /dev/md0" in text and "vgcfgrestore --devices=/dev/md0" in text, text
    assert "--type thin-pool" in text and "--thinpool pool" in text, text
    assert before == after  # a plan writes nothing
