"""The demo drill's layout table, `--layout list`, and the refusal of a layout it cannot build."""

from __future__ import annotations

from pathlib import Path

import pytest

from rescue.cli import main
from rescue.drill import layouts
from rescue.errors import RescueError
from rescue.qemu import Firmware


def test_plain_is_the_default_and_is_what_the_drill_has_always_built() -> None:
    plain = layouts.layout_of(None)
    assert plain.name == layouts.DEFAULT == "plain"
    assert plain.built_in is layouts.BuiltIn.HOST and not plain.layers
    assert [p.mountpoint for p in plain.disks[0].parts] == ["/boot/efi", "/", "/home", None, "/tmp"]
    assert plain.firmwares == (Firmware.BIOS, Firmware.UEFI)


def test_every_layout_is_well_formed() -> None:
    for name, lay in layouts.LAYOUTS.items():
        assert name == lay.name and lay.summary and lay.disks and lay.firmwares
        assert name != layouts.LIST
        for disk in lay.disks:
            assert sum(1 for p in disk.parts if p.mib == 0) <= 1, f"{name}: one partition takes the rest"
        if lay.layers:
            assert lay.built_in is layouts.BuiltIn.VM, f"{name}: the host kernel has no device-mapper nor md"


def test_layout_list_prints_one_line_per_layout_and_writes_nothing(capsys, tmp_path: Path) -> None:
    code = main(["drill", "--demo", "--layout", "list", "--workdir", str(tmp_path / "w")])
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert [line.split()[0] for line in out] == list(layouts.LAYOUTS)
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("argv, said", [
    (["--layout", "zfs"], "no demo layout called 'zfs'"),
    (["--layout", "planned"], "the drill cannot build it yet"),
    (["--layout", "plain", "--bank", "/srv/bank", "--client", "web1"], "--layout goes with the demo drill"),
    (["--layout", "lvm", "--onto-one-disk"], "--onto-one-disk goes with a machine of several disks"),
])
def test_a_bad_layout_is_refused_before_anything_is_written(argv, said, capsys, tmp_path: Path, monkeypatch) -> None:
    plain = layouts.LAYOUTS["plain"]
    monkeypatch.setitem(layouts.LAYOUTS, "planned", layouts.Layout("planned", "not yet", plain.disks, ready=False))
    code = main(["drill", *argv, "--workdir", str(tmp_path / "w")])
    err = capsys.readouterr().err
    assert code == 1
    assert said in err
    assert not (tmp_path / "w").exists()


def test_the_refusal_names_the_choices() -> None:
    with pytest.raises(RescueError) as e:
        layouts.layout_of("zfs")
    assert "plain" in str(e.value.fix) and "--layout list" in str(e.value.fix)


def test_firmware_narrows_the_layouts_list() -> None:
    plain = layouts.layout_of("plain")
    assert layouts.firmwares_for(plain, None) == (Firmware.BIOS, Firmware.UEFI)
    assert layouts.firmwares_for(plain, "uefi") == (Firmware.UEFI,)
    bios_only = layouts.Layout("x", "x", plain.disks, firmwares=(Firmware.BIOS,))
    with pytest.raises(RescueError, match="not drilled with uefi"):
        layouts.firmwares_for(bios_only, "uefi")


def _counter():
    n = iter(range(1, 100))
    return lambda: f"00000000-0000-4000-8000-{next(n):012d}"


def test_the_lvm_machine_is_built_in_the_vm_with_a_pv_holding_root_swap_and_home() -> None:
    lvm = layouts.LAYOUTS["lvm"]
    assert lvm.ready and lvm.built_in is layouts.BuiltIn.VM
    vols = layouts.volumes(lvm, Firmware.BIOS, new_uuid=_counter())
    lines = layouts.build_commands(lvm, Firmware.BIOS, {"vda": "/dev/vdb"}, vols)
    assert lines[0].endswith("| sfdisk -q /dev/vdb") and "'label: dos'" in lines[0]
    assert "'size=256MiB, type=L' 'type=V'" in lines[0]
    assert "mkfs.ext2 -q -F -L demo-boot -U 00000000-0000-4000-8000-000000000001 /dev/vdb1" in lines
    assert lines[lines.index("pvcreate -q -ff -y /dev/vdb2"):] == [
        "pvcreate -q -ff -y /dev/vdb2", "vgcreate -q demo /dev/vdb2",
        "lvcreate -q -y -n root -L 900M demo",
        "mkfs.ext4 -q -F -L demo-root -U 00000000-0000-4000-8000-000000000002 /dev/mapper/demo-root",
        "lvcreate -q -y -n swap -L 128M demo",
        "mkswap -L demo-swap -U 00000000-0000-4000-8000-000000000003 /dev/mapper/demo-swap",
        "lvcreate -q -y -n home -l 100%FREE demo",
        "mkfs.xfs -q -f -L demo-home -m uuid=00000000-0000-4000-8000-000000000004 /dev/mapper/demo-home",
    ]
    uefi_vols = layouts.volumes(lvm, Firmware.UEFI, new_uuid=_counter())
    uefi = layouts.build_commands(lvm, Firmware.UEFI, {"vda": "/dev/vdb"}, uefi_vols)
    assert "'label: gpt'" in uefi[0] and "mkfs.vfat -n DEMO-ESP -i 00000000 /dev/vdb1" in uefi
    assert uefi_vols[0].uuid == "0000-0000"  # a FAT volume id, as blkid shows it
    assert "pvcreate -q -ff -y /dev/vdb3" in uefi


def test_the_machines_fstab_names_lvs_by_mapper_name_and_partitions_by_uuid() -> None:
    vols = {v.mountpoint: v for v in layouts.volumes(layouts.LAYOUTS["lvm"], Firmware.UEFI, new_uuid=_counter())}
    assert vols["/"].fstab_spec == "/dev/mapper/demo-root" and vols["/"].vault == "root"
    assert vols["/boot"].fstab_spec == f"UUID={vols['/boot'].uuid}" and vols["/boot"].vault == "boot"
    assert vols["/boot/efi"].vault is None  # the ESP is made again by the restore, not backed up
    assert vols[None].content == "swap" and vols[None].vault is None
    assert layouts._mapper("my-vg", "lv_1") == "/dev/mapper/my--vg-lv_1"


def test_the_files_are_unpacked_parent_first_each_onto_its_own_filesystem() -> None:
    lvm = layouts.LAYOUTS["lvm"]
    vols = layouts.volumes(lvm, Firmware.UEFI, new_uuid=_counter())
    lines = layouts.fill_commands(vols, {"vda": "/dev/vdb"}, "/run/demo", "/x")
    mounts = [line.split(" && mount ")[1] for line in lines if " && mount " in line]
    assert mounts == ["/dev/mapper/demo-root /run/demo", "/dev/vdb2 /run/demo/boot",
                      "/dev/mapper/demo-home /run/demo/home", "/dev/vdb1 /run/demo/boot/efi"]
    root_at = next(i for i, line in enumerate(lines) if line.endswith("/dev/mapper/demo-root /run/demo"))
    assert lines[root_at + 1].startswith("tar -C /run/demo ") and lines[root_at + 1].endswith("/x/root.tar")
    assert not any("efi.tar" in line or "boot-efi" in line for line in lines)


def test_the_build_script_captures_the_machine_and_lets_its_vg_go() -> None:
    from rescue.drill.layered import BUILT, build_script

    lvm = layouts.LAYOUTS["lvm"]
    vols = layouts.volumes(lvm, Firmware.BIOS, new_uuid=_counter())
    script = build_script(lvm, Firmware.BIOS, vols, {"vda": "/dev/vdb"}, "/run/xfer", "/run/demo").splitlines()
    assert script[2] == "set -ex"  # the first failing command stops the build
    capture = next(line for line in script if line.startswith("rescue capture"))
    assert "--out /run/xfer/capture --disk /dev/vdb --root /run/demo" in capture
    assert script.index(capture) > max(i for i, line in enumerate(script) if line.startswith("tar "))
    assert script[-2:] == ["vgchange -q -an demo", f"echo {BUILT}"]


def test_each_vault_leaves_out_the_files_of_the_filesystems_mounted_below_it(tmp_path: Path) -> None:
    from rescue.drill.layered import Trees

    vols = layouts.volumes(layouts.LAYOUTS["lvm"], Firmware.UEFI, new_uuid=_counter())
    trees = Trees(tmp_path / "machine", tuple(v for v in vols if v.vault))
    assert [v.mountpoint for v in trees.filesystems] == ["/boot", "/", "/home"]
    assert trees.below("/") == ("boot", "home") and trees.below("/boot") == () and trees.below("/home") == ()
    assert trees.excludes() == ("/boot/*", "/home/*")  # the ESP has no vault: its files are the boot vault's
    assert trees.dir_of("/home") == tmp_path / "machine" / "home" and trees.dir_of("/") == tmp_path / "machine"


def test_the_raid1_lvm_machine_mirrors_boot_and_the_pv_across_two_disks() -> None:
    lay = layouts.LAYOUTS["raid1-lvm"]
    vols = layouts.volumes(lay, Firmware.BIOS, new_uuid=_counter())
    lines = layouts.build_commands(lay, Firmware.BIOS, {"vda": "/dev/vdb", "vdb": "/dev/vdc"}, vols)
    creates = [line for line in lines if line.startswith("mdadm --create")]
    assert [c.split()[2] for c in creates] == ["/dev/md/boot", "/dev/md/pv"]
    assert creates[0].endswith("/dev/vdb1 /dev/vdc1") and creates[1].endswith("/dev/vdb2 /dev/vdc2")
    uuid = layouts.md_uuid(lay, "pv", vols)
    assert f"--uuid={uuid}" in creates[1] and len(uuid.split(":")) == 4
    assert lines.index("pvcreate -q -ff -y /dev/md/pv") > lines.index(creates[1])
    boot = next(v for v in vols if v.mountpoint == "/boot")
    assert boot.device == "/dev/md/boot" and boot.fstab_spec == f"UUID={boot.uuid}"
    conf = layouts.mdadm_conf(lay, vols)
    assert f"ARRAY /dev/md/pv metadata=1.2 UUID={uuid} name=demo:pv" in conf
    assert layouts.mdadm_conf(layouts.LAYOUTS["lvm"], vols) is None


def test_the_raid1_lvm_machine_under_uefi_has_an_esp_on_each_disk_and_mounts_only_the_first() -> None:
    """As Debian admins do it: the first ESP at /boot/efi with nofail, the second a hook's copy
    in no fstab line; the builder makes both, each with its chosen volume id and label."""
    from rescue.drill.demo_disk import fstab_text

    lay = layouts.LAYOUTS["raid1-lvm"]
    assert layouts.firmwares_for(lay, "uefi") == (Firmware.UEFI,)
    vols = layouts.volumes(lay, Firmware.UEFI)  # random: the counter's would give both ESPs one volume id
    esps = [v for v in vols if v.content == "vfat"]
    assert [(v.label, v.device, v.mountpoint) for v in esps] == [
        ("DEMO-ESP", "vda1", "/boot/efi"), ("DEMO-ESP2", "vdb1", None)]
    lines = layouts.build_commands(lay, Firmware.UEFI, {"vda": "/dev/vdb", "vdb": "/dev/vdc"}, vols)
    tables = [line for line in lines if "| sfdisk" in line]
    assert all("'label: gpt' 'size=64MiB, type=U' 'size=256MiB, type=R' 'type=R'" in t for t in tables)
    assert f"mkfs.vfat -n DEMO-ESP -i {esps[0].uuid.replace('-', '')} /dev/vdb1" in lines
    assert f"mkfs.vfat -n DEMO-ESP2 -i {esps[1].uuid.replace('-', '')} /dev/vdc1" in lines
    creates = [line for line in lines if line.startswith("mdadm --create")]
    assert creates[0].endswith("/dev/vdb2 /dev/vdc2") and creates[1].endswith("/dev/vdb3 /dev/vdc3")
    fills = layouts.fill_commands(vols, {"vda": "/dev/vdb", "vdb": "/dev/vdc"}, "/run/demo", "/x")
    assert not any("/dev/vdc1" in line for line in fills)  # the copy is never mounted
    fstab = fstab_text((v.fstab_spec, v.mountpoint, v.content, v.options)
                       for v in vols if v.mountpoint or v.content == "swap")
    assert f"UUID={esps[0].uuid} /boot/efi vfat umask=0077,nofail," in fstab
    assert esps[1].uuid not in fstab and "None" not in fstab
    plain = layouts.volumes(layouts.LAYOUTS["plain"], Firmware.UEFI, new_uuid=_counter())
    assert next(v for v in plain if v.content == "vfat").options == ""  # one disk: its ESP is needed


def test_the_restored_arrays_are_checked_whole_or_degraded_as_the_drill_restored_them() -> None:
    from rescue.drill.checks import check_restored
    from rescue.drill.demo_disk import DemoFacts
    from rescue.drill.report import Phase

    facts = DemoFacts("bios", "demo", "dos", 1, (), "", "", (), arrays=("demo:pv aa:bb:cc:dd 2",))
    whole = "DEMO-MD demo:pv aa:bb:cc:dd clean 0 2\n"
    half = "DEMO-MD demo:pv aa:bb:cc:dd clean 1 2\n"

    def verdict(console: str, degraded: int) -> dict[str, bool]:
        ph = Phase("boot")
        import dataclasses
        check_restored(console, dataclasses.replace(facts, arrays_degraded=degraded), ph, data=False)
        return {c.what: c.ok for c in ph.checks if c.what.startswith("array ")}

    assert all(verdict(whole, 0).values())
    assert not all(verdict(half, 0).values())  # a mirror restored onto two disks must not run degraded
    assert all(verdict(half, 1).values())
    assert not any(verdict("", 0).values())  # an array that is not there fails both checks


def test_the_btrfs_machine_mounts_its_subvolumes_by_name_and_makes_its_nocow_folder_first() -> None:
    lay = layouts.LAYOUTS["btrfs-subvol"]
    vols = layouts.volumes(lay, Firmware.UEFI, new_uuid=_counter())
    subs = [v for v in vols if v.subvol]
    assert [(v.mountpoint, v.subvol) for v in subs] == [("/", "@"), ("/home", "@home")]
    assert len({v.uuid for v in subs}) == 1 and subs[0].options == "subvol=@,compress=zstd"
    lines = layouts.build_commands(lay, Firmware.UEFI, {"vda": "/dev/vdb"}, vols)
    assert f"mkfs.btrfs -q -f -L demo-btrfs -U {subs[0].uuid} /dev/vdb3" in lines
    assert "btrfs -q subvolume create /run/btrfs-top/@home" in lines
    fill = layouts.fill_commands(vols, {"vda": "/dev/vdb"}, "/m", "/x", lay.nocow)
    assert fill[0] == "mkdir -p /m && mount -o subvol=@ /dev/vdb3 /m"
    assert fill[1] == "mkdir -p /m/var/lib/demo-nocow && chattr +C /m/var/lib/demo-nocow"
    assert fill[2].endswith("/x/root.tar")  # the files come after the flag, and take it


def test_the_btrfs_checks_read_subvolumes_default_options_and_nocow() -> None:
    import dataclasses

    from rescue.drill.checks import check_restored
    from rescue.drill.demo_disk import DemoFacts
    from rescue.drill.report import Phase

    facts = DemoFacts("uefi", "demo", "gpt", 1, (), "", "", (), subvolumes=("@", "@home"), btrfs_default="5",
                      nocow=("/var/lib/demo-nocow",), mount_options=("/ subvol=/@", "/ compress=zstd"))
    good = ("DEMO-SUBVOL @\nDEMO-SUBVOL @home\nDEMO-SUBVOL-DEFAULT 5\n"
            "DEMO-OPTS / rw,relatime,compress=zstd:3,space_cache=v2,subvolid=256,subvol=/@\n"
            "DEMO-NOCOW /var/lib/demo-nocow yes\n")

    def failed(console: str, f: DemoFacts = facts) -> set[str]:
        ph = Phase("boot")
        check_restored(console, f, ph, data=False)
        return {c.what for c in ph.checks if not c.ok and ("btrfs" in c.what or "mounted with" in c.what or "nocow" in c.what)}

    assert failed(good) == set()
    assert failed(good.replace("DEMO-SUBVOL @home\n", "")) == {"btrfs subvolume @home as captured"}
    assert failed(good.replace("demo-nocow yes", "demo-nocow no")) == {"/var/lib/demo-nocow keeps chattr +C (nocow)"}
    assert failed(good.replace("compress=zstd:3,", "")) == {"/ mounted with compress=zstd"}
    assert failed(good, dataclasses.replace(facts, btrfs_default="256")) == {"btrfs default subvolume as captured"}
