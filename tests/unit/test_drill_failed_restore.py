"""After a failed restore the drill stops at once, unless the restore finished its bootloader step.

The consoles are serial logs recorded from real qemu boots (tests/unit/data/drill):
restore-serial.log is a demo drill's unattended restore (BIOS), uefi-shell-serial.log
is OVMF booting a blank disk into its shell. A failure is the recorded restore cut
after the step that fails, followed by the lines the restore prints when a step
fails (`FAILED: ...`, the RESCUE-RESTORE marker, the power-off).

qemu itself is replaced by a stand-in that replays those logs: a TCG boot takes
a minute or more, which the unit tier cannot spend (tests/vm runs the real ones).
"""

from __future__ import annotations

import io
import json
import subprocess
import time
from pathlib import Path

import pytest

from rescue import events as ev
from rescue.drill import demo
from rescue.drill.checks import steps_done
from rescue.drill.demo import boot_for_evidence, restore_and_boot
from rescue.drill.demo_disk import DemoFacts
from rescue.drill.report import PhaseFailed, Report, Run
from rescue.qemu import VM, Firmware, plain

DATA = Path(__file__).parent / "data" / "drill"
RESTORE = (DATA / "restore-serial.log").read_text()
UEFI_SHELL = (DATA / "uefi-shell-serial.log").read_text()
SAMPLE = "\x1b[1m\x1b[33m\x1b[40mMapping table"


def failed_at(step: str, why: str) -> str:
    """The recorded restore, failing at the step whose progress line starts with `step`."""
    lines = RESTORE.splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if line.startswith(step))
    return "".join(lines[:at + 1]) + (
        f"      FAILED: {why}\r\n"
        "RESCUE-RESTORE: FAILED 6\r\n"
        "[   41.508233] reboot: Power down\r\n"
    )


AT_PARTITION = failed_at("[2/15] write dos partition table", "sfdisk /dev/vdb: exit 1")
AT_GRUB = failed_at("[13/15] install grub", "grub-install --target=i386-pc /dev/vdb: exit 1")
AT_VERIFY = failed_at("[14/15] verify", "tree /home: 1 file differs from vault home image 2026-1204-0300")


def test_the_recording_is_a_restore_that_printed_its_plan_and_end_of_step_lines():
    assert "install grub for BIOS on /dev/vdb" in RESTORE.split("restore: 15 steps")[0], "the plan names grub"
    assert "RESCUE-STEP-DONE bootloader" in RESTORE and "RESCUE-RESTORE: OK" in RESTORE


def test_a_failure_before_grub_boots_nothing_though_the_plan_says_install_grub():
    assert "install grub" in AT_PARTITION
    assert "bootloader" not in steps_done(AT_PARTITION)
    assert not boot_for_evidence(AT_PARTITION)
    assert not boot_for_evidence(AT_GRUB), "grub-install started but did not finish"


def test_a_failure_at_verify_after_grub_finished_boots_for_the_evidence():
    assert {"bootloader", "fixups"} <= steps_done(AT_VERIFY)
    assert "verify" not in steps_done(AT_VERIFY)
    assert boot_for_evidence(AT_VERIFY)
    assert not boot_for_evidence(RESTORE), "a restore that did not fail is not booted 'for the evidence'"


def test_the_restore_prints_its_end_of_step_lines_only_when_asked():
    from rescue.commands.restore import ProgressPrinter
    from rescue.unattended import Config, Selector, restore

    for markers in (True, False):
        out = io.StringIO()
        p = ProgressPrinter(out, markers=markers)
        p(ev.PlanStarted(15, True))
        p(ev.StepSkipped(0, "wipe:/dev/vdb", "erase old signatures on /dev/vdb"))
        p(ev.StepStarted(12, 15, "bootloader", "install grub for BIOS on /dev/vdb"))
        p(ev.StepFailed(12, "bootloader", "grub-install: exit 1"))
        p(ev.StepStarted(12, 15, "bootloader", "install grub for BIOS on /dev/vdb"))
        p(ev.StepDone(12, "bootloader", 19.2))
        assert steps_done(out.getvalue()) == ({"wipe:/dev/vdb", "bootloader"} if markers else set())
    asked: dict = {}

    def console(job, selection, device, **kw):
        asked.update(kw)
        return 0

    class Picked:  # the images and layout, without reading a bank
        images, layout, notes = (), None, ()

    config = Config(Path("x.toml"), (Path("/backup/bank"),), "web1", Selector(device="/dev/vdb"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("rescue.engine.restore.Restore.select", lambda self: Picked())
        restore(config, "/dev/vdb", console=console)
    assert asked.get("markers") is True, "the unattended restore (what the drill boots) prints them"


# --- the drill itself, with qemu replaced by a replay of recorded consoles -------------------

class ReplayVM(VM):
    """A stand-in for qemu: the guest's serial log is a recorded one; the guest 'powers off'
    when the recording ends with the kernel's power-down line."""

    consoles: dict[str, str] = {}
    started: list[str] = []

    def start(self) -> VM:
        self.workdir.mkdir(parents=True, exist_ok=True)
        console = self.consoles[self.name]
        self.serial_log.write_text(console)
        seconds = "0" if "reboot: Power down" in console else "300"
        self.proc = subprocess.Popen(["sleep", seconds], stderr=subprocess.PIPE, start_new_session=True)
        self.started.append(self.name)
        return self


@pytest.fixture()
def replay(monkeypatch: pytest.MonkeyPatch):
    ReplayVM.started = []
    monkeypatch.setattr(demo, "VM", ReplayVM)
    monkeypatch.setattr(demo, "BOOT_TIMEOUT", 20)  # the old drill waited the whole timeout here

    def drill(tmp: Path, restore: str, restored: str) -> tuple[Run, float, str]:
        ReplayVM.consoles = {"restore": restore, "restored": restored}
        run, said = Run("demo bios"), []
        facts = DemoFacts(firmware="bios", hostname="demo", label="", disk_size=0, filesystems=(),
                          swap_uuid="", data_sum="", data_list=())
        start = time.monotonic()
        with pytest.raises(PhaseFailed):
            restore_and_boot(run, said.append, work=tmp, firmware=Firmware.BIOS, backup_img=tmp / "backup.img",
                             target_img=tmp / "new.img", facts=facts, memory_mib=1024, label="bios")
        report = Report([run])
        report.save(tmp / "report.json")
        return run, time.monotonic() - start, report.render()

    return drill


def test_drill_stops_at_once_after_a_failure_at_step_2(replay, tmp_path: Path):
    run, seconds, text = replay(tmp_path, AT_PARTITION, UEFI_SHELL)
    assert ReplayVM.started == ["restore"], "the blank disk must not be booted"
    assert seconds < 15
    assert [p.name for p in run.phases] == ["restore inside the rescue VM"]
    assert "not booted: the restore failed before its bootloader step finished" in text
    assert "RESCUE-RESTORE: FAILED" in text


def test_drill_boots_for_the_evidence_after_a_failure_at_verify(replay, tmp_path: Path):
    run, seconds, text = replay(tmp_path, AT_VERIFY, UEFI_SHELL)
    assert ReplayVM.started == ["restore", "restored"]
    boot = run.phases[-1]
    assert boot.name == "boot the restored disk" and not boot.ok
    assert any("booted for the evidence" in n for n in boot.notes)
    # the restored disk did not boot either: OVMF's shell ends the phase at once
    assert seconds < 15
    assert "UEFI Interactive Shell" in (boot.error or "")
    assert "Mapping table" in text and "\x1b" not in text
    assert "\x1b" not in (tmp_path / "report.json").read_text()
    assert "\\u001b" not in (tmp_path / "report.json").read_text()
    json.loads((tmp_path / "report.json").read_text())


# --- escapes -------------------------------------------------------------------------------

def test_terminal_escapes_are_stripped_from_console_text():
    assert plain(SAMPLE) == "Mapping table"
    assert plain("\x1b]0;rescue: title\x07ok\x1b]2;t\x1b\\") == "ok"  # OSC, ended by BEL or ST
    assert plain("\x1b(B\x1b)0a\x1b%Gb\x1b7c\x1b8") == "abc"  # charset selects, save/restore cursor
    assert plain("\x1b[=3h\x1b[2J\x1b[01;01H\x1b[?25lShell> \x1b[0m") == "Shell> "
    assert plain("line one\r\nline two\r\n") == "line one\nline two\n"
    shell = plain(UEFI_SHELL)
    assert "\x1b" not in shell and "Mapping table" in shell and "UEFI Interactive Shell v2.2" in shell


def test_the_report_prints_no_escapes_from_a_console():
    run = Run("demo uefi")
    with pytest.raises(PhaseFailed):
        with run.phase("boot the restored disk", lambda m: None) as ph:
            ph.notes.append(f"console said: {SAMPLE}")
            ph.check("reached multi-user", False, "DEMO-UP", SAMPLE)
    run.phases[-1].error = f"restored: the guest printed 'UEFI Interactive Shell'\n  why: {UEFI_SHELL}"
    text = Report([run]).render()
    assert "\x1b" not in text
    assert "console said: Mapping table" in text
    assert "got Mapping table" in text
