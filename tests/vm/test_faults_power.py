"""Power loss during a restore, inside the booted rescue system (qemu, TCG).

The backup disk (prepare-disk) carries a dirvish bank of the demo machine
with 128 MiB in /home. Booted to its rescue shell, `rescue restore` runs onto a
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
    disk, bank, parts = bank_on_backup_disk(backup_disk, tmp_path, "power.img", bulk_mib=128)
    before = backup_digest(disk, tmp_path / "check")
    target = make_image_file(tmp_path / "target.img", GiB)
    cmd = (f"rescue restore --bank /backup/dirvish --client {bank.client} --target /dev/vdb --yes; "
           "echo RESTORE-EXIT=$?")

    with ShellVM([disk, target], tmp_path, firmware=Firmware.BIOS, name="power1") as vm:
        boot_shell(vm)
        vm.type(cmd)
        vm.wait_for("] copy vault home", 900)  # the progress line, not the review
        time.sleep(1)  # the copy is under way (128 MiB take a few seconds even under TCG)
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
                    exclude += ["proc", "sys", "dev", "run", "var", "tmp"]
                tree = bank.image_dir(p.vault) / "tree"
                assert diff_trees(tree, where, times=True, exclude=exclude) == [], p.mountpoint
            finally:
                run(["umount", str(where)])
    assert backup_digest(disk, tmp_path / "check") == before, "the backup changed"


@pytest.mark.slow
def test_power_loss_during_the_bootloader_step_then_rerun_boots(tmp_path, monkeypatch):
    """The drill's demo OS machine (BIOS), with a power cut while grub is being installed.

    The whole drill runs as `rescue drill` runs it (demo machine, backup disk by
    prepare-disk, dirvish x2 + capture, unattended restore, boot of the result); only
    before its restore boot, the backup disk is booted once more and qemu is killed as
    soon as the console shows the bootloader step ("[n/N] install grub"). The drill's
    restore boot then resumes from the journal on the rescue partition (finished
    steps skipped, the bootloader step redone), and the restored disk, booted alone,
    must reach multi-user with every drill check passing.
    """
    from rescue.drill import demo
    from rescue.drill.report import Run
    from rescue.qemu import VM

    cut: dict[str, str] = {}
    original = demo.restore_and_boot

    def cut_power_first(run, say, *, work, firmware, backup_img, target_img, memory_mib, **kw):
        vm = VM([backup_img, target_img], work, firmware=firmware, memory_mib=memory_mib, name="cut")
        with vm:
            seconds = vm.wait_for("] install grub", demo.RESTORE_TIMEOUT, fail_markers=demo.RESTORE_FAILED,
                                  progress=lambda s, line: say(f"  [cut] {s / 60:4.1f} min | {line}"))
            time.sleep(2)  # grub-install is under way in the restored system's chroot
            cut["console"] = vm.console()
            vm.kill()  # power loss
        say(f"  [cut] power cut {seconds:.0f} s after boot, during the bootloader step")
        original(run, say, work=work, firmware=firmware, backup_img=backup_img, target_img=target_img,
                 memory_mib=memory_mib, **kw)

    monkeypatch.setattr(demo, "restore_and_boot", cut_power_first)
    opts = demo.Options(workdir=tmp_path, firmwares=(Firmware.BIOS,))
    setup, drill = Run("setup"), Run("demo bios")
    prepared = demo.prepare(setup, print)
    try:
        demo.drill_one(Firmware.BIOS, prepared, opts, drill, print)
    except demo.PhaseFailed:
        pass
    text = "\n".join(f"{p.name}: {'ok' if p.ok else 'FAILED'} {p.error or ''}\n" + "\n".join(
        "   " + c.line() for c in p.checks) for p in drill.phases)
    print(text)

    first = cut.get("console", "")
    assert "] install grub" in first and demo.RESTORE_OK not in first, first[-3000:]
    assert drill.ok, text
    rerun = (tmp_path / "bios" / "restore-serial.log").read_text(errors="replace").replace("\r", "")
    assert "resuming an earlier run" in rerun, rerun[-4000:]
    assert "done already: copy vault home" in rerun and "done already: copy vault root" in rerun, rerun[-4000:]
    redo = rerun[rerun.index("resuming an earlier run"):]
    assert "] install grub" in redo and "done already: install grub" not in redo, redo[-4000:]
    booted = drill.phases[-1]
    assert booted.name == "boot the restored disk"
    passed = {c.what for c in booted.checks if c.ok}
    assert {"reached multi-user (report service ran)", "/tmp mode 1777",
            "data (names, modes, owners, times, links, contents)"} <= passed, text
