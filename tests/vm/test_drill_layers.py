"""The layered demo machines drilled end to end (issue 17): `rescue drill --demo --layout NAME`.

Run as users run it, from rescue installed from its wheel. The host kernel has no
device-mapper, so the machine's storage is built inside a rescue VM boot (its
shell), with the machine's files unpacked there from the host and its layout
captured there; real dirvish backs the same files up; the backup disk's
unattended restore rebuilds it onto a blank, bigger disk; the result boots alone
and its report must show every filesystem, LV, VG and PV UUID as captured, swap
active on its LV, no failed unit and the data as backed up.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from rescue.qemu import Firmware
from test_drill import INSTALLED_ENV


def _drill(installed_rescue: Path, tmp_path: Path, layout: str, firmware: Firmware) -> tuple[int, str, list]:
    argv = [str(installed_rescue / "bin" / "rescue"), "drill", "--demo", "--layout", layout,
            "--firmware", firmware.value, "--workdir", str(tmp_path)]
    lines: list[str] = []
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
                          env=INSTALLED_ENV) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            print(line, end="", flush=True)
    runs = json.loads((tmp_path / "report.json").read_text())
    return proc.returncode, "\n".join(lines), runs


@pytest.mark.slow
@pytest.mark.parametrize("firmware", [Firmware.BIOS, Firmware.UEFI], ids=["bios", "uefi"])
def test_the_lvm_machine_is_built_in_a_vm_restored_and_boots_with_every_identifier(
        firmware: Firmware, installed_rescue: Path, tmp_path: Path, record_property) -> None:
    code, text, runs = _drill(installed_rescue, tmp_path, "lvm", firmware)
    drill = runs[-1]
    for phase in drill["phases"]:
        record_property(f"lvm-{firmware}:{phase['name']}", round(phase["seconds"], 1))
    assert code == 0, text[-6000:]
    assert "rescue drill: all passed" in text
    assert [p["name"] for p in drill["phases"]] == [
        "backup disk (rescue prepare-disk)", "demo machine's files (on the host)",
        "demo machine built in a rescue VM (lvm)", "backup (dirvish x2 + the machine's capture)",
        "disaster: original disk gone", "unattended config + boot entry",
        "restore inside the rescue VM", "boot the restored disk",
    ]
    captured = {c["what"] for c in drill["phases"][3]["checks"] if c["ok"]}
    assert {"capture recorded VG demo", "capture recorded LV demo/root", "capture recorded LV demo/swap",
            "capture recorded LV demo/home"} <= captured
    booted = drill["phases"][-1]
    passed = {c["what"] for c in booted["checks"] if c["ok"]}
    assert {"reached multi-user (report service ran)", "swap active with its UUID", "PV UUID as captured",
            "no failed systemd unit", "data (names, modes, owners, times, links, contents)"} <= passed
    for lv in ("root", "swap", "home"):
        assert f"LV demo/{lv} active, its UUID and its VG's as captured" in passed
    mounts = {"/", "/boot", "/home"} | ({"/boot/efi"} if firmware is Firmware.UEFI else set())
    assert {f"{m} mounted" for m in mounts} <= {c.split(",")[0] for c in passed}
    restored = (tmp_path / firmware.value / "restored-serial.log").read_text(errors="replace")
    assert "DEMO-LV demo/root" in restored
