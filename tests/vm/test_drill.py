"""The demo drill end to end, BIOS and UEFI: the project's main job, run as its users run it.

`rescue drill` runs from a venv that has rescue installed from its wheel (not
editable, no source tree: see the installed_rescue fixture), so the rescue
image it builds is made from the installed distribution. Real everything:
mmdebstrap builds the demo machine (cached), dirvish backs it up twice with
rescue capture as hook onto a backup disk made by rescue prepare-disk, qemu
(TCG) boots the backup disk's "Unattended restore" entry with a blank, bigger
disk, and then boots the restored disk alone, whose report service prints what
the checks compare with the facts recorded before the original disk was thrown
away.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from rescue.qemu import Firmware

# the installed rescue, not a tree this test run points PYTHONPATH at
INSTALLED_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


@pytest.mark.slow
@pytest.mark.parametrize("firmware", [Firmware.BIOS, Firmware.UEFI], ids=["bios", "uefi"])
def test_the_demo_machine_is_restored_onto_a_bigger_disk_and_boots(
        firmware: Firmware, installed_rescue: Path, tmp_path: Path, record_property) -> None:
    argv = [str(installed_rescue / "bin" / "rescue"), "drill", "--demo", "--firmware", firmware.value,
            "--workdir", str(tmp_path)]
    if firmware is Firmware.BIOS:  # the copy against a plain tar pipe in the same boot (issue 19)
        argv += ["--compare-tar", "1"]  # one run (three by default, the best counting): CI has no time for more
    lines: list[str] = []
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
                          env=INSTALLED_ENV) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            print(line, end="", flush=True)
    text = "\n".join(lines)
    runs = json.loads((tmp_path / "report.json").read_text())
    drill = runs[-1]
    for phase in drill["phases"]:
        record_property(f"{firmware}:{phase['name']}", round(phase["seconds"], 1))
    assert proc.returncode == 0, text[-6000:]
    assert "rescue drill: all passed" in text
    if firmware is Firmware.BIOS:
        assert re.search(r"tar pipe, same images, same boot: [\d.]+ MiB in [\d.]+ s = ", text), text[-6000:]
    setup = runs[0]["phases"][0]
    assert setup["name"] == "rescue image (build or reuse)" and setup["ok"]
    names = [p["name"] for p in drill["phases"]]
    assert names == [
        "demo machine", "backup disk (rescue prepare-disk)", "backup (dirvish x2 + capture)",
        "disaster: original disk gone", "unattended config + boot entry",
        "restore inside the rescue VM", "boot the restored disk",
    ]
    booted = drill["phases"][-1]
    passed = {c["what"] for c in booted["checks"] if c["ok"]}
    assert {"reached multi-user (report service ran)", "/tmp mode 1777", "swap active with its UUID",
            "data (names, modes, owners, times, links, contents)"} <= passed
    mounts = {"/", "/home", "/tmp"} | ({"/boot/efi"} if firmware is Firmware.UEFI else set())
    assert {f"{m} mounted" for m in mounts} <= {c.split(",")[0] for c in passed}
    assert (tmp_path / firmware.value / "restored-serial.log").is_file()
    restore_log = (tmp_path / firmware.value / "restore-serial.log").read_text(errors="replace")
    assert "RESCUE-STEP-DONE bootloader" in restore_log, "the restore's end-of-step lines reach the console"
    assert "RESCUE-UNATTENDED-PLACEHOLDER" not in restore_log
    assert any("restoring" in line for line in lines), "progress lines during the restore"
