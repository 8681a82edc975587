"""scripts/unattended-restore end to end: config on disk, one target chosen, markers printed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rescue.demo import DemoMachine, make_bank
from rescue.devices import loop_disk
from rescue.run import run

GiB = 1 << 30
SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "unattended-restore"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("unattended")
    with DemoMachine(tmp / "machine") as m:
        bank = make_bank(m, tmp / "bank")
        root_uuid = m.partition("/").uuid
        m.detach_keep_image()
    return bank, root_uuid


def unattended(config: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RESCUE_KMSG": "0", "RESCUE_PYTHON": sys.executable}
    return subprocess.run([str(SCRIPT), str(config), "--no-power"], capture_output=True, text=True,
                          env=env, timeout=600)


def test_unattended_restore_onto_the_selected_disk(demo, tmp_path):
    bank, root_uuid = demo
    with loop_disk(tmp_path / "t.img", GiB) as dev:
        config = tmp_path / "rescue-unattended.toml"
        config.write_text(f'bank = "{bank.bank}"\nclient = "{bank.client}"\nafter = "poweroff"\n'
                          f'log_dir = "{tmp_path / "logs"}"\n[target]\ndevice = "{dev}"\n')
        proc = unattended(config)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        lines = proc.stdout.splitlines()
        assert lines[0] == f"RESCUE-RESTORE: START {config}"
        assert f"RESCUE-RESTORE: TARGET {dev}" in lines
        assert lines[-1] == "RESCUE-RESTORE: OK"
        found = run(["blkid", "-p", "-o", "value", "-s", "UUID", f"{dev}p1"]).stdout.strip()
        assert found == root_uuid
        assert list((tmp_path / "logs").glob("*/restore-*.txt"))
        assert list((tmp_path / "logs").glob("restore-*.log"))


def test_unattended_refuses_when_no_disk_matches(demo, tmp_path):
    bank, _ = demo
    config = tmp_path / "rescue-unattended.toml"
    config.write_text(f'bank = "{bank.bank}"\nclient = "{bank.client}"\n[target]\nempty_disk_min_gib = 100000\n')
    proc = unattended(config)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[-1] == "RESCUE-RESTORE: FAILED 3"
    assert "no disk is the only empty disk of at least 100000 GiB" in proc.stderr


def test_unattended_with_a_broken_config_fails_with_a_marker(tmp_path):
    config = tmp_path / "rescue-unattended.toml"
    config.write_text('client = "x"\n')
    proc = unattended(config)
    assert proc.returncode == 2
    assert proc.stdout.splitlines()[-1] == "RESCUE-RESTORE: FAILED 2"
    assert "bank" in proc.stderr


def test_unattended_restore_refuses_a_disk_another_restore_holds(demo, tmp_path):
    """The unattended entry and a wizard on another console: the engine's disk lock keeps them apart."""
    from rescue.engine.lock import DiskLock

    bank, _ = demo
    img = tmp_path / "t.img"
    with loop_disk(img, GiB) as dev:
        run(["sfdisk", dev], input="label: dos\n\nsize=64MiB, type=83\n")
        before = run(["sha256sum", str(img)]).stdout.split()[0]
        config = tmp_path / "rescue-unattended.toml"
        config.write_text(f'bank = "{bank.bank}"\nclient = "{bank.client}"\n'
                          f'log_dir = "{tmp_path / "logs"}"\n[target]\ndevice = "{dev}"\n')
        with DiskLock(dev, "rescue wizard"):  # this test process stands for the other console
            proc = unattended(config)
        assert run(["sha256sum", str(img)]).stdout.split()[0] == before
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[-1] == "RESCUE-RESTORE: FAILED 3"
    assert f"another restore onto {dev} is under way: rescue wizard, pid {os.getpid()}" in proc.stderr
