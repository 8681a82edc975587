"""md RAID1 + LVM inside the rescue VM (issue 17): capture records every identifier, and a
rescue boot with those disks attached changes nothing on them.

The host kernel has neither md nor device-mapper: the arrays and volume groups are made
inside the booted rescue system, on two spare virtio disks (a GPT partition each, md RAID1
over both, a volume group on the array with root, swap and home LVs and a thin pool with a
thin LV, ext4 and swap on them). `rescue capture --out` runs there; its folder comes back to
the host as a tar written onto a fourth raw disk. Then:
- the layout names the array (UUID, name, level, metadata, data offset, bitmap, both members
  with their roles), the VG (UUID, extent size), every LV (UUID, size, segment type, the thin
  pool's metadata size and chunk size), the PV on /dev/md0, the vgcfgbackup text, and the
  filesystems on the LVs with their UUIDs (the plan's refusal of it: tests/unit, from the
  files this test recorded);
- the second boot, with the members attached and nothing stopped by hand first, assembles
  no array and activates no volume group (/proc/mdstat lists none, `dmsetup ls` none), and
  the spare disks' checksums are those after the first boot, also after rescue's own md step
  (rescue.steps.md) made the array again with the captured UUID, name, metadata, data offset
  and bitmap on a new disk beside them, found it running on a rerun, and assembled it from
  its named members once stopped;
- a LUKS2 disk attached at that boot is left locked (/dev/mapper holds only control), and its
  header, backed up and written back onto another partition, opens with the old passphrase:
  the way a LUKS restore keeps every keyslot (issue 18).
Two rescue boots (about 2-4 minutes under TCG).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import shlex
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from rescue.devices import attached, make_image_file, partition_path, rescan
from rescue.image.build import sha256_file
from rescue.jsonform import from_json
from rescue.layout.model import MdArray
from rescue.plan.md import plan_arrays
from rescue.qemu import Firmware
from rescue.run import run
from test_security_rescue import ShellVM, boot_shell

MiB = 1 << 20
REPO = Path(__file__).resolve().parents[2]
RAID_GUID = "A19D880F-05FC-4D3B-A006-743F0F84911E"

BUILD = f"""set -e
for d in /dev/vdb /dev/vdc; do printf 'label: gpt\\n,,{RAID_GUID}\\n' | sfdisk -q $d; done
udevadm settle
mdadm --create /dev/md0 --run --level=1 --raid-devices=2 --metadata=1.2 --bitmap=internal \
  --name=lvmtest:0 /dev/vdb1 /dev/vdc1
pvcreate -q /dev/md0
vgcreate -q vgtest /dev/md0
lvcreate -q -y -L 64M -n root vgtest
lvcreate -q -y -L 16M -n swap vgtest
lvcreate -q -y -L 40M -n home vgtest
lvcreate -q -y --type thin-pool -L 32M --chunksize 128k -n pool vgtest
lvcreate -q -y -V 64M --thin -n thin vgtest/pool
mkfs.ext4 -q -L lvroot /dev/vgtest/root
mkfs.ext4 -q -L lvhome /dev/vgtest/home
mkswap -L lvswap /dev/vgtest/swap > /dev/null
mkdir -p /mnt/t && mount /dev/vgtest/root /mnt/t && mkdir -p /mnt/t/home && mount /dev/vgtest/home /mnt/t/home
swapon /dev/vgtest/swap
echo BUILT-OK
"""

TEARDOWN = """swapoff /dev/vgtest/swap; umount /mnt/t/home /mnt/t; vgchange -q -an vgtest;
mdadm --stop /dev/md0; sync; echo DOWN-OK"""


def _backup_disk(image: Path, tmp: Path) -> Path:
    disk = make_image_file(tmp / "backup.img", 2 << 30)
    r = subprocess.run([sys.executable, "-m", "rescue", "prepare-disk", str(disk), "--image", str(image),
                        "--table", "gpt", "--label", "BACKUP", "--yes"],
                       capture_output=True, text=True, cwd=REPO, timeout=600)
    assert r.returncode == 0, f"prepare-disk failed:\n{r.stdout}\n{r.stderr}"
    mnt = tmp / "mnt"
    mnt.mkdir()
    with attached(disk) as dev:
        run(["mount", partition_path(dev, 4), str(mnt)])
        try:
            (mnt / "rescue").mkdir(exist_ok=True)
            (mnt / "rescue" / "boot.cfg").write_text("set default=shell\nset timeout=1\n")
        finally:
            run(["umount", str(mnt)])
    return disk


@pytest.mark.slow
def test_md_lvm_captured_with_every_identifier_and_never_assembled_at_boot(rescue_image, tmp_path):
    disk = _backup_disk(rescue_image, tmp_path)
    spares = [make_image_file(tmp_path / f"spare{i}.img", 256 * MiB) for i in (1, 2)]
    out = make_image_file(tmp_path / "out.img", 16 * MiB)

    with ShellVM([disk, *spares, out], tmp_path, firmware=Firmware.BIOS, name="lvmmd1") as vm:
        boot_shell(vm)
        built = vm.ask(f"( {BUILD} ) 2>&1", timeout=300)
        assert "BUILT-OK" in built, built
        cap = vm.ask("rescue capture --out /run/cap --client lvmtest > /run/cap.log 2>&1; echo CAP=$?; "
                     "tail -n 20 /run/cap.log; tar -C /run -cf /dev/vdd cap; sync; echo TAR=$?", timeout=300)
        assert "CAP=0" in cap and "TAR=0" in cap, cap
        down = vm.ask(TEARDOWN, timeout=120)
        assert "DOWN-OK" in down, down
        vm.type("poweroff")
        vm.wait_exit(180)

    with tarfile.open(out) as tar:
        files = {Path(m.name).name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    (tmp_path / "cap").mkdir()
    for name, data in files.items():  # kept for a look (and for recording unit-test data)
        (tmp_path / "cap" / name).write_bytes(data)
    layout = json.loads(files["layout.json"])
    layers = layout["layers"]
    (md,) = layers["md"]
    assert re.fullmatch(r"[0-9a-f]{8}(:[0-9a-f]{8}){3}", md["uuid"]), md
    assert md["name"] == "lvmtest:0" and md["level"] == "raid1" and md["metadata"] == "1.2", md
    assert md["bitmap"] == "internal" and md["raid_devices"] == 2, md
    assert md["data_offset"] and md["data_offset"] > 0, md
    assert sorted((m["device"], m["role"]) for m in md["members"]) == [("/dev/vdb1", "0"), ("/dev/vdc1", "1")], md
    assert all(m["dev_uuid"] and m["data_offset"] == md["data_offset"] for m in md["members"]), md
    (vg,) = layers["vgs"]
    assert vg["name"] == "vgtest" and len(vg["uuid"]) == 38 and vg["extent_size"] == 4 * MiB, vg
    assert [(p["device"], len(p["uuid"])) for p in vg["pvs"]] == [("/dev/md0", 38)], vg
    lvs = {lv["name"]: lv for lv in vg["lvs"]}
    assert {"root", "swap", "home", "pool", "thin"} <= set(lvs), lvs
    assert lvs["root"]["size"] == 64 * MiB and lvs["root"]["segtype"] == "linear", lvs["root"]
    assert lvs["pool"]["segtype"] == "thin-pool" and lvs["pool"]["chunk_size"] == 128 * 1024, lvs["pool"]
    assert lvs["pool"]["metadata_size"] and lvs["pool"]["size"] == 32 * MiB, lvs["pool"]
    assert lvs["thin"]["segtype"] == "thin" and lvs["thin"]["pool"] == "pool", lvs["thin"]
    assert all(len(lv["uuid"]) == 38 for lv in lvs.values()), lvs
    assert vg["config_file"] == "lvm-vgcfgbackup-vgtest.txt", vg
    assert f'id = "{vg["uuid"]}"'.encode() in files["lvm-vgcfgbackup-vgtest.txt"], files["lvm-vgcfgbackup-vgtest.txt"][:400]
    disks = {d["device"]: d for d in layers["disks"]}
    assert {"/dev/vdb", "/dev/vdc"} <= set(disks) and disks["/dev/vdb"]["size"] == 256 * MiB, disks
    by_label = {fs["label"]: fs for fs in layout["filesystems"] if fs["label"]}
    assert by_label["lvroot"]["device"] == "/dev/mapper/vgtest-root" and by_label["lvroot"]["uuid"], by_label
    assert by_label["lvhome"]["mountpoint"] == "/mnt/t/home" and by_label["lvswap"]["fstype"] == "swap", by_label
    assert len([fs for fs in layout["filesystems"] if fs["label"] == "lvroot"]) == 1, layout["filesystems"]

    sums = [sha256_file(s) for s in spares]
    target = make_image_file(tmp_path / "target.img", 640 * MiB)
    crypt, crypt_uuid = _luks_disk(tmp_path)  # made here: LUKS needs no device-mapper until it is opened
    array = from_json(MdArray, md)
    (make,) = plan_arrays([array], {"/dev/vdb1": "/dev/vdd1", "/dev/vdc1": "/dev/vdd2"}).steps
    with ShellVM([disk, *spares, target, crypt], tmp_path, firmware=Firmware.BIOS, name="lvmmd2") as vm:
        boot_shell(vm)
        state = vm.ask("udevadm settle; sleep 3; echo MDSTAT; cat /proc/mdstat; echo DM; dmsetup ls; "
                       "echo EXAMINE; mdadm --examine /dev/vdb1 | grep -c 'Array UUID'", timeout=120)
        # the restore's own step makes the array again, the same UUID, on the new disk, while
        # the old members are attached; then a rerun finds it running, and once stopped assembles it
        made = vm.ask(_in_rescue(MAKE_ARRAY, make), timeout=300)
        # LUKS (issue 18): attached at boot and left locked; its header, kept and written back
        # onto another partition, opens with the old passphrase: the restore's method
        luks = vm.ask(
            "echo MAPPER; ls /dev/mapper; echo HEADER; "
            "cryptsetup luksHeaderBackup /dev/vde1 --header-backup-file /run/h.img && "
            "cryptsetup luksHeaderRestore --batch-mode /dev/vde2 --header-backup-file /run/h.img && "
            f"printf %s {shlex.quote(PASSPHRASE)} | cryptsetup open --key-file=- /dev/vde2 restored && "
            "cryptsetup luksUUID /dev/vde2 && cryptsetup status restored | head -1 && cryptsetup close restored; "
            "echo LUKS-END", timeout=300)
        vm.type("poweroff")
        vm.wait_exit(180)
    mdstat = state.split("MDSTAT")[1].split("DM")[0]
    assert not re.search(r"^md\d+\s*:", mdstat, re.M), state
    assert "No devices found" in state.split("\nDM\n")[1].split("EXAMINE")[0], state
    assert state.strip().endswith("1"), state  # the superblock is still there, only left alone
    assert "MADE-OK" in made, made
    mapper = luks.split("MAPPER")[1].split("HEADER")[0].split()
    assert mapper == ["control"], luks  # nothing was unlocked at boot
    opened = luks.split("HEADER")[1]
    assert crypt_uuid in opened and "/dev/mapper/restored is active" in opened, luks
    detail = dict(line.split("=", 1) for line in made.split("DETAIL\n")[1].split("EXAMINE")[0].split() if "=" in line)
    assert detail["MD_UUID"] == array.uuid and detail["MD_NAME"] == "lvmtest:0", made
    assert detail["MD_LEVEL"] == "raid1" and detail["MD_METADATA"] == "1.2", made
    assert sorted(v for k, v in detail.items() if k.endswith("_DEV")) == ["/dev/vdd1", "/dev/vdd2"], made
    examine = made.split("EXAMINE\n")[1]
    assert f"Data Offset : {array.data_offset} sectors" in examine, examine
    assert "Internal Bitmap" in examine, examine
    assert "resync" not in made.split("MDSTAT2")[1], made  # --assume-clean: a mirror of new disks does not resync
    assert "RERUN-OK" in made and "ASSEMBLED-OK" in made and "STOPPED-OK" in made, made
    assert [sha256_file(s) for s in spares] == sums, "a rescue boot, or making the array again, changed the old members"


PASSPHRASE = "the old passphrase"


def _luks_disk(tmp: Path) -> tuple[Path, str]:
    """A disk with a LUKS2 container on its first partition (a fast PBKDF) and an empty second."""
    img = make_image_file(tmp / "luks.img", 64 * MiB)
    with attached(img) as dev:
        run(["sfdisk", "-q", dev], input="label: gpt\n,24M\n,24M\n")
        rescan(dev)
        part = partition_path(dev, 1)
        subprocess.run(["cryptsetup", "luksFormat", "--batch-mode", "--type", "luks2", "--pbkdf", "pbkdf2",
                        "--pbkdf-force-iterations", "1000", "--key-file=-", part],
                       input=PASSPHRASE.encode(), check=True, capture_output=True)
        uuid = run(["cryptsetup", "luksUUID", part]).stdout.strip()
    return img, uuid


# Runs inside the rescue system: rescue's own MakeArray/StopArrays steps, with the gateway.
MAKE_ARRAY = """
import json, subprocess, sys
from rescue.run import run
from rescue.steps.md import MakeArray, StopArrays
class Ctx:
    noted = {}
    def run(self, argv, **kw):
        return run(argv, **kw)
    def data(self, key=None):
        return self.noted
    def save(self):
        pass
fields = json.loads(sys.argv[1])
fields["members"] = tuple(fields["members"])
step = MakeArray(**fields)
ctx = Ctx()
step.run(ctx)
print("MADE-OK")
print("DETAIL"); print(run(["mdadm", "--detail", "--export", step.device]).stdout)
print("EXAMINE"); print(run(["mdadm", "--examine", step.members[0]]).stdout)
print("MDSTAT2"); print(open("/proc/mdstat").read())
step.run(ctx); print("RERUN-OK")
StopArrays((step.device,)).run(ctx)
step.run(ctx)
if "MD_UUID=" + step.uuid in run(["mdadm", "--detail", "--export", step.device]).stdout:
    print("ASSEMBLED-OK")
StopArrays((step.device,)).run(ctx)
if run(["mdadm", "--detail", step.device], check=False).returncode != 0:
    print("STOPPED-OK")
"""


def _in_rescue(script: str, make) -> str:
    """A shell line that partitions the target (two halves) and runs `script` with the step's fields."""
    fields = {f.name: getattr(make, f.name) for f in dataclasses.fields(make)}
    code = base64.b64encode(script.encode()).decode()
    return ("printf 'label: gpt\\n,300M\\n,300M\\n' | sfdisk -q /dev/vdd && udevadm settle && "
            f"echo {code} | base64 -d > /run/make_array.py && "
            f"python3 /run/make_array.py {shlex.quote(json.dumps(fields))} 2>&1")
