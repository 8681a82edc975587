"""The demo drill end to end, BIOS and UEFI: the project's main job.

Real everything: mmdebstrap builds the demo machine (cached), dirvish backs
it up twice with rescue capture as hook onto a backup disk made by
rescue prepare-disk, qemu (TCG) boots the backup disk's "Unattended restore"
entry with a blank, bigger disk, and then boots the restored disk alone,
whose report service prints what the checks compare with the facts recorded
before the original disk was thrown away.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rescue.drill.demo import Options, run_demo
from rescue.qemu import Firmware


@pytest.mark.slow
@pytest.mark.parametrize("firmware", [Firmware.BIOS, Firmware.UEFI], ids=["bios", "uefi"])
def test_the_demo_machine_is_restored_onto_a_bigger_disk_and_boots(
        firmware: Firmware, tmp_path: Path, record_property) -> None:
    lines: list[str] = []

    def say(msg: str) -> None:
        lines.append(msg)
        print(msg, flush=True)

    report = run_demo(Options(workdir=tmp_path, firmwares=(firmware,)), say)
    text = report.render()
    print("\n" + text)
    drill = report.runs[-1]
    for phase in drill.phases:
        record_property(f"{firmware}:{phase.name}", round(phase.seconds, 1))
    assert report.ok, text
    names = [p.name for p in drill.phases]
    assert names == [
        "demo machine", "backup disk (rescue prepare-disk)", "backup (dirvish x2 + capture)",
        "disaster: original disk gone", "unattended config + boot entry",
        "restore inside the rescue VM", "boot the restored disk",
    ]
    booted = drill.phases[-1]
    passed = {c.what for c in booted.checks if c.ok}
    assert {"reached multi-user (report service ran)", "/tmp mode 1777", "swap active with its UUID",
            "data (names, modes, owners, times, links, contents)"} <= passed
    mounts = {"/", "/home", "/tmp"} | ({"/boot/efi"} if firmware is Firmware.UEFI else set())
    assert {f"{m} mounted" for m in mounts} <= {c.what.split(",")[0] for c in booted.checks if c.ok}
    assert (tmp_path / firmware.value / "restored-serial.log").is_file()
    assert any("restoring" in line for line in lines), "progress lines during the restore"
