"""`rescue drill --rsnapshot ROOT --client HOST`: real rsnapshot snapshots restored in qemu and booted.

The drill's bootable demo machine (dos table, BIOS) is backed up by real
rsnapshot (its own config in the test's folder: hourly twice, then daily),
with `rescue capture` as backup_script, so each snapshot carries its layout.
The disk is then deleted. The drill copies the chosen snapshot's host folder
onto its backup disk image, the rescue VM's unattended restore rebuilds every
filesystem from that one tree, and the restored disk boots alone to
multi-user with /, /home, swap and /tmp as captured. One rescue boot and one
restored boot, as the bank drill (TCG: about 5-10 min on a busy host); the
rescue image and the demo OS come from the shared cache.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rescue.demo.rsnapshot import make_snapshots
from rescue.demo.trees import tree_digest
from rescue.devices import attached, partition_path
from rescue.drill import demo_os
from rescue.drill.demo_disk import DemoDisk
from rescue.qemu import Firmware
from rescue.run import run

STAMP = "etc/rescue-drill-night"


@pytest.mark.slow
def test_rsnapshot_snapshots_restore_in_the_vm_and_boot(tmp_path: Path, run_drill) -> None:
    tarball = demo_os.build(progress=print).tarball
    with DemoDisk(tmp_path / "machine", Firmware.BIOS, tarball) as machine:
        facts = machine.build()

        def night2() -> None:
            (machine.root / STAMP).write_text("night 2\n")  # type: ignore[attr-defined]

        snaps = make_snapshots(machine, tmp_path / "snapshots", runs=("hourly", "hourly", "daily"),  # type: ignore[arg-type]
                               between=(night2,))
        image = machine.image
    image.unlink()  # the disaster
    before = tree_digest(snaps.root)
    work = tmp_path / "work"
    code, text = run_drill(["--rsnapshot", str(snaps.root), "--client", snaps.client,
                            "--workdir", str(work), "--keep"])
    try:
        assert code == 0, text[-6000:]
        drill = json.loads((work / "report.json").read_text())[-1]
        phases = {p["name"]: p for p in drill["phases"]}
        assert all(p["ok"] for p in drill["phases"])
        assert "localhost/hourly.0 (/)" in "\n".join(phases["choose images"]["notes"])
        booted = {c["what"]: c for c in phases["boot the restored disk"]["checks"]}
        assert "reached multi-user (report service ran)" in booted
        for fs in facts.filesystems:
            check = booted[f"{fs.mountpoint} mounted, {fs.fstype}, UUID as captured"]
            assert check["expected"].split()[0] == fs.uuid
        with attached(work / "bank" / "new-disk.img") as disk:  # the newest night, hourly.0
            where = tmp_path / "check"
            where.mkdir()
            run(["mount", "-o", "ro,noload", partition_path(disk, 1), str(where)])
            try:
                assert (where / STAMP).read_text() == "night 2\n"
            finally:
                run(["umount", str(where)])
        assert tree_digest(snaps.root) == before  # only read
    finally:
        for img in (work / "bank").glob("*.img"):
            img.unlink()
