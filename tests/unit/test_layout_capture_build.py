"""The pure half of capture: raw files of a real capture -> Layout; legacy banks -> Layout."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from rescue.capture import HookEnv, hook_env, is_local, write_capture
from rescue.capture.build import build_layout, relative_to_root
from rescue.capture.collect import Raw
from rescue.capture.probe import SshRunner
from rescue.errors import LayoutError, RescueError
from rescue.layout import BootMode, Layout, load_layout

SAMPLES = Path(__file__).parent / "layout_samples"
DEMO = SAMPLES / "capture-demo"


def demo_files() -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in DEMO.iterdir() if p.name != "layout.json"}


def test_raw_files_of_a_real_capture_build_the_recorded_layout() -> None:
    recorded = Layout.loads((DEMO / "layout.json").read_text())
    built = build_layout(demo_files(), client=recorded.client, captured_at=recorded.captured_at, root="/mnt/demo")
    assert built.disks == recorded.disks
    assert built.filesystems == recorded.filesystems
    assert built.swaps == recorded.swaps


def test_offline_capture_facts() -> None:
    lay = build_layout(demo_files(), client=None, captured_at="2026-11-26T03:00:00+00:00", root="/mnt/demo")
    assert lay.client == "demo" and lay.hostname == "demo" and lay.root == "/mnt/demo"
    (disk,) = lay.disks
    assert disk.device == "/dev/loop9" and disk.size == 1024**3 and disk.table.label == "gpt"
    fs = {f.mountpoint: f for f in lay.filesystems}
    assert fs["/"].label == "demo-root" and fs["/"].fstype == "ext4"
    assert fs["/home"].fstype == "xfs" and fs["/home"].label == "demo-home"
    assert fs["/tmp"].root is not None and fs["/tmp"].root.mode == 0o1777 and fs["/tmp"].root.uid == 0
    assert fs["/home"].used and fs["/home"].used > 0
    assert fs["/home"].partuuid == disk.table.partitions[1].uuid.lower()
    (swap,) = lay.swaps
    assert swap.label == "demo-swap" and swap.uuid and swap.size == 64 * 1024**2
    assert [m.target for m in lay.mounts] == ["/", "/home", "/tmp"]
    assert {e.file for e in lay.fstab} == {"/", "/home", "/tmp", "none"}
    assert lay.boot.mode is BootMode.BIOS and lay.boot.grub_disk == "/dev/loop9" and lay.boot.esp is None
    assert lay.os_release.get("ID")
    assert Layout.loads(lay.dumps()) == lay


def test_a_broken_raw_file_names_itself() -> None:
    files = demo_files()
    files["sfdisk-loop9.dump"] = files["sfdisk-loop9.dump"].replace(b"size=", b"size=-", 1)
    with pytest.raises(LayoutError) as e:
        build_layout(files, client="x", captured_at="t", root="/mnt/demo")
    assert e.value.file == "sfdisk-loop9.dump" and e.value.line == 9


def test_relative_mount_points() -> None:
    assert relative_to_root("/mnt/demo", "/mnt/demo") == "/"
    assert relative_to_root("/mnt/demo/home", "/mnt/demo/") == "/home"
    assert relative_to_root("/mnt/demox", "/mnt/demo") is None
    assert relative_to_root("/home", "/") == "/home"


def test_legacy_bank_is_read_when_no_layout_json() -> None:
    lay = load_layout(SAMPLES / "legacy/laptop/laptoproot/2003-1006-0300")
    assert lay is not None and lay.source == "legacy" and lay.client == "laptop"
    assert lay.captured_at == "2003-10-06T03:00:02"
    (disk,) = lay.disks
    assert disk.device == "/dev/hda" and [p.number for p in disk.table.partitions] == [1, 2, 3, 4, 5]
    fs = {f.mountpoint: f for f in lay.filesystems}
    assert fs["/"].fstype == "ext3" and fs["/"].label == "/" and fs["/"].used == 4353160 * 1024
    assert fs["/home"].device == "/dev/hda5"
    assert [s.device for s in lay.swaps] == ["/dev/hda2"]
    assert any("legacy" in w for w in lay.warnings)
    # the home vault's image has no fstab of its own: it is found in the root vault's same-night image
    home = load_layout(SAMPLES / "legacy/laptop/laptophome/2003-1006-0300")
    assert home is not None and {f.mountpoint: f.fstype for f in home.filesystems}["/home"] == "ext3"


def test_layout_json_is_preferred_and_none_when_nothing(tmp_path: Path) -> None:
    image = tmp_path / "bank" / "vault" / "img"
    (image / "tree").mkdir(parents=True)
    assert load_layout(image) is None
    shutil.copy(SAMPLES / "legacy/laptop/laptoproot/2003-1006-0300/df.laptop", image / "df.1")
    assert load_layout(image).source == "legacy"
    (image / "rescue").mkdir()
    shutil.copy(DEMO / "layout.json", image / "rescue" / "layout.json")
    assert load_layout(image).source == "capture"
    (image / "rescue" / "layout.json").write_text('{"schema": 1, "client": 5}')
    with pytest.raises(LayoutError):
        load_layout(image)


def test_hook_environment() -> None:
    assert hook_env({}) is None
    env = hook_env({"DIRVISH_SERVER": "backup", "DIRVISH_CLIENT": "laptop", "DIRVISH_DEST": "/b/v/img/tree",
                    "DIRVISH_IMAGE": "v:default:img", "DIRVISH_STATUS": "success"})
    assert env == HookEnv("backup", "laptop", Path("/b/v/img/tree"), "v:default:img", "success")
    assert env.image_dir == Path("/b/v/img")
    with pytest.raises(RescueError):
        hook_env({"DIRVISH_DEST": "/x"})
    assert is_local("localhost") and is_local("backup", "backup") and not is_local("laptop", "backup")


def test_ssh_runner_quotes_and_refuses_odd_hosts(monkeypatch) -> None:
    seen = []

    def fake_run(argv, **kw):
        from rescue.run import Result
        seen.append(argv)
        return Result(tuple(argv), 0, "", "")

    monkeypatch.setattr("rescue.capture.probe.run", fake_run)  # no ssh server here: check the argv only
    SshRunner("laptop")(["stat", "-c", "%a %u %g %n", "/srv/my data"])
    assert seen[0][:3] == ["ssh", "-o", "BatchMode=yes"] and seen[0][-3:-1] == ["laptop", "--"]
    assert seen[0][-1] == "stat -c '%a %u %g %n' '/srv/my data'"
    with pytest.raises(RescueError):
        SshRunner("-oProxyCommand=evil")
    with pytest.raises(RescueError):
        SshRunner("host;rm")


def test_write_is_all_or_nothing(tmp_path: Path, monkeypatch) -> None:
    lay = Layout.loads((DEMO / "layout.json").read_text())
    dest = tmp_path / "rescue"
    write_capture(dest, lay, Raw({"a.txt": b"first"}))
    assert (dest / "a.txt").read_bytes() == b"first" and (dest / "layout.json").is_file()
    real_fsync = os.fsync

    def failing(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", failing)  # a full disk in the middle of writing
    with pytest.raises(RescueError, match="could not write"):
        write_capture(dest, lay, Raw({"a.txt": b"second"}))
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert (dest / "a.txt").read_bytes() == b"first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rescue"]
    write_capture(dest, lay, Raw({"b.txt": b"third"}))
    assert sorted(p.name for p in dest.iterdir()) == ["b.txt", "layout.json"]
    assert json.loads((dest / "layout.json").read_text())["client"] == lay.client


def test_running_uefi_machine_with_esp_and_active_swap() -> None:
    """A live UEFI machine as collect_running would record it (hand-assembled raw files)."""
    from rescue.layout import parse_sfdisk, render_sfdisk

    table = parse_sfdisk((SAMPLES / "gpt.dump").read_bytes(), "gpt.dump")
    parts = [
        {"name": f"sda{i}", "type": "part", "size": p.size * 512, "partuuid": p.uuid.lower(), "mountpoints": [None]}
        for i, p in enumerate(table.partitions, 1)
    ]
    lsblk = {"blockdevices": [{"name": "sda", "type": "disk", "size": 2 * 1024**3, "model": "QEMU HARDDISK",
                               "log-sec": 512, "children": parts}]}
    blkid = {
        "sda2": "DEVNAME=/dev/sda2\nUUID=7A1B-2C3D\nTYPE=vfat\nPART_ENTRY_UUID=6da95b9c-8ed1-5347-b420-c4543b1914b3\n",
        "sda3": "DEVNAME=/dev/sda3\nLABEL=root\\ fs\nUUID=11111111-2222-3333-4444-555555555555\nTYPE=ext4\n",
        "sda4": "DEVNAME=/dev/sda4\nLABEL=swap\nUUID=66666666-2222-3333-4444-555555555555\nTYPE=swap\n",
        "sda5": "DEVNAME=/dev/sda5\nUUID=77777777-2222-3333-4444-555555555555\nTYPE=xfs\n",
        "sda1": "",
    }
    findmnt = {"filesystems": [{"target": "/", "source": "/dev/sda3", "fstype": "ext4", "options": "rw", "children": [
        {"target": "/boot/efi", "source": "/dev/sda2", "fstype": "vfat", "options": "rw,umask=0077"},
        {"target": "/home", "source": "/dev/sda5", "fstype": "xfs", "options": "rw"},
        {"target": "/proc", "source": "proc", "fstype": "proc", "options": "rw"}]}]}
    files = {
        "disks": b"/dev/sda\n",
        "lsblk.json": json.dumps(lsblk).encode(),
        "sfdisk-sda.dump": render_sfdisk(table, device="/dev/sda").encode(),
        "findmnt.json": json.dumps(findmnt).encode(),
        "df.txt": b"Filesystem Type 1B-blocks Used Avail Mounted on\n/dev/sda3 ext4 500 100 400 /\n"
                  b"/dev/sda2 vfat 100 5 95 /boot/efi\n/dev/sda5 xfs 1000 600 400 /home\nproc proc 0 0 0 /proc\n",
        "roots.txt": b"755 0 0 /\n700 0 0 /boot/efi\n755 0 0 /home\n",
        "swaps": b"Filename\tType\tSize\tUsed\tPriority\n/dev/sda4 partition 65532 0 -2\n",
        "boot-mode": b"uefi\n",
        "grub": b"/boot/grub\n",
        "hostname": b"laptop\n",
        "fstab": (SAMPLES / "hand-fstab").read_bytes(),
        **{f"blkid-{k}.txt": v.encode() for k, v in blkid.items()},
    }
    lay = build_layout(files, client="laptop", captured_at="2026-11-26T03:00:00+00:00")
    assert lay.boot.mode is BootMode.UEFI and lay.boot.esp == "/boot/efi"
    assert lay.boot.grub_disk == "/dev/sda" and lay.boot.has_grub
    fs = {f.mountpoint: f for f in lay.filesystems}
    assert fs["/"].label == "root fs" and fs["/home"].used == 600 and fs["/boot/efi"].root.mode == 0o700
    assert fs["/boot/efi"].partuuid == "6da95b9c-8ed1-5347-b420-c4543b1914b3"
    (swap,) = lay.swaps
    assert (swap.device, swap.size, swap.priority, swap.label) == ("/dev/sda4", 65532 * 1024, -2, "swap")
    assert [m.target for m in lay.mounts] == ["/", "/home", "/boot/efi"]
    assert lay.disks[0].model == "QEMU HARDDISK" and lay.disks[0].table.partitions[0].node == "/dev/sda1"
    assert not any("blkid could not" in w for w in lay.warnings)


def test_legacy_files_with_the_hooks_empty_suffix(tmp_path: Path) -> None:
    """The original hook wrote df.$i and sfdisk.$i with $i never set: files named 'df.' and 'sfdisk.'."""
    legacy = SAMPLES / "legacy/laptop"
    image = tmp_path / "laptop" / "laptoproot" / "2004-0101-0300"
    image.mkdir(parents=True)
    shutil.copy(legacy / "laptoproot/2003-1006-0300/df.laptop", image / "df.")
    shutil.copy(legacy / "sfdisk.laptop", tmp_path / "laptop" / "sfdisk.")
    lay = load_layout(image)
    assert lay is not None and lay.client == "laptop" and lay.disks[0].device == "/dev/hda"
    assert {f.mountpoint for f in lay.filesystems if f.mountpoint} == {"/", "/boot", "/home", "/spare"}
    assert all(f.fstype == "unknown" for f in lay.filesystems if f.mountpoint)  # no fstab anywhere: said, not guessed
    assert any("unknown" in w for w in lay.warnings)


def test_offline_esp_gets_its_mount_point_from_fstab() -> None:
    """vfat cannot be mounted on a build host: the ESP's place comes from the system's fstab."""
    files = demo_files()
    dump = files["sfdisk-loop9.dump"].decode()
    # make partition 4 (the /tmp ext4) an unmounted ESP in this copy of a real capture
    dump = dump.replace("type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=", "type=X, uuid=", 3)
    dump = dump.replace("type=X, uuid=", "type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=", 2)
    dump = dump.replace("type=X, uuid=", "type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=")
    files["sfdisk-loop9.dump"] = dump.encode()
    files["blkid-loop9p4.txt"] = b"DEVNAME=/dev/loop9p4\nUUID=7A1B-2C3D\nTYPE=vfat\n"
    files["findmnt.json"] = files["findmnt.json"].replace(b'"/mnt/demo/tmp"', b'"/elsewhere/tmp"')
    files["fstab"] += b"UUID=7a1b-2c3d /boot/efi vfat umask=0077 0 1\n"
    lay = build_layout(files, client=None, captured_at="t", root="/mnt/demo")
    esp = next(f for f in lay.filesystems if f.fstype == "vfat")
    assert esp.mountpoint == "/boot/efi" and esp.root is None
    assert lay.boot.mode is BootMode.UEFI and lay.boot.esp == "/boot/efi"
    assert any("from fstab" in w for w in lay.warnings)


def test_a_server_backing_itself_up_leaves_its_backup_disk_out() -> None:
    from rescue.capture.collect import disks_to_skip
    from rescue.layout import Mount, parse_lsblk

    devices = parse_lsblk(json.dumps({"blockdevices": [
        {"name": "sda", "type": "disk", "size": 10, "children": [{"name": "sda1", "type": "part", "size": 5}]},
        {"name": "sdb", "type": "disk", "size": 20, "children": [{"name": "sdb2", "type": "part", "size": 15}]},
    ]}))
    mounts = [Mount("/", "/dev/sda1", "ext4"), Mount("/backup", "/dev/sdb2", "ext4")]
    skip = disks_to_skip(devices, mounts, ["/backup/dirvish/server-root/2026-1126-0300"])
    assert list(skip) == ["/dev/sdb"] and "holds the backup" in skip["/dev/sdb"]
    # a bank on the machine's own root disk: that disk is the machine, it stays
    assert disks_to_skip(devices, mounts, ["/srv/bank/v/img"]) == {}


def test_newest_layout_comes_from_the_newest_image_that_has_one(tmp_path: Path) -> None:
    import dataclasses

    from rescue.backups.model import Image, ImageStatus, SourceKind
    from rescue.layout.legacy import newest_layout

    def image(name: str, created: str | None, with_layout: bool) -> Image:
        d = tmp_path / "bank" / "root" / name
        (d / "tree").mkdir(parents=True)
        if with_layout:
            (d / "rescue").mkdir()
            lay = Layout.loads((DEMO / "layout.json").read_text())
            (d / "rescue" / "layout.json").write_text(dataclasses.replace(lay, captured_at=name).dumps())
        return Image(SourceKind.DIRVISH, tmp_path / "bank", "root", name, d, d / "tree", "demo", "/",
                     ImageStatus.SUCCESS, created=created)

    older = image("2026-1124-0300", "2026-11-24T03:00:00", True)
    newer = image("2026-1125-0300", "2026-11-25T03:00:00", True)
    without = image("2026-1126-0300", "2026-11-26T03:00:00", False)
    assert newest_layout([older, without, newer]).captured_at == "2026-1125-0300"
    assert newest_layout([without]) is None
