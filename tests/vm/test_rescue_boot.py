"""Boot a backup disk made by `rescue prepare-disk` in qemu, on BIOS (SeaBIOS) and UEFI (OVMF).

Passes when the serial console shows the rescue entry point running with the
backup partition mounted read-only at /backup (the RESCUE-READY line the
entry point prints after reading /proc/mounts), and the rescue system came up
clean: no unit failed (`systemctl --failed`, printed by a probe unit this test
adds to its own copy of the disk) and no `[FAILED]` line on the console the
wizard shares. The boot time is recorded in the test report (record_property)
and printed.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from rescue.drill.backup_disk import mounted_partition
from rescue.qemu import VM, Firmware, plain

BOOT_TIMEOUT = 600  # TCG on a busy 2-core machine: 60 s when idle, 260 s seen under load
READY = re.compile(r"RESCUE-READY backup=/backup (\w+) mode=(\w+) tty=(\w+)")
FAIL = ("Kernel panic", "end Kernel panic", "ALERT!", "Gave up waiting for root", "grub rescue>")
UNITS = re.compile(r"RESCUE-TEST-UNITS state=(\S*)\n(.*?)RESCUE-TEST-UNITS-END", re.S)

# Started once the boot's jobs are queued; it waits for them to finish
# (is-system-running --wait) and prints the state and the failed units.
# Type=simple: the boot does not wait for it, so it cannot hold the boot up.
PROBE_UNIT = """\
[Unit]
Description=test probe: the rescue system's failed units once the boot is over
After=multi-user.target

[Service]
Type=simple
ExecStart=/bin/sh -c 'state=$(systemctl is-system-running --wait); \
  { echo; echo "RESCUE-TEST-UNITS state=$state"; systemctl --failed --no-legend --plain | sed "s/^/FAILED-UNIT /"; \
  echo RESCUE-TEST-UNITS-END; } > /dev/ttyS0'
"""


def add_unit_probe(disk: Path, workdir: Path) -> None:
    """The probe unit, in this test's backup disk only (its rescue partition's /etc)."""
    with mounted_partition(disk, "rescue", workdir / "mnt-rescue") as root:
        units = root / "etc/systemd/system"
        (units / "rescue-test-units.service").write_text(PROBE_UNIT)
        (units / "multi-user.target.wants").mkdir(exist_ok=True)
        (units / "multi-user.target.wants/rescue-test-units.service").symlink_to(
            "/etc/systemd/system/rescue-test-units.service")


def _boot(disk: Path, firmware: Firmware, workdir: Path, name: str) -> tuple[float, str]:
    with VM([disk], workdir, firmware=firmware, name=name) as vm:
        seconds = vm.wait_for("RESCUE-READY", BOOT_TIMEOUT, fail_markers=FAIL)
        vm.wait_for("RESCUE-TEST-UNITS-END", 300, fail_markers=FAIL)
        return seconds, vm.console()


@pytest.mark.slow
@pytest.mark.parametrize("firmware", [Firmware.BIOS, Firmware.UEFI], ids=["seabios", "ovmf"])
def test_backup_disk_boots_to_the_entry_point_with_backup_read_only(
        firmware: Firmware, backup_disk, tmp_path: Path, record_property) -> None:
    disk = backup_disk(f"backup-{firmware}.img")
    add_unit_probe(disk, tmp_path)
    seconds, console = _boot(disk, firmware, tmp_path, f"rescue-{firmware}")
    record_property("boot_seconds", round(seconds, 1))
    print(f"\n{firmware}: boot to the rescue entry point in {seconds:.1f} s (TCG)")
    lines = READY.findall(console)
    assert lines, console[-3000:]
    state, mode, tty = lines[0]
    assert state == "ro", f"/backup is {state!r}, not mounted read-only:\n{console[-3000:]}"
    assert mode == "wizard", "the default grub entry is the restore wizard"
    assert tty == "ttyS0"
    assert "mounted read-only at /backup" in console
    # grub's menu reached the serial console too
    assert "Restore wizard" in console
    # the rescue system greets the person without a failure (issue 14, point 7)
    text = plain(console)
    units = UNITS.search(text)
    assert units, text[-3000:]
    state, block = units.groups()
    # only the probe's own lines: the entry point shares the console and its lines can land inside the block
    failed = [line for line in block.splitlines() if line.startswith("FAILED-UNIT ")]
    assert failed == [], "failed units in the rescue system:\n" + "\n".join(failed)
    assert state == "running", f"the rescue system is {state!r} after its boot"
    alarms = [line for line in text.splitlines() if "[FAILED]" in line]
    assert alarms == [], "\n".join(alarms)


@pytest.mark.slow
def test_unattended_entry_is_chosen_by_the_backup_partitions_boot_cfg(backup_disk, tmp_path: Path,
                                                                      record_property) -> None:
    """/rescue/boot.cfg on the backup partition picks "Unattended restore" (as the drill does):
    the entry point runs the unattended restore script of the image on one console, and
    the serial console shows its markers either way."""
    from rescue.devices import attached, partition_path
    from rescue.run import run

    disk = backup_disk("unattended.img")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with attached(disk) as dev:
        run(["mount", partition_path(dev, 4), str(mnt)])
        try:
            (mnt / "rescue").mkdir()
            (mnt / "rescue" / "boot.cfg").write_text("set default=unattended\nset timeout=1\n")
        finally:
            run(["umount", str(mnt)])
    with VM([disk], tmp_path, firmware=Firmware.BIOS, name="unattended") as vm:
        seconds = vm.wait_for("RESCUE-UNATTENDED-END", BOOT_TIMEOUT, fail_markers=FAIL)
        console = vm.console()
    record_property("boot_seconds", round(seconds, 1))
    lines = READY.findall(console)
    assert ("ro", "unattended", "ttyS0") in lines, console[-3000:]
    assert "RESCUE-UNATTENDED-START tty=" in console
    # the image's script ran (no config on this disk: it says so and fails, nothing is written)
    assert "RESCUE-UNATTENDED-PLACEHOLDER" not in console, "the image must carry scripts/unattended-restore"
    assert "RESCUE-RESTORE" in console, console[-3000:]
