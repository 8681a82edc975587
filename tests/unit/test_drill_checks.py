"""The drill's reading of the restored machine's serial console, and its report."""

from __future__ import annotations

from pathlib import Path

import pytest

from rescue.drill.checks import check_restored, parse_console
from rescue.drill.demo_disk import DemoFacts, FsFact, parts_for
from rescue.drill.report import Phase, PhaseFailed, Report, Run
from rescue.errors import RescueError
from rescue.qemu import Firmware

FACTS = DemoFacts(
    firmware="bios", hostname="demo", label="dos", disk_size=2 << 30,
    filesystems=(
        FsFact("/", "ext4", "0b7c4c1e-1111-4a2b-9c3d-000000000001"),
        FsFact("/home", "xfs", "0b7c4c1e-1111-4a2b-9c3d-000000000002"),
        FsFact("/tmp", "ext4", "0b7c4c1e-1111-4a2b-9c3d-000000000003"),
    ),
    swap_uuid="0b7c4c1e-1111-4a2b-9c3d-000000000004",
    data_sum="ab" * 32,
    data_list=("d 755 0 0 4096 1600000000.0000000000 3 srv/demo -> ", "f 600 1000 1000 49 1600000000.0000000000 1 home/alice/notes.txt -> "),
)

GOOD = """\
[  OK  ] Reached target multi-user.target - Multi-User System.
DEMO-UP demo\r
DEMO-TMP-MODE 1777
DEMO-SWAP 0b7c4c1e-1111-4a2b-9c3d-000000000004 active
DEMO-FS / 0b7c4c1e-1111-4a2b-9c3d-000000000001 ext4 755
DEMO-FS /home 0b7c4c1e-1111-4a2b-9c3d-000000000002 xfs 755
DEMO-FS /tmp 0b7c4c1e-1111-4a2b-9c3d-000000000003 ext4 1777
DEMO-DATA """ + "ab" * 32 + """
DEMO-FILE d 755 0 0 4096 1600000000.0000000000 3 srv/demo -> 
DEMO-FILE f 600 1000 1000 49 1600000000.0000000000 1 home/alice/notes.txt -> 
DEMO-DONE
[   12.3] reboot: Power down
"""


def test_a_good_console_passes_every_check() -> None:
    phase = Phase("boot restored disk")
    check_restored(GOOD, FACTS, phase)
    assert phase.ok, [c.line() for c in phase.checks if not c.ok]
    assert len(phase.checks) == 9


def test_markers_after_kernel_noise_on_the_same_line_are_read() -> None:
    c = parse_console("[   5.1] random: crng init done DEMO-UP demo\nDEMO-TMP-MODE 1777\n")
    assert c.up == "demo" and c.tmp_mode == "1777"


@pytest.mark.parametrize("change, failing", [
    (("DEMO-TMP-MODE 1777", "DEMO-TMP-MODE 755"), "/tmp mode 1777"),
    (("0b7c4c1e-1111-4a2b-9c3d-000000000004 active", "ffff active"), "swap active with its UUID"),
    (("/home 0b7c4c1e-1111-4a2b-9c3d-000000000002 xfs", "/home 0b7c4c1e-1111-4a2b-9c3d-00000000000f xfs"),
     "/home mounted, xfs, UUID as captured"),
    (("/ 0b7c4c1e-1111-4a2b-9c3d-000000000001 ext4", "/ 0b7c4c1e-1111-4a2b-9c3d-000000000001 ext3"),
     "/ mounted, ext4, UUID as captured"),
    (("DEMO-DONE", ""), "report complete, powered off"),
    (("DEMO-UP demo", "DEMO-UP other"), "hostname"),
])
def test_each_wrong_fact_fails_its_own_check(change: tuple[str, str], failing: str) -> None:
    phase = Phase("boot")
    check_restored(GOOD.replace(*change), FACTS, phase)
    assert not phase.ok
    assert [c.what for c in phase.checks if not c.ok] == [failing]


def test_different_data_names_the_entries_that_differ() -> None:
    text = GOOD.replace("ab" * 32, "cd" * 32).replace("f 600 1000 1000", "f 644 1000 1000")
    phase = Phase("boot")
    check_restored(text, FACTS, phase)
    assert [c.what for c in phase.checks if not c.ok] == ["data (names, modes, owners, times, links, contents)"]
    assert any("f 600 1000 1000" in n for n in phase.notes)
    assert any("f 644 1000 1000" in n for n in phase.notes)


def test_a_console_without_markers_fails_everything_but_nothing_crashes() -> None:
    phase = Phase("boot")
    check_restored("Kernel panic - not syncing: VFS: Unable to mount root fs\n", FACTS, phase)
    assert not phase.ok
    assert all(not c.ok for c in phase.checks)


def test_facts_round_trip_through_json(tmp_path: Path) -> None:
    FACTS.save(tmp_path / "facts.json")
    assert DemoFacts.load(tmp_path / "facts.json") == FACTS


def test_uefi_demo_has_an_esp_without_a_vault_and_bios_has_none() -> None:
    uefi, bios = parts_for(Firmware.UEFI), parts_for(Firmware.BIOS)
    assert [p.mountpoint for p in uefi if p.fstype == "vfat"] == ["/boot/efi"]
    assert not any(p.fstype == "vfat" for p in bios)
    assert [p.mountpoint for p in bios if p.backup] == ["/", "/home"]
    assert [p.size_mib for p in bios][-1] == 0  # the last one takes the rest, and grows on a bigger disk


def test_report_times_phases_and_stops_at_the_first_failure() -> None:
    said: list[str] = []
    run = Run("bios")
    with run.phase("build", said.append) as ph:
        ph.check("built", True)
    with pytest.raises(PhaseFailed):
        with run.phase("restore", said.append):
            raise RescueError("qemu exited", why="no disk")
    report = Report([run])
    text = report.render()
    assert not report.ok
    assert "ok   build" in text and "FAIL restore" in text and "! qemu exited" in text
    assert text.splitlines()[-1] == "rescue drill: FAILED"
    assert any("restore ..." in s for s in said)


def test_a_failed_check_fails_the_phase_after_it_ran() -> None:
    run = Run("uefi")
    with pytest.raises(PhaseFailed) as e:
        with run.phase("boot restored disk", lambda s: None) as ph:
            ph.check("/tmp mode 1777", False, "1777", "755")
    assert "expected 1777, got 755" in str(e.value)
    assert not run.ok


def test_an_unexpected_error_becomes_a_failed_phase_not_a_traceback() -> None:
    run = Run("bios")
    with pytest.raises(PhaseFailed, match="backup"):
        with run.phase("backup", lambda s: None):
            raise KeyError("home")
    assert run.phases[0].error == "unexpected error: KeyError('home')"


def test_the_restore_steps_time_and_the_copy_throughput_come_from_the_rescue_vms_console():
    """Recorded from a real drill (BIOS, rescue VM of one CPU under TCG): the drill's report
    says what the restore's time went to and what verify cost beside the copy."""
    from rescue.drill.checks import step_times, timing_notes

    console = (Path(__file__).parent / "data" / "drill" / "restore-console-bios.txt").read_text()
    steps = step_times(console)
    assert len(steps) == 15 and steps[0].what.startswith("erase old signatures")
    copies = [s for s in steps if s.what.startswith("copy ")]
    assert [(s.seconds, s.copied) for s in copies] == [(39.4, int(427.2 * (1 << 20))), (1.6, 64 << 20)]
    notes = timing_notes(steps)
    assert "copy 41.0 s" in notes[0] and "verify 4.3 s" in notes[0] and "bootloader 25.8 s" in notes[0]
    assert notes[1] == "copy: 491.2 MiB in 41.0 s = 12.0 MiB/s"
    assert notes[2].startswith("verify: 4.3 s = 0.10 of the copy's time (within")
    # a step resumed as done already has no time of its own; a slow verify is said plainly
    slow = console.replace("done in 4.3s", "done in 30.0s")
    assert "OVER rescue's goal" in timing_notes(step_times(slow))[2]
    assert timing_notes(step_times("no restore here")) == []


def test_a_tar_pipe_timed_in_the_same_boot_is_set_against_the_copy():
    from rescue.drill.checks import compared, step_times, timing_notes

    console = (Path(__file__).parent / "data" / "drill" / "restore-console-bios.txt").read_text()
    assert compared(console) is None
    line = "[  120.5] RESCUE-RESTORE: COMPARE tar 480.0 MiB in 32.0 s = 15.0 MiB/s\n"
    tar = compared(console + line)
    assert tar == (480.0, 32.0, (32.0,))
    notes = timing_notes(step_times(console), tar=tar)
    # the copy: 491.2 MiB in 41.0 s (0.0835 s/MiB); tar: 0.0667 s/MiB
    assert notes[-1] == ("tar pipe, same images, same boot: 480.0 MiB in 32.0 s = 15.0 MiB/s; "
                         "restore's copy / tar = 1.25 (time per MiB)")


def test_the_best_of_several_tar_runs_is_set_against_the_copy_and_each_run_is_shown():
    from rescue.drill.checks import compared, step_times, timing_notes

    console = (Path(__file__).parent / "data" / "drill" / "restore-console-bios.txt").read_text()
    line = "[  420.5] RESCUE-RESTORE: COMPARE tar 480.0 MiB in 32.0 s = 15.0 MiB/s (best of 3: 90.8, 32.0, 41.5 s)\n"
    tar = compared(console + line)
    assert tar == (480.0, 32.0, (90.8, 32.0, 41.5))
    assert timing_notes(step_times(console), tar=tar)[-1] == (
        "tar pipe, same images, same boot: 480.0 MiB in 32.0 s (best of 3: 90.8, 32.0, 41.5 s) = 15.0 MiB/s; "
        "restore's copy / tar = 1.25 (time per MiB)")
