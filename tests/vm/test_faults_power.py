"""Power loss during a restore, inside the booted rescue system (qemu, TCG).

The backup disk (prepare-disk) carries a dirvish bank of the demo machine
with 64 MiB in /home. Booted to its rescue shell, `rescue restore` runs onto a
blank second disk; when the console shows the copy of /home started, qemu is
killed (the guest loses power: its page cache and the running copy vanish).
The backup disk is booted again and the same command is run: it resumes from
the journal on the rescue partition and finishes. Then, on the host, every
restored tree is compared with its image and the backup partition's files
with what was put there (the backup is unchanged).

The demo machine has no operating system, so the result is not booted here;
booting restored disks is the drill's job (rescue drill, F).
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from rescue.demo import diff_trees
from rescue.devices import attached, make_image_file, partition_path
from rescue.qemu import Firmware
from rescue.run import run
from test_security_rescue import ShellVM, bank_on_backup_disk, boot_shell

GiB = 1 << 30


def tree_digest(top: Path) -> str:
    """Names, sizes, modes and contents of everything under `top` (the backup must not change)."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in sorted(os.walk(top)):
        dirnames.sort()
        for n in sorted(filenames):
            p = Path(dirpath) / n
            st = os.lstat(p)
            h.update(os.fsencode(p.relative_to(top)) + f" {st.st_mode} {st.st_size}\n".encode())
            if p.is_file() and not p.is_symlink():
                h.update(p.read_bytes())
    return h.hexdigest()


def backup_digest(disk: Path, where: Path) -> str:
    where.mkdir(exist_ok=True)
    with attached(disk) as dev:
        run(["mount", "-o", "ro,noload", partition_path(dev, 4), str(where)])
        try:
            return tree_digest(where / "dirvish")
        finally:
            run(["umount", str(where)])


@pytest.mark.slow
def test_power_loss_during_the_copy_then_rerun_finishes(backup_disk, tmp_path):
    disk, bank, parts = bank_on_backup_disk(backup_disk, tmp_path, "power.img", bulk_mib=64)
    before = backup_digest(disk, tmp_path / "check")
    target = make_image_file(tmp_path / "target.img", GiB)
    cmd = (f"rescue restore --bank /backup/dirvish --client {bank.client} --target /dev/vdb --yes; "
           "echo RESTORE-EXIT=$?")

    with ShellVM([disk, target], tmp_path, firmware=Firmware.BIOS, name="power1") as vm:
        boot_shell(vm)
        vm.type(cmd)
        vm.wait_for("] copy vault home", 900)  # the progress line, not the review
        time.sleep(3)  # the copy is under way
        assert "RESTORE-EXIT=" not in vm.console()
        vm.kill()  # power loss
    first = (tmp_path / "power1-serial.log").read_text(errors="replace")
    assert "RESTORE-EXIT=" not in first

    with ShellVM([disk, target], tmp_path, firmware=Firmware.BIOS, name="power2") as vm:
        boot_shell(vm)
        vm.type(cmd)
        vm.wait_for("RESTORE-EXIT=", 1800)
        time.sleep(1)
        second = vm.console()
        vm.type("poweroff")
        vm.wait_exit(180)
    assert "RESTORE-EXIT=0" in second, second[-4000:]
    assert "resuming an earlier run" in second, second[-4000:]
    assert "done already: write gpt partition table" in second, second[-4000:]

    where = tmp_path / "cmp"
    where.mkdir()
    with attached(target) as dev:
        for p in sorted((p for p in parts if p.mountpoint), key=lambda p: len(p.mountpoint)):
            opts = "ro,norecovery,nouuid" if p.fstype == "xfs" else "ro,noload" if p.fstype.startswith("ext") else "ro"
            run(["mount", "-t", p.fstype, "-o", opts, partition_path(dev, p.number), str(where)])
            try:
                exclude = ["lost+found"] if p.fstype.startswith("ext") else []
                if p.mountpoint == "/":
                    exclude += ["proc", "sys", "dev", "run", "var"]
                tree = bank.image_dir(p.vault) / "tree"
                assert diff_trees(tree, where, times=True, exclude=exclude) == [], p.mountpoint
            finally:
                run(["umount", str(where)])
    assert backup_digest(disk, tmp_path / "check") == before, "the backup changed"
