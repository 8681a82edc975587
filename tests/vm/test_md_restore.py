"""A server on md RAID1 and LVM restored onto one new disk inside the rescue VM, with its old
disks still attached (issue 17).

The host kernel has neither md nor device-mapper: the machine is built inside a booted rescue
system on two spare virtio disks (GPT, three partitions each): md0 RAID1 for /boot (ext2);
md1 RAID1 with an internal bitmap, a PV of volume group vgmd holding root (ext4, /); the
first disk's third partition a LUKS2 container (issue 18: a label, crypttab naming it
vdb3_crypt) whose opened device is the PV of vgdata holding srv (ext4, /srv), swap, and a thin
pool with a thin LV (ext4, /var/lib/vm); fstab
naming the UUIDs. It is captured there with `rescue capture --disk /dev/vdb --root` (the
disk a person restoring one disk would name). The capture comes back to the host as a tar on
a raw disk; the host puts it and a plain tree of the machine (a whole-machine source, issue
21) on the backup partition. The second boot runs the real `rescue restore --source-disk
/dev/vdb --luks-key vdb3_crypt=FILE` onto a blank disk while both old disks are attached: the
same array UUIDs, and the old vdb3 is a LUKS container with the very LUKS UUID (and, inside, the
PV and VG UUIDs) the restore makes again. Passes when:
- each array is made again with the captured UUID, name, metadata and data offset, degraded
  (one of two members) as the plan said, and stopped at the end;
- the LUKS container is its kept header written back: its UUID, label and keyslot, opened by
  the old passphrase (the keyfile on the backup partition), and closed at the end;
- each PV, VG and LV has its captured UUID (vgcfgrestore), the thin pool and its thin LV are made
  again by lvcreate (new LV UUIDs, the filesystem's kept), the VGs are deactivated at the end;
- the filesystems and the swap have their UUIDs and labels, and hold the tree's files; the
  machine's LVM devices file, which named the PVs by the old disk's ids, names the new ones;
- the old disks' checksums are unchanged (nothing was assembled, activated or written there);
- a second restore onto the same disk (its arrays and PVs already carry those UUIDs) succeeds,
  and the checks above are made after it; it is asked for a new LUKS master key
  (--luks-new-key, the keyfile's passphrase the new one): luksFormat keeps the UUID and label,
  with one keyslot and another master key digest than the captured header's; a restore cut
  off while copying (kill -9) after a "reboot" (processes gone, arrays stopped, container
  closed, VGs inactive) resumes, its finished steps found done by the UUIDs the partitions
  under the arrays, the container and the LVs carry;
- the whole machine (captured with both disks) restored onto two new disks in one restore
  (`--target OLD=NEW` twice): each array made once from both new members, whole (two of two,
  no resync needed), the volume groups on their PVs, all stopped at the end.
Two rescue boots (4-7 minutes under TCG).
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
LVM_GUID = "E6D6D379-F507-44C2-A23C-238F2A3DF928"
PASSPHRASE = "md-luks-old-passphrase"  # the test's own: typed on its console to build the machine

BUILD = f"""set -e
for d in /dev/vdb /dev/vdc; do printf 'label: gpt\\n,40M,{RAID_GUID}\\n,120M,{RAID_GUID}\\n,,{LVM_GUID}\\n' | sfdisk -q $d; done
udevadm settle
mdadm --create /dev/md0 --run --level=1 --raid-devices=2 --metadata=1.2 --name=mdtest:0 /dev/vdb1 /dev/vdc1
mdadm --create /dev/md1 --run --level=1 --raid-devices=2 --metadata=1.2 --bitmap=internal \
  --name=mdtest:1 /dev/vdb2 /dev/vdc2
pvcreate -q /dev/md1 && vgcreate -q vgmd /dev/md1 && lvcreate -q -y -L 96M -n root vgmd
printf %s {PASSPHRASE} | cryptsetup luksFormat --batch-mode --type luks2 --pbkdf pbkdf2 \
  --pbkdf-force-iterations 1000 --label mdcrypt --key-file=- /dev/vdb3
printf %s {PASSPHRASE} | cryptsetup open --key-file=- /dev/vdb3 vdb3_crypt
pvcreate -q /dev/mapper/vdb3_crypt && vgcreate -q vgdata /dev/mapper/vdb3_crypt
lvcreate -q -y -L 32M -n srv vgdata && lvcreate -q -y -L 16M -n swap vgdata
lvcreate -q -y --type thin-pool -L 16M --chunksize 128k -n pool vgdata
lvcreate -q -y -V 48M --thin -n vm vgdata/pool
mkfs.ext2 -q -L mdboot /dev/md0
mkfs.ext4 -q -L lvroot /dev/vgmd/root
mkfs.ext4 -q -L lvsrv /dev/vgdata/srv
mkswap -L lvswap /dev/vgdata/swap > /dev/null
mkfs.ext4 -q -L lvthin /dev/vgdata/vm
mkdir -p /mnt/t && mount /dev/vgmd/root /mnt/t && mkdir -p /mnt/t/boot /mnt/t/etc /mnt/t/srv
mount /dev/md0 /mnt/t/boot && mount /dev/vgdata/srv /mnt/t/srv
mkdir -p /mnt/t/var/lib/vm && mount /dev/vgdata/vm /mnt/t/var/lib/vm
echo "UUID=$(blkid -s UUID -o value /dev/vgmd/root) / ext4 defaults 0 1" >> /mnt/t/etc/fstab
echo "UUID=$(blkid -s UUID -o value /dev/md0) /boot ext2 defaults 0 2" >> /mnt/t/etc/fstab
echo "UUID=$(blkid -s UUID -o value /dev/vgdata/srv) /srv ext4 defaults 0 2" >> /mnt/t/etc/fstab
echo "UUID=$(blkid -s UUID -o value /dev/vgdata/vm) /var/lib/vm ext4 defaults 0 2" >> /mnt/t/etc/fstab
echo "UUID=$(blkid -s UUID -o value /dev/vgdata/swap) none swap sw 0 0" >> /mnt/t/etc/fstab
echo "vdb3_crypt UUID=$(cryptsetup luksUUID /dev/vdb3) none luks" > /mnt/t/etc/crypttab
swapon /dev/vgdata/swap
echo BUILT-OK
"""

TEARDOWN = ("swapoff /dev/vgdata/swap; umount /mnt/t/var/lib/vm /mnt/t/srv /mnt/t/boot /mnt/t; "
            "vgchange -q -an vgmd vgdata; cryptsetup close vdb3_crypt; "
            "mdadm --stop /dev/md0; mdadm --stop /dev/md1; sync; echo DOWN-OK")

FILES = {"etc/hostname": "mdtest\n", "etc/motd": "restored from md\n", "boot/config-demo": "CONFIG_MD=y\n",
         "srv/data/big.bin": "x" * 300_000, "var/lib/vm/guest.img": "a thin volume's file\n",
         "opt/slow.bin": "s" * (40 << 20)}  # the copy takes a few seconds: time to cut it off

RESTORE = ("rescue restore --tree /backup/mdtest/tree --client mdtest --source-disk /dev/vdb --target /dev/vdd "
           "--bootloader skip --state-dir /run/rescue-state --luks-key vdb3_crypt=/backup/mdtest/vdb3.key --yes")

# A restore cut off while copying, then the machine "rebooted": every process gone, nothing mounted,
# no array assembled, no VG active. The rerun must resume (its arrays and LVs found by their
# partitions' UUIDs), not start over.
CUT = f"""{RESTORE} > /run/cut.log 2>&1 & pid=$!
for i in $(seq 1200); do grep -q '] copy ' /run/cut.log && break; sleep 0.1; done
kill -9 $pid
for i in $(seq 50); do pgrep -x cp >/dev/null || pgrep -x xargs >/dev/null || pgrep -x rsync >/dev/null || break
  pkill -9 -x xargs; pkill -9 -x cp; pkill -9 -x rsync; sleep 0.2; done
for i in $(seq 20); do m=$(findmnt -rn -o TARGET | grep '^/run/rescue/target-' | sort -r); [ -z "$m" ] && break
  for t in $m; do umount "$t"; done; sleep 0.2; done
echo CUT-MOUNTS; findmnt -rn -o TARGET,SOURCE | grep -E "/dev/md|/dev/mapper|/dev/dm"; ps -eo pid,stat,comm | grep -E " (cp|xargs|rsync)$"
swapoff -a; vgchange --devices=/dev/md1,/dev/mapper/vdb3_crypt -an vgmd vgdata >/dev/null
cryptsetup close vdb3_crypt; mdadm --stop /dev/md0 /dev/md1
echo CUT-MDSTAT; cat /proc/mdstat; echo CUT-LOG; tail -n 3 /run/cut.log
{RESTORE} > /run/resumed.log 2>&1; echo RC=$?; grep -m 1 'steps (' /run/resumed.log; grep -c 'done already' /run/resumed.log"""


def _put_machine(disk: Path, cap: dict[str, bytes], tmp: Path, client: str = "mdtest") -> None:
    """The capture and a plain tree of the machine onto the backup partition (partition 4)."""
    mnt = tmp / f"mnt-backup-{client}"
    mnt.mkdir()
    with attached(disk) as dev:
        run(["mount", partition_path(dev, 4), str(mnt)])
        try:
            box = mnt / client
            for name, data in cap.items():
                (box / "rescue").mkdir(parents=True, exist_ok=True)
                (box / "rescue" / name).write_bytes(data)
            tree = box / "tree"
            for rel, text in FILES.items():
                (tree / rel).parent.mkdir(parents=True, exist_ok=True)
                (tree / rel).write_text(text)
            (tree / "etc" / "fstab").write_bytes(cap["fstab"])
            key = box / "vdb3.key"  # the keyfile the unattended config or --luks-key names
            key.write_text(PASSPHRASE)
            key.chmod(0o600)
            # an LVM devices file as the machine's vgimportdevices wrote it: the PVs by the old disk's ids
            pvs = [pv for vg in json.loads(cap["layout.json"])["layers"]["vgs"] for pv in vg["pvs"]]
            devices = tree / "etc" / "lvm" / "devices" / "system.devices"
            devices.parent.mkdir(parents=True)
            devices.write_text("VERSION=1.1.1\n" + "".join(
                f"IDTYPE=sys_wwid IDNAME=naa.old{n} DEVNAME={pv['device']} PVID={pv['uuid'].replace('-', '')}\n"
                for n, pv in enumerate(pvs)))
            for rel in ("tmp", "proc", "sys", "dev", "run", "usr/bin"):
                (tree / rel).mkdir(parents=True)
            (mnt / "rescue").mkdir(exist_ok=True)
            (mnt / "rescue" / "boot.cfg").write_text("set default=shell\nset timeout=1\n")
        finally:
            run(["umount", str(mnt)])


@pytest.mark.slow
def test_a_raid1_machine_restored_onto_one_disk_beside_its_old_members(rescue_image, tmp_path):
    disk = _backup_disk(rescue_image, tmp_path)
    spares = [make_image_file(tmp_path / f"old{i}.img", 256 * MiB) for i in (1, 2)]
    out = make_image_file(tmp_path / "out.img", 64 * MiB)  # the capture holds a 16 MiB LUKS2 header

    with ShellVM([disk, *spares, out], tmp_path, firmware=Firmware.BIOS, name="mdbuild") as vm:
        boot_shell(vm)
        built = vm.ask(f"( {BUILD} ) 2>&1", timeout=300)
        assert "BUILT-OK" in built, built
        cap = vm.ask("rescue capture --out /run/cap --disk /dev/vdb --root /mnt/t --client mdtest > /run/cap.log 2>&1;"
                     " echo CAP=$?; tail -n 20 /run/cap.log;"
                     # the whole machine too, both disks: restored onto two new disks below
                     " rescue capture --out /run/cap2 --disk /dev/vdb --disk /dev/vdc --root /mnt/t --client mdtwo"
                     " > /run/cap2.log 2>&1; echo CAP2=$?; tail -n 20 /run/cap2.log;"
                     " tar -C /run -cf /dev/vdd cap cap2; sync; echo TAR=$?",
                     timeout=300)
        assert "CAP=0" in cap and "CAP2=0" in cap and "TAR=0" in cap, cap
        down = vm.ask(TEARDOWN, timeout=120)
        assert "DOWN-OK" in down, down
        vm.type("poweroff")
        vm.wait_exit(180)

    with tarfile.open(out) as tar:
        captured = [(Path(m.name), tar.extractfile(m).read()) for m in tar.getmembers() if m.isfile()]
    files = {p.name: data for p, data in captured if p.parts[0] == "cap"}
    both = {p.name: data for p, data in captured if p.parts[0] == "cap2"}
    layout = json.loads(files["layout.json"])
    arrays = {a["device"]: a for a in layout["layers"]["md"]}
    assert set(arrays) == {"/dev/md0", "/dev/md1"}, arrays
    assert {vg["name"] for vg in layout["layers"]["vgs"]} == {"vgmd", "vgdata"}, layout["layers"]
    by_label = {fs["label"]: fs for fs in layout["filesystems"] if fs.get("label")}
    _put_machine(disk, files, tmp_path)
    _put_machine(disk, both, tmp_path, client="mdtwo")

    sums = [sha256_file(s) for s in spares]
    target = make_image_file(tmp_path / "new.img", 512 * MiB)
    pair = [make_image_file(tmp_path / f"pair{i}.img", 384 * MiB) for i in (1, 2)]
    with ShellVM([disk, *spares, target, *pair], tmp_path, firmware=Firmware.BIOS, name="mdrestore") as vm:
        boot_shell(vm)
        restored = vm.ask(
            "rescue restore --tree /backup/mdtest/tree --client mdtest --source-disk /dev/vdb --target /dev/vdd "
            "--bootloader skip --state-dir /run/rescue-state --luks-key vdb3_crypt=/backup/mdtest/vdb3.key "
            "--yes > /run/restore.log 2>&1; echo RC=$?; "
            "tail -n 60 /run/restore.log", timeout=900)
        cut = vm.ask(CUT, timeout=900)
        # a second run onto the same disk: its arrays and PVs carry the very UUIDs it makes; a new LUKS master key
        again = vm.ask(
            "rescue restore --tree /backup/mdtest/tree --client mdtest --source-disk /dev/vdb --target /dev/vdd "
            "--bootloader skip --state-dir /run/rescue-state --luks-key vdb3_crypt=/backup/mdtest/vdb3.key "
            "--luks-new-key --yes > /run/again.log 2>&1; echo RC=$?; "
            "grep -o 'with a new master key' /run/again.log | head -n 1; tail -n 30 /run/again.log", timeout=900)
        check = vm.ask(
            "echo MDSTAT; cat /proc/mdstat; echo DMSETUP; dmsetup ls; "
            "for p in /dev/vdd1 /dev/vdd2; do echo EXAMINE $p; mdadm --examine $p; done; "
            "mdadm --assemble /dev/md0 --run /dev/vdd1 >/dev/null 2>&1; mdadm --assemble /dev/md1 --run /dev/vdd2 "
            ">/dev/null 2>&1; echo LUKS; cryptsetup luksUUID /dev/vdd3; cryptsetup luksDump /dev/vdd3 | grep -E "
            "'^Label|: luks2$|Digest:'; grep -c md-luks-old /run/restore.log /run/again.log /run/rescue-state/*/*; "
            f"printf %s {PASSPHRASE} | cryptsetup open --key-file=- /dev/vdd3 vdb3_crypt; udevadm settle; "
            "echo PVS; pvs --devices=/dev/md1,/dev/mapper/vdb3_crypt --noheadings -o pv_name,pv_uuid,vg_name,vg_uuid; "
            "echo LVS; lvs --devices=/dev/md1,/dev/mapper/vdb3_crypt --noheadings -o vg_name,lv_name,lv_uuid,segtype; "
            "vgchange --devices=/dev/md1 -ay vgmd >/dev/null; vgchange --devices=/dev/mapper/vdb3_crypt -ay vgdata >/dev/null; "
            "udevadm settle; echo BLKID; blkid -o export /dev/md0 /dev/mapper/vgmd-root /dev/mapper/vgdata-srv "
            "/dev/mapper/vgdata-swap /dev/mapper/vgdata-vm; "
            "mkdir -p /mnt/r && mount -o ro /dev/mapper/vgmd-root /mnt/r && mount -o ro /dev/md0 /mnt/r/boot && "
            "mount -o ro /dev/mapper/vgdata-srv /mnt/r/srv && mount -o ro /dev/mapper/vgdata-vm /mnt/r/var/lib/vm && "
            "echo FILES && cat /mnt/r/etc/motd /mnt/r/boot/config-demo /mnt/r/var/lib/vm/guest.img "
            "/mnt/r/etc/lvm/devices/system.devices"
            " && wc -c < /mnt/r/srv/data/big.bin && echo SLOW $(wc -c < /mnt/r/opt/slow.bin); umount /mnt/r/var/lib/vm /mnt/r/srv /mnt/r/boot /mnt/r; "
            "vgchange --devices=/dev/md1,/dev/mapper/vdb3_crypt -an vgmd vgdata >/dev/null; cryptsetup close vdb3_crypt; "
            "mdadm --stop /dev/md0 /dev/md1 >/dev/null 2>&1; echo CHECK-END",
            timeout=300)
        # the whole machine onto two new disks: each array whole again (both members), made once
        two = vm.ask(
            "rescue restore --tree /backup/mdtwo/tree --client mdtwo --target /dev/vdb=/dev/vde "
            "--target /dev/vdc=/dev/vdf --bootloader skip --state-dir /run/rescue-two "
            "--luks-key vdb3_crypt=/backup/mdtwo/vdb3.key --yes > /run/two.log 2>&1; "
            "echo RC=$?; tail -n 40 /run/two.log; echo MDSTAT2; cat /proc/mdstat; "
            # two short words per member: a long --examine listing on the serial line is where a byte got doubled once
            "for p in /dev/vde1 /dev/vdf1 /dev/vde2 /dev/vdf2; do echo EXAMINE $p $(mdadm --examine $p | "
            "sed -n 's/^ *Array UUID : /uuid=/p; s/^ *Array State : \\([A.R]*\\) .*/state=\\1/p'); done; "
            "mdadm --assemble /dev/md1 --run /dev/vde2 /dev/vdf2 >/dev/null 2>&1; echo ASSEMBLED; cat /proc/mdstat; "
            f"printf %s {PASSPHRASE} | cryptsetup open --key-file=- /dev/vde3 vdb3_crypt; udevadm settle; "
            "echo PVS2; pvs --devices=/dev/md1,/dev/mapper/vdb3_crypt --noheadings -o pv_name,vg_name; "
            "cryptsetup close vdb3_crypt; mdadm --stop /dev/md1 >/dev/null 2>&1; echo TWO-END", timeout=900)
        vm.type("poweroff")
        vm.wait_exit(180)

    assert "RC=0" in two, two
    assert "degraded" not in two.split("MDSTAT2")[0], two  # both members of every mirror were restored
    assert not re.search(r"^md\d+\s*:", two.split("MDSTAT2")[1].split("EXAMINE")[0], re.M), two  # stopped at the end
    for part in ("/dev/vde1", "/dev/vdf1", "/dev/vde2", "/dev/vdf2"):
        array = arrays["/dev/md0" if part.endswith("1") else "/dev/md1"]
        examine = two.split(f"EXAMINE {part}")[1].splitlines()[0]
        assert f"uuid={array['uuid']}" in examine, examine
        assert "state=AA" in examine.split(), examine  # whole: two of two
    assert re.search(r"md1 : active (\(auto-read-only\) )?raid1 vd[ef]2\S* vd[ef]2", two.split("ASSEMBLED")[1]), two
    assert "[2/2] [UU]" in two.split("ASSEMBLED")[1].split("PVS2")[0], two
    assert re.search(r"/dev/md1\s+vgmd", two) and re.search(r"/dev/mapper/vdb3_crypt\s+vgdata", two), two

    assert "RC=0" in restored, restored
    assert "RC=0" in again, again
    assert not re.search(r"^md\d+\s*:", cut.split("CUT-MDSTAT")[1].split("CUT-LOG")[0], re.M), cut  # "rebooted"
    assert "RC=0" in cut and "(resuming an earlier run)" in cut, cut
    assert int(cut.strip().splitlines()[-1]) >= 7, cut  # wipe, table, every mkfs and mkswap: not made again
    assert "degraded, 1 of 2" in restored, restored  # said in the plan the person confirmed
    mdstat = check.split("MDSTAT")[1].split("DMSETUP")[0]
    assert not re.search(r"^md\d+\s*:", mdstat, re.M), check  # stopped at the end, old ones never assembled
    assert "No devices found" in check.split("DMSETUP")[1].split("EXAMINE")[0], check  # VGs off, LUKS closed
    (luks,) = layout["layers"]["luks"]
    assert luks["device"] == "/dev/vdb3" and luks["version"] == 2, luks
    assert luks["crypttab"].startswith("vdb3_crypt UUID="), luks
    shown_luks = check.split("LUKS")[1].split("PVS")[0]
    assert luks["uuid"] in shown_luks and "mdcrypt" in shown_luks, shown_luks  # the kept header, written back
    assert shown_luks.count(": luks2") == len(luks["keyslots"]) == 1, shown_luks
    # the passphrase is in no log, journal, plan.json or report of either run
    assert all(line.endswith(":0") for line in shown_luks.splitlines() if line.startswith("/run/")), shown_luks
    assert "write the kept LUKS header" in restored and "close LUKS /dev/mapper/vdb3_crypt" in restored, restored
    assert "with a new master key" in again, again
    digest = re.compile(r"Digest:\s+((?:[0-9a-f]{2} ?)+)")
    old_digest = digest.search(files["luks-vdb3-dump.txt"].decode()).group(1).strip()
    new_digest = digest.search(shown_luks).group(1).strip()
    assert old_digest and new_digest and old_digest != new_digest, shown_luks  # another master key
    for part, array in (("/dev/vdd1", arrays["/dev/md0"]), ("/dev/vdd2", arrays["/dev/md1"])):
        examine = check.split(f"EXAMINE {part}")[1].split("EXAMINE")[0].split("PVS")[0]
        assert f"Array UUID : {array['uuid']}" in examine, examine
        assert f"Name : {array['name']}" in examine, examine
        assert f"Data Offset : {array['data_offset']} sectors" in examine, examine
        assert "Raid Devices : 2" in examine, examine
    assert "Internal Bitmap" in check.split("EXAMINE /dev/vdd2")[1], check
    vgs = {vg["name"]: vg for vg in layout["layers"]["vgs"]}
    pvs = check.split("PVS")[1].split("LVS")[0]
    for vg, dev in (("vgmd", "/dev/md1"), ("vgdata", "/dev/mapper/vdb3_crypt")):
        (pv,) = vgs[vg]["pvs"]
        assert re.search(rf"{dev}\s+{pv['uuid']}\s+{vg}\s+{vgs[vg]['uuid']}", pvs), pvs
    lvs = check.split("LVS")[1].split("BLKID")[0]
    for vg in vgs.values():
        for lv in vg["lvs"]:
            if lv["segtype"] in ("thin-pool", "thin") or not lv.get("path"):
                continue  # made by lvcreate (the plan says their LV UUIDs are new); hidden ones with them
            assert re.search(rf"{vg['name']}\s+{lv['name']}\s+{lv['uuid']}", lvs), lvs  # vgcfgrestore kept LV UUIDs
    assert re.search(r"vgdata\s+pool\s+\S+\s+thin-pool", lvs) and re.search(r"vgdata\s+vm\s+\S+\s+thin", lvs), lvs
    blkid = check.split("BLKID")[1].split("FILES")[0]
    for label in ("mdboot", "lvroot", "lvsrv", "lvswap", "lvthin"):
        assert f"UUID={by_label[label]['uuid']}" in blkid and f"LABEL={label}" in blkid, blkid
    shown = check.split("FILES")[1]
    assert "restored from md" in shown and "CONFIG_MD=y" in shown and "300000" in shown, check
    assert f"SLOW {40 << 20}" in shown, check
    assert "a thin volume's file" in shown, check
    for vg, dev in (("vgmd", "/dev/md1"), ("vgdata", "/dev/mapper/vdb3_crypt")):  # the devices file names the new PVs
        (pv,) = vgs[vg]["pvs"]
        assert f"IDTYPE=devname IDNAME={dev} DEVNAME={dev} PVID={pv['uuid'].replace('-', '')}" in shown, check
    assert "naa.old" not in shown, check
    assert [sha256_file(s) for s in spares] == sums, "the restore changed the old array members"
