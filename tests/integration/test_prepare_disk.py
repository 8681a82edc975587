"""rescue prepare-disk on disk image files: real sfdisk, mkfs, loop devices, grub boot code, mtools.

The rescue image is built once (cached in /var/cache/rescue/image across runs,
rebuilt only when the recipe or rescue's code changes).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from rescue.formats.units import sha256_file
from rescue import bootcode
from rescue import prepare as prepare_disk  # the plan and its engine run (the command is only the face)
from rescue.devices import attached, make_image_file, partition_path
from rescue.errors import Exit, UnsafeTarget
from rescue.image import bmap as bmapmod
from rescue.run import run

REPO = Path(__file__).resolve().parents[2]
GIB = 1 << 30


def prepare(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rescue", "prepare-disk", *args],
                          capture_output=True, text=True, cwd=REPO, timeout=900, stdin=subprocess.DEVNULL)


def probe(dev: str, tag: str) -> str:
    return run(["blkid", "-p", "-s", tag, "-o", "value", dev], check=False).stdout.strip()


def sha256_of(dev: str) -> str:
    return sha256_file(dev)


def test_gpt_backup_disk_has_all_four_partitions_boot_code_and_a_root_only_bank(rescue_image: Path, tmp_path: Path):
    disk = make_image_file(tmp_path / "backup.img", 2 * GIB)
    result = prepare(str(disk), "--image", str(rescue_image), "--yes", "--disk-name", "shelf-3")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "read back and verified" in result.stdout
    bm = bmapmod.load(rescue_image.with_suffix(".bmap"))
    with attached(disk) as dev:
        table = json.loads(run(["sfdisk", "--json", dev]).stdout)["partitiontable"]
        assert table["label"] == "gpt"
        parts = table["partitions"]
        assert [p["name"] for p in parts] == ["bios-boot", "esp", "rescue", "backup"]
        assert parts[0]["type"] == prepare_disk.GPT_BIOS_BOOT and parts[0]["size"] == 2048
        assert parts[1]["type"] == prepare_disk.GPT_ESP
        assert parts[2]["size"] * 512 == bm.image_size
        assert parts[3]["start"] + parts[3]["size"] >= (2 * GIB // 512) - 2048, "backup takes the rest"
        p2, p3, p4 = (partition_path(dev, n) for n in (2, 3, 4))
        assert (probe(p2, "TYPE"), probe(p3, "TYPE"), probe(p4, "TYPE")) == ("vfat", "ext4", "ext4")
        assert (probe(p3, "LABEL"), probe(p4, "LABEL")) == ("RESCUE", "BACKUP")
        # the rescue partition holds exactly the image's used blocks, and is a clean filesystem
        bmapmod.verify_target(p3, bm)
        assert subprocess.run(["e2fsck", "-fn", p3], capture_output=True).returncode == 0
        # BIOS: grub's boot.img in the MBR, pointing at core.img in the BIOS boot partition
        assert bootcode.read_bios_boot(dev) == 2048
        # UEFI: grub at the removable path of the ESP (read with mtools, no vfat mount)
        assert "EFI/BOOT/BOOTX64.EFI" in bootcode.esp_listing(p2)
        assert bootcode.read_esp_file(p2, bootcode.REMOVABLE_PATH)[:2] == b"MZ"
        # the backup filesystem: root-only top, bank folder and DISKLABEL
        mnt = tmp_path / "mnt"
        mnt.mkdir()
        run(["mount", "-o", "ro", p4, str(mnt)])
        try:
            top = os.stat(mnt)
            bank = os.stat(mnt / "dirvish")
            assert stat.S_IMODE(top.st_mode) == 0o700 and top.st_uid == 0
            assert stat.S_ISDIR(bank.st_mode) and stat.S_IMODE(bank.st_mode) == 0o700 and bank.st_uid == 0
            assert (mnt / "DISKLABEL").read_text() == "shelf-3\n"
        finally:
            run(["umount", str(mnt)])


def test_update_rewrites_the_rescue_partition_and_leaves_the_backup_byte_identical(rescue_image: Path,
                                                                                  tmp_path: Path):
    disk = make_image_file(tmp_path / "backup.img", 2 * GIB)
    assert prepare(str(disk), "--image", str(rescue_image), "--yes").returncode == 0
    bm = bmapmod.load(rescue_image.with_suffix(".bmap"))
    with attached(disk) as dev:
        p3, p4 = partition_path(dev, 3), partition_path(dev, 4)
        # a night of backups on the backup partition
        mnt = tmp_path / "mnt"
        mnt.mkdir()
        run(["mount", p4, str(mnt)])
        (mnt / "dirvish" / "vault-a").mkdir()
        (mnt / "dirvish" / "vault-a" / "file").write_bytes(os.urandom(1 << 20))
        run(["umount", str(mnt)])
        # damage the rescue system: a used block overwritten
        victim = bm.ranges[len(bm.ranges) // 2]
        with open(p3, "r+b") as f:
            f.seek(victim.first * bm.block_size)
            f.write(b"\xde\xad" * 2048)
        with pytest.raises(bmapmod.BmapError):
            bmapmod.verify_target(p3, bm)
        backup_before = sha256_of(p4)
    result = prepare(str(disk), "--image", str(rescue_image), "--update", "--yes")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "untouched" in result.stdout
    with attached(disk) as dev:
        assert sha256_of(partition_path(dev, 4)) == backup_before
        bmapmod.verify_target(partition_path(dev, 3), bm)
        assert bootcode.read_bios_boot(dev) == 2048


def test_dos_disk_with_xfs_backup_boots_from_the_gap_after_the_mbr(rescue_image: Path, tmp_path: Path):
    disk = make_image_file(tmp_path / "dos.img", 2 * GIB)
    result = prepare(str(disk), "--image", str(rescue_image), "--table", "dos", "--backup-fs", "xfs",
                     "--label", "BK2", "--yes")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no ESP" in result.stdout
    with attached(disk) as dev:
        table = json.loads(run(["sfdisk", "--json", dev]).stdout)["partitiontable"]
        assert table["label"] == "dos" and len(table["partitions"]) == 2
        assert table["partitions"][0].get("bootable") is True
        assert probe(partition_path(dev, 1), "LABEL") == "RESCUE"
        assert (probe(partition_path(dev, 2), "TYPE"), probe(partition_path(dev, 2), "LABEL")) == ("xfs", "BK2")
        assert bootcode.read_bios_boot(dev) == 1


def test_a_mounted_disk_is_refused_and_nothing_is_written(rescue_image: Path, tmp_path: Path):
    disk = make_image_file(tmp_path / "busy.img", 2 * GIB)
    run(["sfdisk", "--quiet", str(disk)], input="label: gpt\nsize=512MiB, type=L\n")
    with attached(disk) as dev:
        part = partition_path(dev, 1)
        # no lazy init, mounted read-only: ext4 itself writes nothing while mounted, so a changed
        # hash can only be prepare-disk's (a rw mount's background inode-table init changed it once)
        run(["mkfs.ext4", "-q", "-E", "lazy_itable_init=0,lazy_journal_init=0", part])
        mnt = tmp_path / "mnt"
        mnt.mkdir()
        run(["mount", "-o", "ro", part, str(mnt)])
        try:
            before = sha256_of(dev)
            result = prepare(dev, "--image", str(rescue_image), "--yes")
            assert result.returncode == Exit.UNSAFE, result.stdout + result.stderr
            assert "mounted" in result.stderr
            # the file itself, while its loop device is mounted, is refused too
            result = prepare(str(disk), "--image", str(rescue_image), "--yes")
            assert result.returncode == Exit.UNSAFE, result.stdout + result.stderr
            assert sha256_of(dev) == before
        finally:
            run(["umount", str(mnt)])


def test_the_running_systems_disk_is_refused(tmp_path: Path):
    """Only the check runs here (it reads, never writes): the disk holding / is refused."""
    source = run(["findmnt", "-n", "-o", "SOURCE", "/"]).stdout.strip()
    assert source.startswith("/dev/"), f"/ is on {source}"
    from rescue.devices import disk_of

    with pytest.raises(UnsafeTarget) as e:
        prepare_disk.check_safe(disk_of(source) if os.path.exists(disk_of(source)) else source)
    assert "running system" in str(e.value) or "mounted" in str(e.value)


def test_without_yes_and_no_terminal_nothing_is_written(rescue_image: Path, tmp_path: Path):
    disk = make_image_file(tmp_path / "ask.img", 2 * GIB)
    result = prepare(str(disk), "--image", str(rescue_image))
    assert result.returncode == Exit.ABORTED, result.stdout + result.stderr
    assert "type" in result.stderr.lower() or "confirm" in result.stderr.lower()
    with open(disk, "rb") as f:
        assert f.read(1 << 20) == b"\0" * (1 << 20)


def test_a_disk_too_small_for_rescue_and_backup_is_refused(rescue_image: Path, tmp_path: Path):
    disk = make_image_file(tmp_path / "small.img", 1 * GIB)
    result = prepare(str(disk), "--image", str(rescue_image), "--yes")
    assert result.returncode == Exit.REFUSED, result.stdout + result.stderr
    assert "too small" in result.stderr
    with open(disk, "rb") as f:
        assert f.read(1 << 20) == b"\0" * (1 << 20)


def _debugfs(image: Path, request: str) -> str:
    return run(["debugfs", "-R", request, str(image)]).stdout


def test_the_built_image_is_locked_down_and_carries_rescue_and_the_restore_tools(rescue_image: Path):
    """Read straight from the ext4 image (debugfs): what the rescue system will be when it boots."""
    from rescue.image import manifest as mf

    m = mf.load(rescue_image.parent)
    assert m.label == "RESCUE" and m.used_bytes <= 600 * (1 << 20) and m.total_bytes == 1 << 30
    names = {p.name for p in m.packages}
    for pkg in ("linux-image-amd64", "systemd", "udev", "fdisk", "parted", "e2fsprogs", "xfsprogs", "btrfs-progs",
                "dosfstools", "mtools", "rsync", "attr", "acl", "grub-pc-bin", "grub-efi-amd64-bin",
                "efibootmgr", "openssh-client", "python3", "libparted2"):
        assert pkg in names, pkg
    assert "openssh-server" not in names and "dropbear" not in names, "no ssh server in a rescue image"
    shadow = _debugfs(rescue_image, "cat /etc/shadow")
    root_pw = next(line for line in shadow.splitlines() if line.startswith("root:")).split(":")[1]
    assert root_pw.startswith("!") or root_pw == "*", "root's password is locked"
    assert "ssh_host_" not in _debugfs(rescue_image, "ls /etc/ssh"), "no SSH host keys baked in"
    assert _debugfs(rescue_image, "cat /etc/machine-id") == "", "every boot makes its own machine id"
    # rescue runs on the image's python3 with everything it imports installed beside it
    entry = _debugfs(rescue_image, "cat /usr/local/bin/rescue")
    assert entry.startswith("#!/usr/bin/python3\n") and "rescue.cli" in entry
    site = _debugfs(rescue_image, "ls /usr/local/lib/python3.11/dist-packages")
    for module in ("rescue", "textual", "parted", "blkinfo", "jinja2"):
        assert module in site.split(), module
    unattended = _debugfs(rescue_image, "cat /usr/local/sbin/rescue-unattended-restore")
    assert unattended == (REPO / "scripts" / "unattended-restore").read_text()
    assert "RESCUE-READY" in _debugfs(rescue_image, "cat /usr/local/sbin/rescue-console")
    grub_cfg = _debugfs(rescue_image, "cat /boot/grub/grub.cfg")
    assert f"linux /boot/vmlinuz-{m.kernel} " in grub_cfg and "Restore wizard" in grub_cfg
    wants = _debugfs(rescue_image, "ls /etc/systemd/system/multi-user.target.wants")
    assert "rescue-mount-backup.service" in wants
    assert "serial-getty@ttyS0.service" in _debugfs(rescue_image, "ls /etc/systemd/system/getty.target.wants")


def test_dry_run_shows_the_plan_and_the_steps_as_shell_and_writes_nothing(rescue_image: Path, tmp_path: Path):
    disk = make_image_file(tmp_path / "dry.img", 2 * GIB)
    state = tmp_path / "state"
    result = prepare(str(disk), "--image", str(rescue_image), "--dry-run", "--state-dir", str(state))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ERASED" in result.stdout and "nothing was written" in result.stdout
    assert "sfdisk --wipe always" in result.stdout and 'name="backup"' in result.stdout
    assert "mkfs.ext4" in result.stdout and "mkfs.vfat -F 32" in result.stdout
    assert not state.exists() or list(state.rglob("*")) == [], "no journal, no log"
    assert run(["losetup", "--associated", str(disk)]).stdout == "", "its loop device is detached again"
    assert os.stat(disk).st_blocks == 0, "not a byte of the image file was written"


def test_a_disk_a_restore_is_writing_is_refused_by_its_lock_and_nothing_is_written(rescue_image: Path,
                                                                                   tmp_path: Path):
    """prepare-disk takes the restore's disk lock: one writer per disk, whichever command it is."""
    from rescue.engine.lock import DiskLock

    disk = make_image_file(tmp_path / "locked.img", 2 * GIB)
    with attached(disk) as dev, DiskLock(dev, "rescue wizard"):
        result = prepare(str(disk), "--image", str(rescue_image), "--yes", "--state-dir", str(tmp_path / "state"))
        assert result.returncode == Exit.REFUSED, result.stdout + result.stderr
        assert "is under way: rescue wizard" in result.stderr
    assert os.stat(disk).st_blocks == 0, "not a byte of the image file was written"
