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


def test_the_chroot_gets_run_flat_so_the_restored_filesystems_are_not_bound_into_themselves() -> None:
    """The restore mounts the new root under /run/rescue: `mount --rbind /run ROOT/run` copied the
    restored filesystems into their own /run, the copies reached udevd's private mount namespace,
    and the LVM drill's `vgchange -an` then failed with "contains a filesystem in use"."""
    from rescue.layout.model import BootMode
    from rescue.steps.bootloader import InstallBootloader

    lines = InstallBootloader("/dev/vdb", BootMode.BIOS).script()
    binds = " ".join(lines[:2])
    assert 'mount --bind /run "$ROOT/run"' in binds
    assert "--rbind" in binds and "/run" not in lines[0]  # /dev /proc /sys keep their submounts
