"""A Debian-style LVM machine restored onto a SMALLER disk inside the rescue VM (issue 17, "Sizes").

The host kernel has no device-mapper: the machine is built inside one rescue boot on a spare
disk (dos table: /boot ext2, an extended partition with a PV in a logical partition, as the
Debian installer's guided LVM makes it; root, swap_1 and home LVs). It is captured there
(`rescue capture --disk --root`), copied to a plain tree in the VM's memory, taken down, and
restored by `rescue restore --tree` onto a disk too small for the PV's captured size. Passes
when the plan laid the volume group out anew (said in its output), vgcfgrestore accepted the
rewritten text, the VG, its PV and every LV keep their UUIDs, each LV is smaller than
captured yet holds its files, the filesystems keep their UUIDs, and the VG is deactivated at
the end. One rescue boot (about 1-2 minutes under TCG).
"""

from __future__ import annotations

import re

import pytest

from rescue.devices import make_image_file
from rescue.qemu import Firmware
from test_lvm_md_capture import _backup_disk
from test_security_rescue import ShellVM, boot_shell

MiB = 1 << 20

BUILD = """set -e
printf 'label: dos\\n,64M,83\\n,,5\\n,,8e\\n' | sfdisk -q /dev/vdb
udevadm settle
mkfs.ext2 -q -L boot /dev/vdb1
pvcreate -q /dev/vdb5 && vgcreate -q fit-vg /dev/vdb5
lvcreate -q -y -L 160M -n root fit-vg && lvcreate -q -y -L 64M -n swap_1 fit-vg
lvcreate -q -y -l 100%FREE -n home fit-vg
mkfs.ext4 -q -L root /dev/fit-vg/root && mkfs.ext4 -q -L home /dev/fit-vg/home
mkswap -L swap /dev/fit-vg/swap_1 >/dev/null
mkdir -p /mnt/t && mount /dev/fit-vg/root /mnt/t && mkdir -p /mnt/t/boot /mnt/t/home /mnt/t/etc
mount /dev/vdb1 /mnt/t/boot && mount /dev/fit-vg/home /mnt/t/home
echo "/dev/mapper/fit--vg-root / ext4 defaults 0 1" > /mnt/t/etc/fstab
echo "UUID=$(blkid -s UUID -o value /dev/vdb1) /boot ext2 defaults 0 2" >> /mnt/t/etc/fstab
echo "/dev/mapper/fit--vg-home /home ext4 defaults 0 2" >> /mnt/t/etc/fstab
echo "/dev/mapper/fit--vg-swap_1 none swap sw 0 0" >> /mnt/t/etc/fstab
echo fitted > /mnt/t/etc/motd && echo kernel > /mnt/t/boot/vmlinuz-demo
head -c 3000000 /dev/urandom > /mnt/t/home/photo.jpg && sha256sum /mnt/t/home/photo.jpg > /run/photo.sum
mkdir -p /mnt/t/tmp /mnt/t/proc /mnt/t/sys /mnt/t/dev /mnt/t/run
swapon /dev/fit-vg/swap_1
mkdir -p /run/m/fit && rescue capture --out /run/m/fit/rescue --disk /dev/vdb --root /mnt/t --client fit > /run/cap.log 2>&1
mkdir -p /run/m/fit/tree && cp -a /mnt/t/. /run/m/fit/tree/
swapoff /dev/fit-vg/swap_1; umount /mnt/t/home /mnt/t/boot /mnt/t; vgchange -q -an fit-vg
echo BUILT-OK
"""


@pytest.mark.slow
def test_an_lvm_machine_restored_onto_a_smaller_disk_fits_its_lvs_and_keeps_every_uuid(rescue_image, tmp_path):
    disk = _backup_disk(rescue_image, tmp_path)
    old = make_image_file(tmp_path / "old.img", 512 * MiB)
    small = make_image_file(tmp_path / "small.img", 320 * MiB)  # the old PV alone is ~440 MiB
    with ShellVM([disk, old, small], tmp_path, firmware=Firmware.BIOS, name="lvmfit") as vm:
        boot_shell(vm)
        built = vm.ask(f"( {BUILD} ) 2>&1; tail -n 5 /run/cap.log", timeout=400)
        before = vm.ask("pvs --devices=/dev/vdb5 --noheadings -o pv_uuid,vg_uuid; "
                        "lvs --devices=/dev/vdb5 --noheadings -o lv_name,lv_uuid,lv_size --units m; "
                        "blkid -o export /dev/vdb1", timeout=60)
        restored = vm.ask(
            "rescue restore --tree /run/m/fit/tree --client fit --target /dev/vdc --bootloader skip "
            "--state-dir /run/rescue-state --yes > /run/restore.log 2>&1; echo RC=$?; "
            "grep -i 'laid out anew' /run/restore.log; tail -n 30 /run/restore.log", timeout=900)
        check = vm.ask(
            "echo DMSETUP; dmsetup ls; echo PVS; pvs --devices=/dev/vdc5 --noheadings -o pv_uuid,vg_uuid; "
            "echo LVS; lvs --devices=/dev/vdc5 --noheadings -o lv_name,lv_uuid,lv_size --units m; "
            "vgchange --devices=/dev/vdc5 -ay fit-vg >/dev/null; udevadm settle; echo BLKID; "
            "blkid -o export /dev/vdc1 /dev/mapper/fit--vg-root /dev/mapper/fit--vg-home /dev/mapper/fit--vg-swap_1; "
            "mkdir -p /mnt/r && mount -o ro /dev/mapper/fit--vg-root /mnt/r && mount -o ro /dev/mapper/fit--vg-home "
            "/mnt/r/home && mount -o ro /dev/vdc1 /mnt/r/boot && echo FILES && cat /mnt/r/etc/motd "
            "/mnt/r/boot/vmlinuz-demo && (cd /mnt/r && sed 's# /mnt/t/# #' /run/photo.sum | sha256sum -c); "
            "umount /mnt/r/boot /mnt/r/home /mnt/r; vgchange --devices=/dev/vdc5 -an fit-vg >/dev/null; "
            "echo CHECK-END", timeout=300)
        vm.type("poweroff")
        vm.wait_exit(180)

    assert "BUILT-OK" in built, built
    assert "RC=0" in restored, restored
    assert "laid out anew" in restored, restored
    assert "No devices found" in check.split("DMSETUP")[1].split("PVS")[0], check  # deactivated at the end
    pv_vg = before.split()[:2]
    assert " ".join(pv_vg) in " ".join(check.split("PVS")[1].split("LVS")[0].split()), (before, check)
    sizes = {}
    for name, uuid, size in re.findall(r"^\s*(\S+)\s+(\S+-\S+)\s+<?([\d.]+)m\s*$", before, re.M):
        new = re.search(rf"^\s*{re.escape(name)}\s+{re.escape(uuid)}\s+<?([\d.]+)m\s*$", check.split("LVS")[1], re.M)
        assert new, (name, uuid, check)  # the LV kept its name and UUID
        sizes[name] = (float(size), float(new.group(1)))
    assert set(sizes) == {"root", "swap_1", "home"}, before
    assert sum(n for _, n in sizes.values()) < sum(o for o, _ in sizes.values()), sizes  # fitted: smaller
    blkid = check.split("BLKID")[1].split("FILES")[0]
    for label in ("root", "home", "swap", "boot"):
        assert f"LABEL={label}" in blkid, blkid
    old_uuids = set(re.findall(r"^UUID=(\S+)", before, re.M))
    assert old_uuids and old_uuids <= set(re.findall(r"^UUID=(\S+)", blkid, re.M)), (before, blkid)
    files = check.split("FILES")[1]
    assert "fitted" in files and "kernel" in files and "photo.jpg: OK" in files, check
