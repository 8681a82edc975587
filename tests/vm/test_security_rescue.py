"""Security of the rescue system, checked inside a booted backup disk (qemu, TCG).

A backup disk made by `rescue prepare-disk` (C's fixture) gets a real dirvish
bank of the demo machine on its backup partition and boots its "Rescue shell"
entry (chosen by /rescue/boot.cfg on the backup partition, as a person would
pick it from the menu). Its serial console is a socket this test types into.
Inside the guest:
- root's password is locked (passwd -S and /etc/shadow);
- nothing listens on the network after boot (`ss -ltnup` when the image has
  ss, and /proc/net/{tcp,tcp6,udp,udp6} always: no LISTEN, no bound UDP port);
- the image holds no SSH host keys;
- the backup partition's top folder and the bank are 0700 root;
- while `rescue restore` copies the bank onto a blank second disk, /proc/mounts
  shows /backup read-only and writing there fails; the restore finishes;
- then, on that disk, partition tables written by the restore's own partition
  code while udev (it runs here) and a neighbour looping `blockdev --rereadpt`,
  `partx -u` and `udevadm trigger` make the kernel re-read them show up as
  written, every round (tests/stress_partition_table.py; a UEFI drill once
  failed at step 2 on a partition that vanished under a udev re-read).
C's boot tests check /backup ro at boot; this checks it during a restore.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from pathlib import Path

import pytest

from rescue.demo import DemoMachine, make_bank
from rescue.devices import attached, make_image_file, partition_path
from rescue.drill.shell_vm import BOOT_TIMEOUT, ShellVM, boot_shell  # noqa: F401 (the other vm tests import them from here)
from rescue.qemu import BootTimeout, Firmware
from rescue.run import run

GiB = 1 << 30
STRESS = Path(__file__).resolve().parents[1] / "stress_partition_table.py"
STRESS_ROUNDS = 100
STRESS_PAUSE = 0.5  # seconds between the neighbour's re-reads: udev's work for each is slow under TCG


def bank_on_backup_disk(backup_disk, tmp_path: Path, name: str, bulk_mib: int = 0, boot: str = "shell",
                        tools: tuple[Path, ...] = ()):
    """A backup disk (prepare-disk) holding a dirvish bank of the demo machine, booting `boot`.

    `tools` are copied into /rescue/tools/ of the backup partition (/backup/rescue/tools in the
    guest). Returns the disk image, the DemoBank (its host copy stays for comparisons) and the
    demo machine's partition facts."""
    disk = backup_disk(name)
    with DemoMachine(tmp_path / "machine", size=GiB) as m:
        if bulk_mib:
            bulk = m.dir_of("/home") / "bulk"
            bulk.mkdir()
            for i in range(bulk_mib * 4):
                (bulk / f"f{i:04}").write_bytes(os.urandom(256 * 1024))
        bank = make_bank(m, tmp_path / "bank", images=("2026-1126-0300",))
        parts = list(m.partitions)
        m.detach_keep_image()
    mnt = tmp_path / "mnt"
    mnt.mkdir(exist_ok=True)
    with attached(disk) as dev:
        run(["mount", partition_path(dev, 4), str(mnt)])
        try:
            for vault in os.listdir(bank.bank):
                run(["cp", "-a", str(bank.bank / vault), str(mnt / "dirvish" / vault)])
            (mnt / "rescue").mkdir(exist_ok=True)
            (mnt / "rescue" / "boot.cfg").write_text(f"set default={boot}\nset timeout=1\n")
            if tools:
                (mnt / "rescue" / "tools").mkdir()
                for tool in tools:
                    shutil.copy(tool, mnt / "rescue" / "tools" / tool.name)
        finally:
            run(["umount", str(mnt)])
    return disk, bank, parts


@pytest.fixture()
def disk_with_bank(backup_disk, tmp_path):
    disk, bank, _ = bank_on_backup_disk(backup_disk, tmp_path, "security.img", tools=(STRESS,))
    shutil.rmtree(tmp_path / "bank", ignore_errors=True)
    return disk, bank.client


@pytest.mark.slow
def test_rescue_system_is_locked_down_and_keeps_the_backup_read_only(disk_with_bank, tmp_path):
    disk, client = disk_with_bank
    target = make_image_file(tmp_path / "target.img", GiB)
    with ShellVM([disk, target], tmp_path, firmware=Firmware.BIOS, name="security") as vm:
        boot_shell(vm)

        status = vm.ask("passwd -S root; cut -d: -f1,2 /etc/shadow | grep '^root:'")
        assert re.search(r"^root L\b", status, re.M), status
        assert re.search(r"^root:[!*]", status, re.M), status

        ss = vm.ask("command -v ss >/dev/null && ss -ltnup || echo NO-SS")
        tcp = vm.ask("cat /proc/net/tcp /proc/net/tcp6 2>/dev/null")
        udp = vm.ask("cat /proc/net/udp /proc/net/udp6 2>/dev/null")
        rows = [ln.split() for ln in tcp.splitlines() if re.match(r"\s*\d+:", ln)]
        assert not [r for r in rows if r[3] == "0A"], f"TCP sockets listening after boot:\n{tcp}"
        assert not [ln for ln in udp.splitlines() if re.match(r"\s*\d+:", ln)], f"UDP ports bound:\n{udp}"
        if "NO-SS" not in ss:
            assert not [ln for ln in ss.splitlines()[1:] if ln.strip()], ss

        keys = vm.ask("ls /etc/ssh/ 2>&1; ls /etc/ssh/ssh_host_* 2>&1 | head -n 3")
        assert "ssh_host_" not in keys.replace("ls: cannot access '/etc/ssh/ssh_host_*'", ""), keys

        modes = vm.ask("stat -c '%a %U %n' /backup /backup/dirvish")
        assert modes.split() == ["700", "root", "/backup", "700", "root", "/backup/dirvish"], modes

        vm.type(f"rescue restore --bank /backup/dirvish --client {client} --target /dev/vdb --yes "
                "--state-dir /run/rescue-state > /run/restore.log 2>&1; echo RESTORE-EXIT=$? >> /run/restore.log &")
        seen = []
        for _ in range(6):  # while it copies: /backup stays read-only and refuses a write
            time.sleep(10)
            seen.append(vm.ask("grep ' /backup ' /proc/mounts; touch /backup/written 2>&1; "
                               "grep -c . /run/restore.log"))
        for answer in seen:
            mount_line = answer.splitlines()[0]
            assert " ro," in mount_line or mount_line.split()[3].startswith("ro"), answer
            assert "Read-only file system" in answer, answer
        deadline = time.monotonic() + 900
        log = ""
        while time.monotonic() < deadline:
            log = vm.ask("cat /run/restore.log")
            if "RESTORE-EXIT=" in log:
                break
            time.sleep(15)
        assert "RESTORE-EXIT=0" in log, log[-3000:]
        assert "[" in log and "copy vault" in log, log[-3000:]

        # The restored disk is done with: its table is rewritten again and again while udev and a
        # re-reading neighbour make the kernel re-read it; every round the kernel must show the
        # table written, as the restore's partition step waits for.
        assert "UDEV-RUNS" in vm.ask("test -S /run/udev/control && echo UDEV-RUNS"), \
            "udev must run in the rescue system for this stress to mean what it says"
        vm.type(f"python3 /backup/rescue/tools/{STRESS.name} /dev/vdb {STRESS_ROUNDS} {STRESS_PAUSE} "
                "> /run/stress.log 2>&1; echo STRESS-EXIT=$? >> /run/stress.log &")
        deadline = time.monotonic() + 900
        stress = ""
        while time.monotonic() < deadline and "STRESS-EXIT=" not in stress:
            time.sleep(20)
            # the one-CPU rescue VM, with the stress beside it and another VM on the host, has
            # let a shell answer wait past 300 s: an unanswered look is tried again until the deadline
            with contextlib.suppress(BootTimeout):
                stress = vm.ask("cat /run/stress.log", timeout=min(120, max(deadline - time.monotonic(), 1)))
        m = re.search(rf"^STRESS-TABLE: OK {STRESS_ROUNDS} rounds, (\d+) re-reads$", stress, re.M)
        assert m and "STRESS-EXIT=0" in stress, stress[-3000:]
        assert int(m.group(1)) >= STRESS_ROUNDS // 4, f"the neighbour re-read only {m.group(1)} times: no stress"
        print("".join(line + "\n" for line in stress.splitlines() if line.startswith(("stress:", "STRESS"))))
        vm.type("poweroff")
        vm.wait_exit(120)
