"""A machine on md RAID1 restored onto one new disk inside the rescue VM, with its old array
members still attached (issue 17).

The host kernel has no md: the machine is built inside a booted rescue system on two spare
virtio disks (a GPT with two partitions each; md0 RAID1 for /boot as ext2, md1 RAID1 with an
internal bitmap for / as ext4; fstab naming their UUIDs) and captured there with
`rescue capture --disk /dev/vdb --root` (its first disk, as a person restoring from one disk
would name it). The files come back to the host as a tar on a raw disk; the host puts the
capture and a plain tree of the machine (a whole-machine source, issue 21) on the backup
partition. The second boot runs the real `rescue restore --source-disk /dev/vdb` onto a
blank disk while both old members are attached, with the same array UUIDs on them. Passes
when:
- each array is made again on the new disk with the captured UUID, name, metadata and data
  offset, degraded (one of two members) as the plan said, and stopped at the end;
- the filesystems on them have their UUIDs and labels, and hold the tree's files;
- the old members' checksums are unchanged (nothing was assembled or written on them).
Two rescue boots (2-5 minutes under TCG).
"""

from __future__ import annotations

import json
import re
import tarfile
from pathlib import Path

import pytest

from rescue.devices import attached, make_image_file, partition_path
from rescue.image.build import sha256_file
from rescue.qemu import Firmware
from rescue.run import run
from test_lvm_md_capture import RAID_GUID, _backup_disk
from test_security_rescue import ShellVM, boot_shell

MiB = 1 << 20

BUILD = f"""set -e
for d in /dev/vdb /dev/vdc; do printf 'label: gpt\\n,96M,{RAID_GUID}\\n,,{RAID_GUID}\\n' | sfdisk -q $d; done
udevadm settle
mdadm --create /dev/md0 --run --level=1 --raid-devices=2 --metadata=1.2 --name=mdtest:0 /dev/vdb1 /dev/vdc1
mdadm --create /dev/md1 --run --level=1 --raid-devices=2 --metadata=1.2 --bitmap=internal \
  --name=mdtest:1 /dev/vdb2 /dev/vdc2
mkfs.ext2 -q -L mdboot /dev/md0
mkfs.ext4 -q -L mdroot /dev/md1
mkdir -p /mnt/t && mount /dev/md1 /mnt/t && mkdir -p /mnt/t/boot /mnt/t/etc && mount /dev/md0 /mnt/t/boot
echo "UUID=$(blkid -s UUID -o value /dev/md1) / ext4 defaults 0 1" > /mnt/t/etc/fstab
echo "UUID=$(blkid -s UUID -o value /dev/md0) /boot ext2 defaults 0 2" >> /mnt/t/etc/fstab
echo BUILT-OK
"""

TEARDOWN = "umount /mnt/t/boot /mnt/t; mdadm --stop /dev/md0; mdadm --stop /dev/md1; sync; echo DOWN-OK"

FILES = {"etc/hostname": "mdtest\n", "etc/motd": "restored from md\n", "boot/config-demo": "CONFIG_MD=y\n",
         "srv/data/big.bin": "x" * 300_000}


def _put_machine(disk: Path, cap: dict[str, bytes], tmp: Path) -> None:
    """The capture and a plain tree of the machine onto the backup partition (partition 4)."""
    mnt = tmp / "mnt-backup"
    mnt.mkdir()
    with attached(disk) as dev:
        run(["mount", partition_path(dev, 4), str(mnt)])
        try:
            box = mnt / "mdtest"
            for name, data in cap.items():
                (box / "rescue").mkdir(parents=True, exist_ok=True)
                (box / "rescue" / name).write_bytes(data)
            tree = box / "tree"
            for rel, text in FILES.items():
                (tree / rel).parent.mkdir(parents=True, exist_ok=True)
                (tree / rel).write_text(text)
            (tree / "etc" / "fstab").write_bytes(cap["fstab"])
            for rel in ("tmp", "proc", "sys", "dev", "run", "usr/bin"):
                (tree / rel).mkdir(parents=True)
            (mnt / "rescue" / "boot.cfg").write_text("set default=shell\nset timeout=1\n")
        finally:
            run(["umount", str(mnt)])


@pytest.mark.slow
def test_a_raid1_machine_restored_onto_one_disk_beside_its_old_members(rescue_image, tmp_path):
    disk = _backup_disk(rescue_image, tmp_path)
    spares = [make_image_file(tmp_path / f"old{i}.img", 256 * MiB) for i in (1, 2)]
    out = make_image_file(tmp_path / "out.img", 16 * MiB)

    with ShellVM([disk, *spares, out], tmp_path, firmware=Firmware.BIOS, name="mdbuild") as vm:
        boot_shell(vm)
        built = vm.ask(f"( {BUILD} ) 2>&1", timeout=300)
        assert "BUILT-OK" in built, built
        cap = vm.ask("rescue capture --out /run/cap --disk /dev/vdb --root /mnt/t --client mdtest > /run/cap.log 2>&1;"
                     " echo CAP=$?; tail -n 20 /run/cap.log; tar -C /run -cf /dev/vdd cap; sync; echo TAR=$?",
                     timeout=300)
        assert "CAP=0" in cap and "TAR=0" in cap, cap
        down = vm.ask(TEARDOWN, timeout=120)
        assert "DOWN-OK" in down, down
        vm.type("poweroff")
        vm.wait_exit(180)

    with tarfile.open(out) as tar:
        files = {Path(m.name).name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    layout = json.loads(files["layout.json"])
    arrays = {a["device"]: a for a in layout["layers"]["md"]}
    assert set(arrays) == {"/dev/md0", "/dev/md1"}, arrays
    by_label = {fs["label"]: fs for fs in layout["filesystems"] if fs.get("label")}
    _put_machine(disk, files, tmp_path)

    sums = [sha256_file(s) for s in spares]
    target = make_image_file(tmp_path / "new.img", 512 * MiB)
    with ShellVM([disk, *spares, target], tmp_path, firmware=Firmware.BIOS, name="mdrestore") as vm:
        boot_shell(vm)
        restored = vm.ask(
            "rescue restore --tree /backup/mdtest/tree --client mdtest --source-disk /dev/vdb --target /dev/vdd "
            "--bootloader skip --state-dir /run/rescue-state --yes > /run/restore.log 2>&1; echo RC=$?; "
            "tail -n 60 /run/restore.log", timeout=900)
        check = vm.ask(
            "echo MDSTAT; cat /proc/mdstat; "
            "for p in /dev/vdd1 /dev/vdd2; do echo EXAMINE $p; mdadm --examine $p; done; "
            "mdadm --assemble /dev/md0 --run /dev/vdd1 >/dev/null 2>&1; mdadm --assemble /dev/md1 --run /dev/vdd2 "
            ">/dev/null 2>&1; echo BLKID; blkid -o export /dev/md0 /dev/md1; "
            "mkdir -p /mnt/r && mount -o ro /dev/md1 /mnt/r && mount -o ro /dev/md0 /mnt/r/boot && "
            "echo FILES && cat /mnt/r/etc/motd /mnt/r/boot/config-demo && wc -c < /mnt/r/srv/data/big.bin; "
            "umount /mnt/r/boot /mnt/r; mdadm --stop /dev/md0 /dev/md1 >/dev/null 2>&1; echo CHECK-END",
            timeout=300)
        vm.type("poweroff")
        vm.wait_exit(180)

    assert "RC=0" in restored, restored
    assert "degraded, 1 of 2" in restored, restored  # said in the plan the person confirmed
    mdstat = check.split("MDSTAT")[1].split("EXAMINE")[0]
    assert not re.search(r"^md\d+\s*:", mdstat, re.M), check  # stopped at the end, old ones never assembled
    for part, array in (("/dev/vdd1", arrays["/dev/md0"]), ("/dev/vdd2", arrays["/dev/md1"])):
        examine = check.split(f"EXAMINE {part}")[1].split("EXAMINE")[0].split("BLKID")[0]
        assert f"Array UUID : {array['uuid']}" in examine, examine
        assert f"Name : {array['name']}" in examine, examine
        assert f"Data Offset : {array['data_offset']} sectors" in examine, examine
        assert "Raid Devices : 2" in examine, examine
    assert "Internal Bitmap" in check.split("EXAMINE /dev/vdd2")[1], check
    blkid = check.split("BLKID")[1].split("FILES")[0]
    for label in ("mdboot", "mdroot"):
        assert f"UUID={by_label[label]['uuid']}" in blkid and f"LABEL={label}" in blkid, blkid
    shown = check.split("FILES")[1]
    assert "restored from md" in shown and "CONFIG_MD=y" in shown and "300000" in shown, check
    assert [sha256_file(s) for s in spares] == sums, "the restore changed the old array members"
