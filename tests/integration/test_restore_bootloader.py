"""The bootloader step's own logic on a loop disk, with grub-install stood in for.

grub-install cannot install onto a loop device on this build machine ("cannot
find a GRUB drive"), and the demo trees are not bootable systems, so the
restored tree here is a tiny system whose grub-install and update-grub are
shell scripts (run by the host's dash, copied in with its libc). They record
how they were called and write what grub would leave behind (a boot sector
saying GRUB; EFI/BOOT/BOOTX64.EFI). What this proves: the step runs the
restored system's own grub-install inside a chroot, with /dev, /proc, /sys
and /run bound in, with the right arguments for BIOS and UEFI, then
update-grub; Verify finds the boot code; everything is unmounted after. What
it does not prove: that real grub boots the disk (the qemu drill does).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from rescue.devices import loop_disk
from rescue.engine import Executor
from rescue.layout.model import BootMode, Partition, PartitionTable
from rescue.run import run
from rescue.steps import (
    CopyTree,
    InstallBootloader,
    MakeFilesystem,
    MountFilesystem,
    UnmountAll,
    Verify,
    WipeSignatures,
    WritePartitionTable,
)

MiB = 1 << 20

# Like the real ones, the stand-ins write into /boot/grub (modules, grub.cfg):
# verify must accept those differences from the backup and no others.
STUB = r"""#!/bin/sh
echo "$0 $*" >> /boot/grub/grub-calls
echo "module stand-in" > /boot/grub/i386-pc/normal.mod
echo "menuentry stand-in" > /boot/grub/grub.cfg
[ -e /proc/self/mounts ] && echo "proc bound" >> /boot/grub/grub-calls
[ -d /sys/block ] && echo "sys bound" >> /boot/grub/grub-calls
[ -d /run ] && echo "run bound" >> /boot/grub/grub-calls
for a in "$@"; do
    case "$a" in
        /dev/*) [ -b "$a" ] && printf '\353\143\220GRUB boot sector stand-in' > "$a" && echo "wrote $a" >> /boot/grub/grub-calls ;;
        --efi-directory=*) echo "efi image stand-in" > "${a#--efi-directory=}/EFI/BOOT/BOOTX64.EFI" ;;
    esac
done
"""


def tiny_system(top: Path) -> Path:
    """A tree with /bin/sh (dash and its libraries) and stand-in grub commands."""
    tree = top / "tree"
    for rel in ("bin", "usr/sbin", "etc", "boot/efi", "boot/grub/i386-pc", "dev", "proc", "sys", "run",
                "lib/x86_64-linux-gnu", "lib64"):
        (tree / rel).mkdir(parents=True, exist_ok=True)
    shutil.copy2(os.path.realpath("/bin/dash"), tree / "bin" / "sh")
    for lib in ("/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2"):
        shutil.copy2(os.path.realpath(lib), tree / lib.lstrip("/"))
    for name in ("grub-install", "update-grub"):
        (tree / "usr/sbin" / name).write_text(STUB)
        os.chmod(tree / "usr/sbin" / name, 0o755)
    (tree / "etc/os-release").write_text('ID=debian\n')
    esp = top / "esp-tree"
    (esp / "EFI" / "BOOT").mkdir(parents=True)
    return tree


def plan_for(dev: str, tree: Path, mode: BootMode) -> list:
    parts = [Partition("/dev/x1", 2048, 256 * 2048, "83", bootable=True)]
    mkfs = [MakeFilesystem(f"{dev}p1", "ext4", "0b5a7a1e-1111-4222-8333-444455556666", "tiny-root", "/")]
    mounts = [MountFilesystem(f"{dev}p1", "/", "ext4")]
    copies = [CopyTree("root", "2026-1126-0300", tree, "/")]
    if mode is BootMode.UEFI:
        # the host kernel has no vfat: an ext4 stands in for the ESP (the step only needs it mounted)
        parts.append(Partition("/dev/x2", 2048 + 256 * 2048, 64 * 2048, "ef"))
        mkfs.append(MakeFilesystem(f"{dev}p2", "ext4", None, "tiny-esp", "/boot/efi"))
        mounts.append(MountFilesystem(f"{dev}p2", "/boot/efi", "ext4"))
        copies.append(CopyTree("esp", "2026-1126-0300", tree.parent / "esp-tree", "/boot/efi"))
    table = PartitionTable(label="dos", label_id="0x1234abcd", partitions=tuple(parts))
    return [
        WipeSignatures(dev), WritePartitionTable(dev, table), *mkfs, *mounts, *copies,
        InstallBootloader(dev, mode, "/boot/efi" if mode is BootMode.UEFI else None),
        Verify(dev, tuple(copies[:1]), tuple(mkfs), mode=mode, check_boot=True),
        UnmountAll(),
    ]


@pytest.mark.parametrize("mode", [BootMode.BIOS, BootMode.UEFI])
def test_bootloader_runs_the_restored_systems_grub_in_a_chroot(tmp_path, mode):
    tree = tiny_system(tmp_path)
    with loop_disk(tmp_path / "t.img", 512 * MiB) as dev:
        steps = plan_for(dev, tree, mode)
        outcome = Executor(target=dev, state_dir=tmp_path / "state", mount_dir=tmp_path / "mnt",
                           bootloader="install", recheck=lambda: None).run(steps)
        assert outcome.ok, outcome.summary
        assert f"grub installed for {mode.value.upper()} on {dev}" in outcome.summary
        assert not [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
                    if str(tmp_path) in line]
        mnt = tmp_path / "check"
        mnt.mkdir()
        run(["mount", "-o", "ro", f"{dev}p1", str(mnt)])
        try:
            calls = (mnt / "boot/grub/grub-calls").read_text().splitlines()
        finally:
            run(["umount", str(mnt)])
        assert calls.count("proc bound") >= 2 and "sys bound" in calls and "run bound" in calls
        if mode is BootMode.BIOS:
            assert f"/usr/sbin/grub-install --target=i386-pc {dev}" in calls
            assert f"wrote {dev}" in calls
            assert f"boot code: GRUB in the MBR of {dev}" in outcome.summary
        else:
            assert "/usr/sbin/grub-install --target=x86_64-efi --efi-directory=/boot/efi --removable" in calls
            assert "boot code: boot/efi/EFI/BOOT/BOOTX64.EFI present" in outcome.summary
        assert "/usr/sbin/update-grub " in calls or "/usr/sbin/update-grub" in calls
        assert "tree /: equal to vault root" in outcome.summary


def test_a_restored_system_without_grub_gets_a_clear_message(tmp_path):
    tree = tiny_system(tmp_path)
    (tree / "usr/sbin/grub-install").unlink()
    with loop_disk(tmp_path / "t.img", 512 * MiB) as dev:
        steps = plan_for(dev, tree, BootMode.BIOS)
        outcome = Executor(target=dev, state_dir=tmp_path / "state", mount_dir=tmp_path / "mnt",
                           bootloader="install", recheck=lambda: None).run(steps)
        assert "bootloader NOT installed: the restored system has no grub-install" in outcome.summary
        assert "boot code: not checked, bootloader not installed" in outcome.summary
