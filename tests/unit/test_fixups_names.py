"""Which fstab device names survive new hardware: the note a restore gives about the rest."""

from __future__ import annotations

import pytest

from rescue.steps.fixups import stable_device_name


@pytest.mark.parametrize("spec", ["/dev/mapper/demo-root", "/dev/mapper/vg0-home", "/dev/md/boot",
                                  "/dev/disk/by-id/ata-X-part1", "/dev/disk/by-uuid/1234"])
def test_names_of_lvs_arrays_and_by_links_are_stable(spec: str) -> None:
    assert stable_device_name(spec)


@pytest.mark.parametrize("spec", ["/dev/sda1", "/dev/vdb2", "/dev/nvme0n1p3", "/dev/md0",
                                  "/dev/novg/nolv"])  # no VG of that name is active here
def test_kernel_names_are_not(spec: str) -> None:
    assert not stable_device_name(spec)


def test_grub_is_installed_from_a_mount_namespace_of_its_own_with_run_bound_flat() -> None:
    """The binds into the restored system reached systemd-udevd's private mount namespace and
    stayed there on top of the restored root: the LVM drill's `vgchange -an` then failed with
    "contains a filesystem in use". /run also holds the restored root itself (/run/rescue)."""
    from rescue.layout.model import BootMode
    from rescue.steps.bootloader import InstallBootloader

    step = InstallBootloader("/dev/vdb", BootMode.BIOS, also=("/dev/vdc",))
    lines = step.chroot_lines("/usr/sbin/grub-install")
    assert lines[:4] == ['mount --rbind /dev "$1/dev"', 'mount --rbind /proc "$1/proc"',
                         'mount --rbind /sys "$1/sys"', 'mount --bind /run "$1/run"']
    assert 'chroot "$1" /usr/sbin/grub-install --target=i386-pc /dev/vdc' in lines
    assert lines[-1].startswith('chroot "$1" update-grub')
    (script,) = step.script()
    assert script.startswith("unshare --mount --propagation private sh -ec '") and script.endswith('"$ROOT"')
    assert "umount" not in script  # the namespace ends with the command, and every bind with it
