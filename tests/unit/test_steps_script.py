"""Steps as shell (restore.sh) and the pure helpers the steps run on (no root)."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest

from rescue.layout.model import BootMode, FstabEntry, Partition, PartitionTable, RootMeta
from rescue.steps import (
    CopyTree,
    Fixups,
    InstallBootloader,
    MakeFilesystem,
    MakeSwap,
    MountFilesystem,
    UnmountAll,
    Verify,
    WipeSignatures,
    WritePartitionTable,
)
from rescue.steps.base import at_root, confined, slug
from rescue.layout.fstab import parse_fstab
from rescue.steps.fixups import resolve_spec
from rescue.steps.mkfs import mkfs_argv, same_uuid, vfat_volume_id
from rescue.layout.sfdisk import parse_sfdisk, render_sfdisk
from rescue.steps.partition import table_differences
from rescue.steps.verify import expected_differences, itemized_path

GPT = PartitionTable(
    label="gpt", label_id="58CE6047-070F-DC41-BA14-178C0ED9BDB2", first_lba=2048, last_lba=2097118,
    partitions=(
        Partition("/dev/sda1", 2048, 524288, "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
                  uuid="274105C3-B4B2-8042-A9EC-47643C82F937", name="root"),
        Partition("/dev/sda2", 526336, 131072, "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F",
                  uuid="D1256697-3727-EF49-AA80-D30C641C5B77", name="my swap"),
    ),
)

DUMP = """label: gpt
label-id: 58CE6047-070F-DC41-BA14-178C0ED9BDB2
device: /dev/loop3
unit: sectors
first-lba: 2048
last-lba: 4194270
sector-size: 512

/dev/loop3p1 : start=        2048, size=      524288, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=274105C3-B4B2-8042-A9EC-47643C82F937, name="root"
/dev/loop3p2 : start=      526336, size=      131072, type=0657FD6D-A4AB-43C4-84E5-0933C84B4F4F, uuid=D1256697-3727-EF49-AA80-D30C641C5B77, name="my swap"
"""


def test_sfdisk_input_keeps_ids_names_and_drops_last_lba():
    text = render_sfdisk(GPT, "/dev/loop3")
    assert "label-id: 58CE6047-070F-DC41-BA14-178C0ED9BDB2" in text
    assert "last-lba" not in text
    assert ('/dev/loop3p2 : start=526336, size=131072, type=0657FD6D-A4AB-43C4-84E5-0933C84B4F4F, '
            'uuid=D1256697-3727-EF49-AA80-D30C641C5B77, name="my swap"') in text


def test_dump_read_back_equals_the_plan_and_differences_are_named():
    table = parse_sfdisk(DUMP)
    assert table.label == "gpt" and table.last_lba == 4194270
    assert table_differences(GPT, table) == []
    moved = PartitionTable(label="gpt", label_id=GPT.label_id, partitions=(
        GPT.partitions[0], Partition("/dev/sda2", 526336, 999, GPT.partitions[1].type,
                                     uuid="D1256697-3727-EF49-AA80-D30C641C5B77", name="my swap")))
    assert table_differences(moved, table) == ["partition 2 size 131072 instead of 999"]
    other_id = PartitionTable(label="gpt", label_id="00000000-0000-0000-0000-000000000001",
                              partitions=GPT.partitions)
    assert table_differences(other_id, table)[0].startswith("label-id")


def test_dos_ids_compare_without_0x_and_leading_zeros():
    plan = PartitionTable(label="dos", label_id="0x0012abcd",
                          partitions=(Partition("/dev/sda1", 2048, 100, "83", bootable=True),))
    dump = "label: dos\nlabel-id: 0x12abcd\n\n/dev/loop0p1 : start=2048, size=100, type=83, bootable\n"
    assert table_differences(plan, parse_sfdisk(dump)) == []


def test_real_sfdisk_accepts_the_rendered_input(tmp_path):
    """sfdisk writes a partition table into a plain image file: no root needed."""
    img = tmp_path / "disk.img"
    with open(img, "wb") as f:
        f.truncate(2 << 30)
    subprocess.run(["sfdisk", "--no-reread", "--no-tell-kernel", str(img)], input=render_sfdisk(GPT, str(img)),
                   text=True, check=True, capture_output=True,
                   env={**os.environ, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    dump = subprocess.run(["sfdisk", "--dump", str(img)], text=True, check=True, capture_output=True,
                          env={**os.environ, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}).stdout
    assert table_differences(GPT, parse_sfdisk(dump)) == []


@pytest.mark.parametrize(("fstype", "expect"), [
    ("ext4", ["mkfs.ext4", "-F", "-q", "-U", "U", "-L", "L", "/dev/x1"]),
    ("ext2", ["mkfs.ext2", "-F", "-q", "-U", "U", "-L", "L", "/dev/x1"]),
    ("xfs", ["mkfs.xfs", "-f", "-q", "-m", "uuid=U", "-L", "L", "/dev/x1"]),
    ("btrfs", ["mkfs.btrfs", "-f", "-q", "-U", "U", "-L", "L", "/dev/x1"]),
])
def test_mkfs_keeps_uuid_and_label(fstype, expect):
    assert mkfs_argv(fstype, "/dev/x1", "U", "L") == expect


def test_vfat_volume_id_and_uuid_comparison():
    assert mkfs_argv("vfat", "/dev/x1", "abcd-1234", "EFI") == ["mkfs.vfat", "-i", "ABCD1234", "-n", "EFI", "/dev/x1"]
    assert vfat_volume_id("ABCD-1234") == "ABCD1234"
    assert same_uuid("ABCD-1234", "abcd1234") and not same_uuid("ABCD-1234", "ABCD-1235")


def test_unknown_filesystem_is_refused():
    from rescue.errors import PlanRefused

    with pytest.raises(PlanRefused):
        mkfs_argv("reiserfs", "/dev/x1", None, None)


def test_every_step_renders_shell_that_parses():
    copy = CopyTree(vault="home", image="2026-1126-0300", source=Path("/backup/bank/home/2026-1126-0300/tree"),
                    mountpoint="/home")
    mkfs = MakeFilesystem("/dev/sdb2", "xfs", "U-1", "demo home", "/home")
    steps = [
        WipeSignatures("/dev/sdb"), WritePartitionTable("/dev/sdb", GPT), mkfs,
        MakeFilesystem("/dev/sdb3", "btrfs", "U-2", None, "/srv"), MakeSwap("/dev/sdb4", "U-3", "swap"),
        MountFilesystem("/dev/sdb1", "/", "ext4"), MountFilesystem("/dev/sdb2", "/home", "xfs"),
        copy, Fixups(roots=(RootMeta("/tmp", 0o1777, 0, 0),),
                     fstab=(FstabEntry("UUID=U-1", "/home", "xfs"), FstabEntry("UUID=U-3", "none", "swap"))),
        InstallBootloader("/dev/sdb", BootMode.UEFI, "/boot/efi"), InstallBootloader("/dev/sdb", BootMode.BIOS),
        Verify("/dev/sdb", (copy,), (mkfs,)), UnmountAll(),
    ]
    script = "\n".join(line for s in steps for line in s.script())
    for s in steps:
        assert s.script(), s.kind
    # bash -n: the whole script is valid shell
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)
    assert "mkfs.xfs -f -q -m uuid=U-1 -L 'demo home' /dev/sdb2" in script
    assert "mount -t xfs -o nouuid /dev/sdb2 \"$ROOT\"/home" in script
    assert "mount -t ext4 -o noinit_itable /dev/sdb1 \"$ROOT\"" in script
    assert "cp -a --sparse=auto -- /backup/bank/home/2026-1126-0300/tree/. \"$WORK\"/home/" in script
    assert "chown 0:0 \"$ROOT\"/tmp && chmod 1777 \"$ROOT\"/tmp" in script
    assert "grub-install --target=x86_64-efi --efi-directory=/boot/efi --removable" in script
    assert 'chroot "$1" grub-install --target=i386-pc /dev/sdb' in script
    assert "<<'SFDISK'" in script and "\nSFDISK\n" in script


def test_at_root_quotes_and_slug():
    assert at_root("/") == '"$ROOT"'
    assert at_root("/my dir") == '"$ROOT"' + shlex.quote("/my dir")
    assert slug("/") == "root" and slug("/var/log") == "var_log"


def test_confined_keeps_absolute_links_inside_the_restored_root(tmp_path):
    root = tmp_path / "root"
    (root / "run").mkdir(parents=True)
    (root / "var").mkdir()
    os.symlink("/run", root / "var" / "run")  # an absolute link, as on Debian
    os.symlink("../../..", root / "var" / "up")
    assert confined(root, "/var/run/lock") == root / "run" / "lock"
    made: list[str] = []
    p = confined(root, "/var/run/lock", create=True, made=made)
    assert p == root / "run" / "lock" and p.is_dir() and made == ["/run/lock"]
    assert confined(root, "/var/up/etc") == root / "etc"  # '..' stops at the restored root


def test_fstab_specs_resolve_against_probed_filesystems():
    text = "# comment\nUUID=aa /  ext4 defaults 0 1\nLABEL=my\\040home /home xfs defaults 0 2\n" \
           "PARTUUID=CC none swap sw 0 0\n/dev/sda9 /x ext4 defaults 0 0\n"
    entries = parse_fstab(text)
    assert (entries[1].spec, entries[1].file, entries[1].vfstype) == ("LABEL=my home", "/home", "xfs")
    found = [{"UUID": "aa", "TYPE": "ext4"}, {"LABEL": "my home", "TYPE": "xfs"}, {"PART_ENTRY_UUID": "cc"}]
    assert resolve_spec("UUID=aa", found) is found[0]
    assert resolve_spec("LABEL=my home", found) is found[1]
    assert resolve_spec("PARTUUID=CC", found) is found[2]
    assert resolve_spec("UUID=zz", found) is None


def test_verify_ignores_only_the_differences_made_on_purpose():
    assert itemized_path(".d..t...... ./") == "./"
    assert itemized_path("*deleting   var/tmp/") == "var/tmp/"
    assert itemized_path(">f+++++++++ etc/passwd") == "etc/passwd"
    exp = expected_differences("/", "ext4", ["/home", "/boot/efi"], ["/proc", "/var", "/var/tmp", "/home/x"])
    assert {"home", "boot/efi", "proc", "var", "var/tmp", "lost+found", "."} <= exp
    assert "etc" not in exp
    exp_home = expected_differences("/home", "xfs", [], ["/home/x", "/proc"])
    assert exp_home == {"", ".", "x"}
