"""btrfs twins on the rescue system's own kernel (Debian 12, 6.1), inside the booted backup disk.

The build machine's kernel (6.18) gives a cloned btrfs a temporary fsid
(since 6.7), so the twin facts measured on the host do not hold for the
kernel a disaster is restored with. Here the rescue system boots with three
disks: the backup disk (vda), a blank new disk (vdb) and the machine's old
disk (vdc) whose /home is a btrfs with the very UUID the captured layout
records. The old /home is mounted (read-only, so its bytes can be compared)
while `rescue restore` restores onto vdb. Then:

- the restore finishes and its verify step passes (exit 0), or refuses
  naming the twin; it never writes the old disk (sha256 of its image file on
  the host, before and after);
- the old /home is still what is mounted at its place (device numbers);
- when btrfs refused the captured UUID, the report says so and fstab was
  rewritten for the new UUID.
Then an exact twin (vdc2 copied onto vdb2) is mounted while the old /home is
still mounted: plain `mount`, then the engine's MountFilesystem step, which
must prove the device it got or refuse. Everything the 6.1 kernel did is
printed (TWIN-FACT lines) for the issue's note.
"""

from __future__ import annotations

import os
import re
import time

import pytest

from rescue.demo import DemoMachine, make_bank
from rescue.devices import attached, make_image_file, partition_path
from rescue.qemu import Firmware
from rescue.image.build import sha256_file
from rescue.run import run
from test_faults_unplug import squeeze
from test_security_rescue import ShellVM, boot_shell

GiB = 1 << 30
STATE = "/run/rescue-state/dev_disk_by-id_virtio-rescue-d1"

# Run inside the guest from the (read-only) backup partition: the engine's own mount step
# on a twin, with the rescue system's kernel.
PROBE = '''\
import sys
from pathlib import Path
from rescue.errors import UnsafeTarget
from rescue.run import run
from rescue.steps import MountFilesystem


class Ctx:
    root = Path("/run/twin-root")

    def run(self, argv, **kw):
        return run(argv, **kw)


Ctx.root.mkdir(exist_ok=True)
try:
    MountFilesystem(device=sys.argv[1], mountpoint="/", fstype="btrfs").run(Ctx())
except UnsafeTarget as e:
    print("TWIN-STEP refused:", str(e).replace("\\n", " | "))
except Exception as e:
    print("TWIN-STEP failed without a refusal:", repr(e).replace("\\n", " | "))
else:
    print("TWIN-STEP mounted and proved", sys.argv[1])
    run(["umount", str(Ctx.root)])
'''




def has(text: str, part: str) -> bool:
    """`part` is in `text`, characters the serial log doubled aside (see squeeze)."""
    return squeeze(part) in squeeze(text)


def members(show: str) -> list[str]:
    """The member devices in `btrfs filesystem show` output."""
    return re.findall(r"\bpath\s+(\S+)", show)


def fact(vm: ShellVM, what: str, command: str) -> str:
    out = vm.ask(command).strip()
    print(f"TWIN-FACT {what}:\n" + "\n".join("    " + ln for ln in out.splitlines()), flush=True)
    return out


@pytest.mark.slow
def test_btrfs_twin_mounted_on_the_rescue_kernel(backup_disk, tmp_path):
    disk = backup_disk("twins.img")
    with DemoMachine(tmp_path / "machine", size=GiB, home_fs="btrfs") as m:
        bank = make_bank(m, tmp_path / "bank", images=("2026-1126-0300",))
        home = m.partition("/home")
        m.detach_keep_image()
    old = m.image
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with attached(disk) as dev:
        run(["mount", partition_path(dev, 4), str(mnt)])
        try:
            for vault in os.listdir(bank.bank):
                run(["cp", "-a", str(bank.bank / vault), str(mnt / "dirvish" / vault)])
            (mnt / "rescue").mkdir(exist_ok=True)
            (mnt / "rescue" / "boot.cfg").write_text("set default=shell\nset timeout=1\n")
            (mnt / "twin_probe.py").write_text(PROBE)
        finally:
            run(["umount", str(mnt)])
    run(["btrfs", "device", "scan", "--forget"], check=False)  # the host forgets the old disk's loop
    before = sha256_file(old)
    target = make_image_file(tmp_path / "target.img", GiB)
    n = home.number

    with ShellVM([disk, target, old], tmp_path, firmware=Firmware.BIOS, name="twins") as vm:
        boot_shell(vm)
        kernel = fact(vm, "kernel", "uname -r; btrfs --version")
        assert kernel.startswith("6.1."), kernel
        fact(vm, "old /home as blkid sees it", f"blkid /dev/vdc{n}")
        mounted = fact(vm, "old /home mounted read-only",
                       f"mkdir -p /mnt/old-home && mount -o ro /dev/vdc{n} /mnt/old-home; "
                       "findmnt -no SOURCE,MAJ:MIN,OPTIONS /mnt/old-home; btrfs filesystem show /mnt/old-home")
        # btrfs shows an anonymous device number in mountinfo: its members say which disk it is
        assert members(mounted) == [f"/dev/vdc{n}"] and mounted.startswith(f"/dev/vdc{n}"), mounted

        start = len(vm.console().replace("\r", ""))
        vm.type(f"rescue restore --bank /backup/dirvish --client {bank.client} --target /dev/vdb --yes "
                f"--state-dir /run/rescue-state; echo RESTORE-EXIT=$?")
        code = int(vm.wait_for_pattern(r"RESTORE-EXIT=(\d+)", 1800, since=start).group(1))
        time.sleep(1)
        said = vm.console().replace("\r", "")[start:]
        print(f"TWIN-FACT restore exit: {code}")
        fact(vm, "restore log: btrfs and UUID lines",
                   f"grep -h -A3 -e mkfs.btrfs -e 'device scan' -e 'UUID changed' -e 'refused UUID' "
                   f"-e 'rewrote' {STATE}/restore-*.log | cut -c1-220")
        after = fact(vm, "after the restore",
                     f"blkid /dev/vdb{n} /dev/vdc{n}; findmnt -no SOURCE,MAJ:MIN /mnt/old-home; "
                     "btrfs filesystem show; dmesg | grep -i btrfs | tail -n 15")
        assert "Traceback" not in said, said[-4000:]
        new_uuid = re.search(rf'/dev/vdb{n}:.*? UUID="([^"]+)"', after)
        assert new_uuid, after
        if code == 0:
            assert "verify" in said and has(said, "result: OK"), said[-4000:]
            if new_uuid.group(1) != home.uuid:  # btrfs refused the captured UUID: said so, fstab follows
                assert has(said, f"UUID changed from {home.uuid} to {new_uuid.group(1)}"), said[-4000:]
                assert has(said, f"rewrote /etc/fstab: UUID {home.uuid} -> {new_uuid.group(1)}"), said[-4000:]
                fstab = fact(vm, "restored fstab", "mkdir -p /mnt/new-root && mount -o ro /dev/vdb1 /mnt/new-root "
                                                   "&& grep -v '^#' /mnt/new-root/etc/fstab; umount /mnt/new-root")
                assert f"UUID={new_uuid.group(1)}" in fstab and home.uuid not in fstab, fstab
        else:
            assert code in (3, 4, 6) and "same" in said and ("UUID" in said or "filesystem" in said), said[-4000:]
        still = fact(vm, "old /home after the restore", "findmnt -no SOURCE /mnt/old-home; "
                                                          "btrfs filesystem show /mnt/old-home")
        assert members(still) == [f"/dev/vdc{n}"] and still.startswith(f"/dev/vdc{n}"), still

        # An exact twin while the old /home is mounted: what the 6.1 kernel mounts, and the engine's proof.
        fact(vm, "exact twin made", f"dd if=/dev/vdc{n} of=/dev/vdb{n} bs=4M conv=fsync status=none; "
                                    f"blkid /dev/vdb{n}")
        plain = fact(vm, "plain mount of the twin",
                     f"mkdir -p /mnt/twin; mount /dev/vdb{n} /mnt/twin; echo mount-exit=$?; "
                     "findmnt -no SOURCE,MAJ:MIN /mnt/twin; btrfs filesystem show /mnt/twin; "
                     "umount /mnt/twin; dmesg | grep -i btrfs | tail -n 5")
        print(f"TWIN-FACT plain mount summary: {' / '.join(plain.splitlines()[:3])}")
        step = fact(vm, "engine mount step on the twin", f"python3 /backup/twin_probe.py /dev/vdb{n} 2>&1 | tail -n 5")
        assert "TWIN-STEP" in step and "Traceback" not in step, step
        # mounted and proved (then it really is the new device), or refused naming the twin
        assert has(step, "mounted and proved") or has(step, "TWIN-STEP refused:") and (
            has(step, f"mounting /dev/vdb{n} did not give /dev/vdb{n}")
            or has(step, "a btrfs with the same UUID is mounted from another disk")), step
        vm.type("umount /mnt/old-home; poweroff")
        vm.wait_exit(300)

    assert sha256_file(old) == before, "the old disk was written"
