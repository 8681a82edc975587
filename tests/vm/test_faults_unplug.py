"""The target disk disappears mid-restore (hot-unplug), inside the booted rescue system (qemu, TCG).

The backup disk (prepare-disk) carries a dirvish bank of the demo machine
with 128 MiB in /home. Booted to its rescue shell, `rescue restore` runs onto a
blank second disk; when the console shows the copy of /home started, the
disk is pulled out of the running machine (QMP device_del: the guest's
kernel gets an ACPI eject, as from a hot-swap bay or a USB disk whose cable
came out). What a person must see and find:

- a clear message naming the vanished target and what to do (reattach and
  rerun, or choose another disk), exit code 6 (a step failed), no traceback,
  never "OK";
- nothing of the lost disk left mounted, the shell still answering, the
  rescue system powering off (no hang on the removed disk);
- the journal readable, with the steps before the copy recorded as done;
- the backup partition's files unchanged, the disk's partition table, BIOS
  boot and EFI partitions unchanged byte for byte. (The rescue partition is the
  rescue system's own root, mounted read-write: it holds the journal.)
"""

from __future__ import annotations

import hashlib
import re
import time

import pytest

from rescue.devices import attached, make_image_file, partition_path
from rescue.errors import Exit
from rescue.qemu import Firmware
from rescue.run import run
from test_faults_power import backup_digest
from test_security_rescue import ShellVM, bank_on_backup_disk, boot_shell

GiB = 1 << 30
EXIT = r"RESTORE-EXIT=(\d+)"  # the printed code, not the typed "echo RESTORE-EXIT=$?"
JOURNAL = "/var/lib/rescue/dev_disk_by-id_virtio-rescue-d1/journal.json"


def squeeze(text: str) -> str:
    """Repeated characters as one: under load the serial log can hold a character twice
    ("serrial"), when qemu retries a write to the console socket and logs it again."""
    return re.sub(r"(.)\1+", r"\1", text)


def untouched_parts(disk) -> dict[str, str]:
    """The partition table and the BIOS boot and EFI partitions, hashed (they must never change)."""
    out = {}
    with attached(disk) as dev:
        out["table"] = run(["sfdisk", "--dump", dev]).stdout.replace(dev, "DISK")
        for n in (1, 2):
            h = hashlib.sha256()
            with open(partition_path(dev, n), "rb") as f:
                while chunk := f.read(4 << 20):
                    h.update(chunk)
            out[f"partition {n}"] = h.hexdigest()
    return out


@pytest.mark.slow
def test_target_unplugged_during_the_copy_fails_clearly_and_touches_nothing_else(backup_disk, tmp_path):
    disk, bank, _ = bank_on_backup_disk(backup_disk, tmp_path, "unplug.img", bulk_mib=128)
    before = backup_digest(disk, tmp_path / "check")
    parts_before = untouched_parts(disk)
    target = make_image_file(tmp_path / "target.img", GiB)
    cmd = (f"rescue restore --bank /backup/dirvish --client {bank.client} --target /dev/vdb --yes; "
           "echo RESTORE-EXIT=$?")

    with ShellVM([disk, target], tmp_path, firmware=Firmware.BIOS, name="unplug", qmp_socket=True) as vm:
        boot_shell(vm)
        vm.type(cmd)
        # the progress line, not the review; pulled at once: the copy's writes go to the disk
        # in the background, and 128 MiB are copied in a few seconds even under TCG
        vm.wait_for("] copy vault home", 900)
        assert not re.search(EXIT, vm.console()), "the restore ended before the disk was pulled"
        seconds = vm.unplug_disk(1)  # the guest released the disk: it is gone
        print(f"guest released the unplugged target after {seconds:.1f} s")
        vm.wait_for_pattern(EXIT, 600)
        time.sleep(1)
        said = vm.console().replace("\r", "")
        after = said[said.index("] copy vault home"):]

        assert "Traceback" not in said, after[-4000:]
        assert f"RESTORE-EXIT={int(Exit.FAILED)}" in squeeze(after), after[-4000:]
        assert "result:   OK" not in after and "RESCUE-RESTORE: OK" not in after, after[-4000:]
        # what / why / what to do, naming the disk (compared with repeated characters squeezed)
        plain = squeeze(after)
        for line in (
            "rescue restore: the target disk /dev/vdb (serial rescue-d1) disappeared during step 11 "
            "(copy vault home image 2026-1126-0300 to /home)",
            "why: /dev/vdb is gone: the kernel no longer lists a disk vdb",
            "what to do: reattach /dev/vdb (serial rescue-d1)",
            "or choose another disk as --target",
        ):
            assert squeeze(line) in plain, f"{line!r} not in:\n{after[-4000:]}"
        report = after.split("rescue restore report")[-1]
        assert "could not be read from the backup" not in report, report  # the backup is not to blame
        state = vm.ask("ls /dev/vdb 2>&1; grep -c ' /run/rescue' /proc/mounts; echo ALIVE")
        assert "No such file or directory" in state and "ALIVE" in state, state
        assert state.splitlines()[1].strip() == "0", f"filesystems of the lost disk still mounted:\n{state}"
        journal = vm.ask(f"python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); "
                         f"[print(\"STEP\", k, v[\"state\"]) for k, v in j[\"steps\"].items()]' {JOURNAL}")
        steps = dict(ln.split()[1:3] for ln in journal.splitlines() if ln.startswith("STEP ") and len(ln.split()) == 3)
        assert steps.get("copy:root") == "done" and steps.get("copy:home") == "started", journal
        assert all(v == "done" for k, v in steps.items() if k != "copy:home"), journal
        hung = vm.ask("dmesg | grep -c 'blocked for more than' || true")
        assert hung.strip().splitlines()[-1] == "0", hung
        vm.type("poweroff")
        vm.wait_exit(300)  # a kernel stuck on the removed disk would never power off

    assert backup_digest(disk, tmp_path / "check") == before, "the backup changed"
    assert untouched_parts(disk) == parts_before, "the backup disk's partition table or boot partitions changed"
