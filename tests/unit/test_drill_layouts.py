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
    (["--compare-tar", "12"], "--compare-tar 12: the tar pipe runs 1 to 9 times"),
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


def test_the_luks_lvm_machine_formats_opens_and_puts_its_pv_in_the_container() -> None:
    lay = layouts.LAYOUTS["luks-lvm"]
    assert lay.built_in is layouts.BuiltIn.VM and lay.firmwares == (Firmware.BIOS, Firmware.UEFI)
    vols = layouts.volumes(lay, Firmware.BIOS, new_uuid=_counter())
    uuid = layouts.luks_uuid(lay, "demo-crypt", vols)
    assert len(uuid) == 36 and uuid == layouts.luks_uuid(lay, "demo-crypt", vols)  # chosen, not random
    lines = layouts.build_commands(lay, Firmware.BIOS, {"vda": "/dev/vdb"}, vols, keys="/k")
    assert "'size=256MiB, type=L' 'type=L'" in lines[0]
    fmt = lines.index(f"cryptsetup luksFormat -q --type luks2 --uuid {uuid} --pbkdf pbkdf2 --iter-time 200 "
                      "--key-file /k/demo-crypt.key /dev/vdb2")
    assert lines[fmt + 1] == ("cryptsetup luksAddKey -q --pbkdf pbkdf2 --iter-time 200 --key-file /k/demo-crypt.key "
                              "/dev/vdb2 /k/demo-crypt-recovery.key")  # two keyslots: the restore keeps both
    assert lines[fmt + 2] == "cryptsetup open --type luks --key-file /k/demo-crypt.key /dev/vdb2 demo-crypt"
    assert lines[fmt + 3:fmt + 5] == ["pvcreate -q -ff -y /dev/mapper/demo-crypt", "vgcreate -q demo /dev/mapper/demo-crypt"]
    assert not any("passphrase" in line for line in lines)  # keys are files, never words on a command line
    assert layouts.crypttab(lay, vols).splitlines()[1] == f"demo-crypt UUID={uuid} none luks,discard"
    assert layouts.needs_passphrase(lay)
    vols_by_mp = {v.mountpoint: v for v in vols}
    assert vols_by_mp["/"].fstab_spec == "/dev/mapper/demo-root"
    uefi = layouts.build_commands(lay, Firmware.UEFI, {"vda": "/dev/vdb"}, layouts.volumes(lay, Firmware.UEFI), keys="/k")
    assert any(line.endswith("/dev/vdb3 demo-crypt") for line in uefi)  # behind the ESP and /boot


def test_the_luks_keyfile_machine_opens_srv_by_its_keyfile_from_crypttab() -> None:
    lay = layouts.LAYOUTS["luks-keyfile"]
    vols = layouts.volumes(lay, Firmware.BIOS, new_uuid=_counter())
    srv = next(v for v in vols if v.mountpoint == "/srv")
    assert srv.device == "/dev/mapper/srv-crypt" and srv.fstab_spec == "/dev/mapper/srv-crypt" and srv.vault == "srv"
    lines = layouts.build_commands(lay, Firmware.BIOS, {"vda": "/dev/vdb"}, vols, keys="/k")
    uuid = layouts.luks_uuid(lay, "srv-crypt", vols)
    assert (f"cryptsetup luksFormat -q --type luks1 --uuid {uuid} --iter-time 200 --key-file /k/srv-crypt.key "
            "/dev/vdb3") in lines
    assert lines[-1] == f"mkfs.ext4 -q -F -L demo-srv -U {srv.uuid} /dev/mapper/srv-crypt"
    assert layouts.crypttab(lay, vols).splitlines()[1] == f"srv-crypt UUID={uuid} /etc/keys/srv.key luks"
    assert not layouts.needs_passphrase(lay)
    assert layouts.crypttab(layouts.LAYOUTS["lvm"], vols) is None


def test_the_luks_build_script_remakes_the_initramfs_on_the_real_devices_and_closes_the_container() -> None:
    from rescue.drill.layered import BUILT, build_script

    lay = layouts.LAYOUTS["luks-lvm"]
    vols = layouts.volumes(lay, Firmware.BIOS, new_uuid=_counter())
    script = build_script(lay, Firmware.BIOS, vols, {"vda": "/dev/vdb"}, "/run/xfer", "/m").splitlines()
    chroot = script.index("chroot /m update-initramfs -u -k all")
    assert script[chroot - 4:chroot] == [f"mount --bind /{d} /m/{d}" for d in ("proc", "sys", "dev", "run")]
    assert script[chroot + 6] == "mkdir -p /run/xfer/initrd && cp /m/boot/initrd.img-* /run/xfer/initrd/"
    assert chroot > max(i for i, line in enumerate(script) if line.startswith("tar "))
    assert chroot < script.index(next(line for line in script if line.startswith("rescue capture")))
    assert script[-3:] == ["vgchange -q -an demo", "cryptsetup close demo-crypt", f"echo {BUILT}"]
    other = layouts.LAYOUTS["luks-keyfile"]
    keyfile = build_script(other, Firmware.BIOS, layouts.volumes(other, Firmware.BIOS), {"vda": "/dev/vdb"},
                           "/run/xfer", "/m")
    assert "update-initramfs" not in keyfile  # / is not in a container: the initramfs opens nothing


def test_the_keys_are_files_of_their_own_and_the_keyfile_is_in_the_machines_root(tmp_path: Path) -> None:
    from rescue.drill.layered import PASSPHRASE, make_keys

    keys = make_keys(layouts.LAYOUTS["luks-keyfile"], tmp_path)
    assert oct(keys.stat().st_mode & 0o777) == "0o700"
    assert sorted(p.name for p in keys.iterdir()) == ["srv-crypt-new.key", "srv-crypt-recovery.key", "srv-crypt.key"]
    assert all(oct(p.stat().st_mode & 0o777) == "0o600" for p in keys.iterdir())
    assert len((keys / "srv-crypt.key").read_bytes()) == 64
    make_keys(layouts.LAYOUTS["luks-lvm"], tmp_path)
    assert (keys / "demo-crypt.key").read_bytes() == PASSPHRASE  # typed at boot: no newline in the file


def test_the_luks_checks_read_uuid_version_keyslots_and_mount() -> None:
    import dataclasses

    from rescue.drill.checks import check_restored, parse_console
    from rescue.drill.demo_disk import DemoFacts
    from rescue.drill.report import Phase

    facts = DemoFacts("bios", "demo", "dos", 1, (), "", "", (),
                      luks=("srv-crypt 6E8B3189-e1be-4b56-ac12-4fcac3e150ad 1 2 /srv",))
    console = "[  5.1] x DEMO-LUKS srv-crypt 6e8b3189-e1be-4b56-ac12-4fcac3e150ad 1 2 /srv\n"
    assert parse_console(console).luks == {"srv-crypt": ("6e8b3189-e1be-4b56-ac12-4fcac3e150ad", "1", "2", "/srv")}

    def verdict(text: str, f: DemoFacts = facts) -> dict[str, bool]:
        ph = Phase("boot")
        check_restored(text, f, ph, data=False)
        return {c.what: c.ok for c in ph.checks if "LUKS" in c.what or "mounted from" in c.what}

    assert list(verdict(console).values()) == [True, True, True]
    assert verdict(console.replace(" 1 2 ", " 1 1 ")) == {
        "LUKS srv-crypt open, its UUID as captured": True, "LUKS srv-crypt: LUKS1, 2 keyslot(s)": False,
        "/srv mounted from /dev/mapper/srv-crypt": True}
    assert not any(verdict("").values())
    new_key = dataclasses.replace(facts, luks=("demo-crypt 6e8b3189-e1be-4b56-ac12-4fcac3e150ad 2 1 -",))
    got = verdict("DEMO-LUKS demo-crypt 6e8b3189-e1be-4b56-ac12-4fcac3e150ad 2 1 -\n", new_key)
    assert got == {"LUKS demo-crypt open, its UUID as captured": True, "LUKS demo-crypt: LUKS2, 1 keyslot(s)": True}


def test_the_new_key_drill_expects_one_keyslot_and_types_the_new_passphrase(tmp_path: Path) -> None:
    from rescue.drill.demo import _luks_restore_keys
    from rescue.drill.demo_disk import DemoFacts

    lay = layouts.LAYOUTS["luks-lvm"]
    facts = DemoFacts("bios", "demo", "dos", 1, (), "", "", (), luks=("demo-crypt U 2 2 -",),
                      passphrase_file=str(tmp_path / "demo-crypt.key"))
    kept, same = _luks_restore_keys(lay, tmp_path, facts, new_key=False)
    assert kept == (("demo-crypt", tmp_path / "demo-crypt.key"),) and same == facts
    new, after = _luks_restore_keys(lay, tmp_path, facts, new_key=True)
    assert new == (("demo-crypt", tmp_path / "demo-crypt-new.key"),)
    assert after.luks == ("demo-crypt U 2 1 -",) and after.passphrase_file == str(tmp_path / "demo-crypt-new.key")


def test_luks_new_key_is_refused_for_a_machine_opened_by_a_keyfile(capsys, tmp_path: Path) -> None:
    code = main(["drill", "--demo", "--layout", "luks-keyfile", "--luks-new-key", "--workdir", str(tmp_path / "w")])
    assert code == 1 and "--luks-new-key goes with" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()
