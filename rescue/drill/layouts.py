"""The demo machines the drill can build, one declarative entry per storage layout.

A layout says what the demo machine's storage looks like (disks, partitions,
the layers on top of them: md, LVM, LUKS, btrfs subvolumes), which firmwares
it is drilled with, and where it is built: on the host (plain partitions; the
host kernel has no device-mapper and no md) or inside a rescue VM boot
(anything layered). `plain` is the machine the drill has always built.

Adding a layout is adding an entry to LAYOUTS; a layout whose builder does
not exist yet is listed as planned and refused by `--layout` before anything
is written.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum

from rescue.errors import RescueError
from rescue.qemu import Firmware

DEFAULT = "plain"
LIST = "list"  # `--layout list` prints the table instead of drilling


class BuiltIn(StrEnum):
    HOST = "host"  # loop devices and mkfs on the build host
    VM = "vm"      # inside a rescue VM boot (device-mapper, md)


@dataclass(frozen=True)
class Part:
    """One partition of a demo disk: what sits on it (a filesystem, swap, or a layer's member)."""
    content: str              # ext4, xfs, vfat, swap, ext2, or "pv", "md", "luks"
    mib: int                  # 0: the rest of the disk
    mountpoint: str | None = None
    label: str | None = None  # the filesystem's label; for a layer's member, the name layers use for it
    uefi_only: bool = False   # the ESP
    options: str = ""         # fstab options beyond the defaults ("nofail")


@dataclass(frozen=True)
class Disk:
    name: str                 # the demo machine's device name (vda, vdb)
    parts: tuple[Part, ...]


@dataclass(frozen=True)
class Layer:
    """A layer above the partitions: an md array, a VG and its LVs, a LUKS mapping, btrfs subvolumes."""
    kind: str                 # "md", "lvm", "luks", "btrfs"
    name: str                 # md device, VG name, mapping name, or btrfs label
    members: tuple[str, ...]  # the labels of member partitions (or the names of lower layers)
    volumes: tuple[tuple[str, str, int, str | None], ...] = ()  # (name, content, MiB (0: rest), mountpoint)
    luks_type: str = "luks2"  # a "luks" layer: luks1 or luks2
    # a "luks" layer opened at boot by this file in the machine's root (crypttab's key field);
    # None: by a passphrase typed at the initramfs's prompt
    keyfile: str | None = None


@dataclass(frozen=True)
class Layout:
    name: str
    summary: str
    disks: tuple[Disk, ...]
    layers: tuple[Layer, ...] = ()
    firmwares: tuple[Firmware, ...] = (Firmware.BIOS, Firmware.UEFI)
    built_in: BuiltIn = BuiltIn.HOST
    ready: bool = True        # False: declared, its builder is not written yet
    nocow: tuple[str, ...] = ()  # folders made with chattr +C before their files (btrfs)

    def line(self) -> str:
        fws = "+".join(fw.value for fw in self.firmwares)
        state = "" if self.ready else "  (planned: not drillable yet)"
        return f"{self.name:<13} {fws:<10} {self.summary}{state}"


_ESP = Part("vfat", 64, "/boot/efi", "DEMO-ESP", uefi_only=True)
# Mirrored disks under UEFI, as Debian admins set them up: an ESP on each disk (the installer
# puts none on md; one on md metadata 1.0 boots, but firmware writes one half behind md's
# back), the first mounted at /boot/efi with nofail (the machine still comes up when its
# disk died), the second a copy a hook keeps in sync, in no fstab line: the firmware reads
# it, Linux needs it only to refresh the copy. The restore gives it a copy of the first.
_MIRRORED_ESPS = (dataclasses.replace(_ESP, options="nofail"), Part("vfat", 64, None, "DEMO-ESP2", uefi_only=True))

# The Debian installer's guided LVM: root, swap and home LVs in VG demo (lvm, raid1-lvm, luks-lvm)
_DEMO_LVS = (
    ("root", "ext4", 900, "/"),
    ("swap", "swap", 128, None),
    ("home", "xfs", 0, "/home"),
)

LAYOUTS: dict[str, Layout] = {lay.name: lay for lay in (
    Layout(
        "plain", "partitions only: / ext4, /home xfs, swap, /tmp ext4 (built on the host)",
        disks=(Disk("vda", (
            _ESP,
            Part("ext4", 900, "/", "demo-root"),
            Part("xfs", 320, "/home", "demo-home"),
            Part("swap", 128, None, "demo-swap"),
            Part("ext4", 0, "/tmp", "demo-tmp"),
        )),),
    ),
    Layout(
        "lvm", "ext2 /boot and one PV: VG demo with root, swap and home LVs (built in a rescue VM)",
        disks=(Disk("vda", (
            _ESP,
            Part("ext2", 256, "/boot", "demo-boot"),
            Part("pv", 0, None, "demo-pv"),
        )),),
        layers=(Layer("lvm", "demo", ("demo-pv",), _DEMO_LVS),),
        firmwares=(Firmware.BIOS, Firmware.UEFI),
        built_in=BuiltIn.VM,
    ),
    Layout(
        "raid1-lvm", "two disks, md RAID1 for ext2 /boot and for a PV: VG demo with root, swap and home LVs",
        disks=tuple(Disk(name, (
            esp,
            Part("md", 256, None, f"boot-{half}"),
            Part("md", 0, None, f"pv-{half}"),
        )) for name, half, esp in (("vda", "a", _MIRRORED_ESPS[0]), ("vdb", "b", _MIRRORED_ESPS[1]))),
        layers=(
            Layer("md", "boot", ("boot-a", "boot-b"), (("boot", "ext2", 0, "/boot"),)),
            Layer("md", "pv", ("pv-a", "pv-b"), (("pv", "pv", 0, None),)),
            Layer("lvm", "demo", ("md:pv",), _DEMO_LVS),
        ),
        firmwares=(Firmware.BIOS, Firmware.UEFI),
        built_in=BuiltIn.VM,
    ),
    Layout(
        "btrfs-subvol", "one btrfs partition with subvolumes @ (/, compress=zstd) and @home, a nocow folder",
        disks=(Disk("vda", (
            _ESP,
            Part("swap", 128, None, "demo-swap"),
            Part("btrfs", 0, None, "demo-btrfs"),
        )),),
        layers=(Layer("btrfs", "demo-btrfs", ("demo-btrfs",), (
            ("@", "btrfs", 0, "/"),
            ("@home", "btrfs", 0, "/home"),
        )),),
        firmwares=(Firmware.UEFI,),
        built_in=BuiltIn.VM,  # the host can make btrfs; the builder makes every layered machine alike
        nocow=("/var/lib/demo-nocow",),
    ),
    Layout(
        "luks-lvm", "ext2 /boot and a LUKS2 container holding one PV: VG demo with root, swap and home "
                    "LVs; the passphrase is typed at boot",
        disks=(Disk("vda", (
            _ESP,
            Part("ext2", 256, "/boot", "demo-boot"),
            Part("luks", 0, None, "demo-luks"),
        )),),
        layers=(
            Layer("luks", "demo-crypt", ("demo-luks",), (("pv", "pv", 0, None),)),
            Layer("lvm", "demo", ("luks:demo-crypt",), _DEMO_LVS),
        ),
        firmwares=(Firmware.BIOS, Firmware.UEFI),
        built_in=BuiltIn.VM,
    ),
    Layout(
        "luks-keyfile", "/ ext4 and swap; /srv ext4 on LUKS1, opened at boot by a keyfile named in crypttab",
        disks=(Disk("vda", (
            Part("ext4", 900, "/", "demo-root"),
            Part("swap", 128, None, "demo-swap"),
            Part("luks", 0, None, "srv-luks"),
        )),),
        layers=(Layer("luks", "srv-crypt", ("srv-luks",), (("srv", "ext4", 0, "/srv"),),
                      luks_type="luks1", keyfile="/etc/keys/srv.key"),),
        firmwares=(Firmware.BIOS,),
        built_in=BuiltIn.VM,
    ),
    Layout(
        "two-disks", "swap and / ext4 on the first disk, /srv xfs on the second, each with its own table",
        disks=(
            Disk("vda", (Part("swap", 128, None, "demo-swap"), Part("ext4", 0, "/", "demo-root"))),
            Disk("vdb", (Part("xfs", 0, "/srv", "demo-srv"),)),
        ),
        firmwares=(Firmware.BIOS,),
        built_in=BuiltIn.VM,  # two disks at once: the builder VM has them; no layers to need it
    ),
)}


def render_list() -> str:
    return "\n".join(lay.line() for lay in LAYOUTS.values())


def layout_of(name: str | None) -> Layout:
    """The layout called NAME (the default without one), or a refusal that names the choices."""
    lay = LAYOUTS.get(name or DEFAULT)
    if lay is None:
        raise RescueError(f"no demo layout called {name!r}",
                          fix=f"choose one of: {', '.join(LAYOUTS)} (rescue drill --layout list)")
    if not lay.ready:
        raise RescueError(f"the demo layout {lay.name!r} is declared but the drill cannot build it yet",
                          fix=f"drill a ready layout: {', '.join(n for n, x in LAYOUTS.items() if x.ready)}")
    return lay


def firmwares_for(lay: Layout, arg: str | None) -> tuple[Firmware, ...]:
    """--firmware narrows the layout's own list; a firmware the layout is not drilled with is refused."""
    if arg is None:
        return lay.firmwares
    fw = Firmware(arg)
    if fw not in lay.firmwares:
        raise RescueError(f"the demo layout {lay.name!r} is not drilled with {fw.value}",
                          fix=f"use --firmware {' or '.join(f.value for f in lay.firmwares)}")
    return (fw,)


_SFDISK_TYPE = {"vfat": "U", "swap": "S", "pv": "V", "md": "R"}  # sfdisk's aliases; anything else L
# Each filesystem is made with the UUID the drill chose before the build, so the facts the
# restored machine must show are known before the machine exists.
_MKFS = {
    "ext2": "mkfs.ext2 -q -F -L {label} -U {uuid} {dev}",
    "ext4": "mkfs.ext4 -q -F -L {label} -U {uuid} {dev}",
    "xfs": "mkfs.xfs -q -f -L {label} -m uuid={uuid} {dev}",
    "vfat": "mkfs.vfat -n {label} -i {volid} {dev}",
    "swap": "mkswap -L {label} -U {uuid} {dev}",
}
FILESYSTEMS = frozenset(_MKFS)


@dataclass(frozen=True)
class Volume:
    """A filesystem or swap of a layout's machine, wherever it sits (a partition or an LV)."""

    label: str
    content: str              # ext2, ext4, xfs, vfat, swap
    mountpoint: str | None
    device: str               # the layout's name for it: vda2, or /dev/mapper/VG-LV
    uuid: str
    subvol: str | None = None  # a btrfs subvolume's path from the top level ("@home")
    more_options: str = ""     # the partition's own fstab options (Part.options)

    @property
    def options(self) -> str:
        """fstab options beyond the defaults: a subvolume mounted by name, compressed as Ubuntu does."""
        return f"subvol={self.subvol},compress=zstd" if self.subvol else self.more_options

    @property
    def fstab_spec(self) -> str:
        """As the Debian installer writes it: LVs by their mapper name, the rest by UUID."""
        return self.device if self.device.startswith("/dev/mapper/") else f"UUID={self.uuid}"

    @property
    def vault(self) -> str | None:
        """The dirvish vault that backs it up; none for swap, /tmp and the ESP (made again by a restore)."""
        if self.mountpoint is None or self.content == "vfat" or self.mountpoint == "/tmp":
            return None
        return "root" if self.mountpoint == "/" else self.mountpoint.strip("/").replace("/", "-")


def _mapper(vg: str, lv: str) -> str:
    return f"/dev/mapper/{vg.replace('-', '--')}-{lv.replace('-', '--')}"


def volumes(lay: Layout, firmware: Firmware, new_uuid=None) -> tuple[Volume, ...]:
    """Every filesystem and swap of the layout, each with its UUID chosen now (new_uuid: for tests)."""
    import uuid as _uuid

    make = new_uuid or (lambda: str(_uuid.uuid4()))
    out: list[Volume] = []
    for disk in lay.disks:
        for n, p in enumerate(parts_of(disk, firmware), start=1):
            if p.content in _MKFS:
                uid = make()
                if p.content == "vfat":  # a FAT volume id: 8 hex digits, shown as XXXX-XXXX
                    uid = uid.replace("-", "")[:8].upper()
                    uid = f"{uid[:4]}-{uid[4:]}"
                out.append(Volume(p.label or f"{disk.name}{n}", p.content, p.mountpoint, f"{disk.name}{n}", uid,
                                  more_options=p.options))
    devices = {p.label: f"{disk.name}{n}" for disk in lay.disks
               for n, p in enumerate(parts_of(disk, firmware), start=1) if p.label}
    for layer in lay.layers:
        if layer.kind == "btrfs":  # one filesystem, one UUID, a mount per subvolume
            uid = make()
            out += [Volume(layer.name, "btrfs", mp, devices[layer.members[0]], uid, subvol=name)
                    for name, _content, _mib, mp in layer.volumes]
            continue
        for name, content, _mib, mountpoint in layer.volumes:
            if content not in _MKFS:
                continue  # a layer's member (an array holding a PV)
            device = (f"/dev/md/{layer.name}" if layer.kind == "md" else f"/dev/mapper/{layer.name}"
                      if layer.kind == "luks" else _mapper(layer.name, name))
            out.append(Volume(f"{layer.name}-{name}" if layer.kind == "lvm" else f"demo-{name}", content,
                              mountpoint, device, make()))
    return tuple(out)


def md_uuid(lay: Layout, name: str, vols: tuple[Volume, ...]) -> str:
    """The array's UUID, in mdadm's form, derived from the volumes' chosen UUIDs (so it is
    chosen before the build like theirs, and the same in the build script and mdadm.conf)."""
    import hashlib

    digest = hashlib.sha256(("md:" + name + ":" + ",".join(v.uuid for v in vols)).encode()).hexdigest()[:32]
    return ":".join(digest[i:i + 8] for i in range(0, 32, 8))


def luks_uuid(lay: Layout, name: str, vols: tuple[Volume, ...]) -> str:
    """The container's LUKS UUID, derived like md_uuid: chosen before the build, the same in the
    build script, the machine's crypttab and the facts the restored machine must show."""
    import hashlib

    h = hashlib.sha256(("luks:" + name + ":" + ",".join(v.uuid for v in vols)).encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:32]}"


def luks_layers(lay: Layout) -> tuple[Layer, ...]:
    return tuple(x for x in lay.layers if x.kind == "luks")


def needs_passphrase(lay: Layout) -> bool:
    """A container the initramfs opens by a passphrase typed at boot (root's, in the layouts here)."""
    return any(x.keyfile is None for x in luks_layers(lay))


def crypttab(lay: Layout, vols: tuple[Volume, ...]) -> str | None:
    """/etc/crypttab of the machine, as the Debian installer writes it; None without containers."""
    layers = luks_layers(lay)
    if not layers:
        return None
    lines = ["# <target name> <source device> <key file> <options>"]
    lines += [f"{x.name} UUID={luks_uuid(lay, x.name, vols)} {x.keyfile or 'none'} "
              f"luks{'' if x.keyfile else ',discard'}" for x in layers]
    return "\n".join(lines) + "\n"


def mdadm_conf(lay: Layout, vols: tuple[Volume, ...]) -> str | None:
    """/etc/mdadm/mdadm.conf of the machine, as mdadm --detail --scan writes it; None without arrays."""
    arrays = [layer for layer in lay.layers if layer.kind == "md"]
    if not arrays:
        return None
    lines = ["# mdadm.conf of the rescue drill's demo machine", "HOMEHOST <system>", "MAILADDR root"]
    lines += [f"ARRAY /dev/md/{a.name} metadata=1.2 UUID={md_uuid(lay, a.name, vols)} name=demo:{a.name}"
              for a in arrays]
    return "\n".join(lines) + "\n"


def parts_of(disk: Disk, firmware: Firmware) -> tuple[Part, ...]:
    return tuple(p for p in disk.parts if firmware is Firmware.UEFI or not p.uefi_only)


def _mkfs(vol: Volume, dev: str) -> str:
    return _MKFS[vol.content].format(label=vol.label, uuid=vol.uuid, volid=vol.uuid.replace("-", ""), dev=dev)


def build_commands(lay: Layout, firmware: Firmware, devices: dict[str, str],
                   vols: tuple[Volume, ...] | None = None, keys: str = "/run/xfer/keys") -> list[str]:
    """The shell lines that make the layout's storage inside a rescue VM boot.

    `devices` maps the layout's disk names to the guest's blank disks (vda -> /dev/vdb when
    the rescue disk boots as vda). Partitions first (dos for BIOS, gpt for UEFI), then their
    filesystems, then each layer in order with what sits on its volumes, each filesystem with
    its UUID from `vols` (volumes(): chosen before the build). A LUKS container is made with
    KEYS/NAME.key (the passphrase or keyfile that opens it at boot) and a second keyslot,
    KEYS/NAME-recovery.key, as a careful owner keeps one. Pure: tested in unit.
    """
    vols = vols if vols is not None else volumes(lay, firmware)
    by_device = {v.device: v for v in vols}
    lines: list[str] = []
    member: dict[str, str] = {}
    for disk in lay.disks:
        dev = devices[disk.name]
        parts = parts_of(disk, firmware)
        label = "gpt" if firmware is Firmware.UEFI else "dos"
        table = [f"label: {label}"] + [
            (f"size={p.mib}MiB, " if p.mib else "") + f"type={_SFDISK_TYPE.get(p.content, 'L')}" for p in parts]
        lines.append(f"printf '%s\\n' {' '.join(repr(t) for t in table)} | sfdisk -q {dev}")
        lines.append(f"udevadm settle; partx -u {dev} || true")
        for n, p in enumerate(parts, start=1):
            pdev = f"{dev}{n}"
            if p.content in _MKFS:
                lines.append(_mkfs(by_device[f"{disk.name}{n}"], pdev))
            elif p.label:
                member[p.label] = pdev
    for layer in lay.layers:
        if layer.kind == "btrfs":
            dev = member[layer.members[0]]
            fs = next(v for v in vols if v.label == layer.name)
            lines.append(f"mkfs.btrfs -q -f -L {layer.name} -U {fs.uuid} {dev}")
            lines.append(f"mkdir -p /run/btrfs-top && mount {dev} /run/btrfs-top")
            lines += [f"btrfs -q subvolume create /run/btrfs-top/{name}" for name, *_ in layer.volumes]
            lines.append("umount /run/btrfs-top")
            continue
        if layer.kind == "md":
            devs = " ".join(member[m] for m in layer.members)
            md = f"/dev/md/{layer.name}"
            lines.append(f"mdadm --create {md} --run --level=1 --raid-devices={len(layer.members)} --metadata=1.2 "
                         f"--homehost=demo --name={layer.name} --uuid={md_uuid(lay, layer.name, vols)} "
                         f"--assume-clean {devs}")
            member[f"md:{layer.name}"] = md
            for _name, content, _mib, _mp in layer.volumes:
                if content in _MKFS:
                    lines.append(_mkfs(by_device[md], md))
            continue
        if layer.kind == "luks":
            lines += luks_commands(lay, layer, member[layer.members[0]], vols, keys)
            crypt = f"/dev/mapper/{layer.name}"
            member[f"luks:{layer.name}"] = crypt
            for _name, content, _mib, _mp in layer.volumes:
                if content in _MKFS:
                    lines.append(_mkfs(by_device[crypt], crypt))
            continue
        if layer.kind != "lvm":
            raise RescueError(f"the demo layout {lay.name!r} has a {layer.kind} layer the builder does not know",
                              fix="add its commands to rescue.drill.layouts.build_commands")
        pvs = " ".join(member[m] for m in layer.members)
        lines.append(f"pvcreate -q -ff -y {pvs}")
        lines.append(f"vgcreate -q {layer.name} {pvs}")
        for name, _content, mib, _mountpoint in layer.volumes:
            size = f"-L {mib}M" if mib else "-l 100%FREE"
            lines.append(f"lvcreate -q -y -n {name} {size} {layer.name}")
            lines.append(_mkfs(by_device[_mapper(layer.name, name)], _mapper(layer.name, name)))
    return lines


# A fast key derivation: the drill unlocks under TCG, and argon2's memory cost would weigh
# on a 1 GiB guest; the restore keeps (or, with a new key, follows) what the header says.
_PBKDF = "--pbkdf pbkdf2 --iter-time 200"


def luks_commands(lay: Layout, layer: Layer, dev: str, vols: tuple[Volume, ...], keys: str) -> list[str]:
    """luksFormat with the chosen UUID, a recovery keyslot beside the key, then open it by name.
    Keys are files on the transfer disk: never on a command line or in the build log."""
    pbkdf = _PBKDF if layer.luks_type == "luks2" else "--iter-time 200"
    key = f"{keys}/{layer.name}.key"
    return [
        f"cryptsetup luksFormat -q --type {layer.luks_type} --uuid {luks_uuid(lay, layer.name, vols)} "
        f"{pbkdf} --key-file {key} {dev}",
        f"cryptsetup luksAddKey -q {pbkdf} --key-file {key} {dev} {keys}/{layer.name}-recovery.key",
        f"cryptsetup open --type luks --key-file {key} {dev} {layer.name}",
    ]


def _mounted_at(path: str, vols: tuple[Volume, ...]) -> str | None:
    """The mount point of the volume that holds `path` (the longest mount point above it)."""
    above = [v.mountpoint for v in vols if v.mountpoint and (v.mountpoint == "/" or path == v.mountpoint
                                                          or path.startswith(v.mountpoint + "/"))]
    return max(above, key=len) if above else None


def guest_device(vol: Volume, devices: dict[str, str]) -> str:
    """Where the volume is inside the builder VM (a layout disk name mapped to the guest's)."""
    if vol.device.startswith("/dev/"):
        return vol.device
    disk = vol.device.rstrip("0123456789")
    return devices[disk] + vol.device[len(disk):]


def fill_commands(vols: tuple[Volume, ...], devices: dict[str, str], where: str, tars: str,
                  nocow: tuple[str, ...] = ()) -> list[str]:
    """Mount the machine's filesystems under `where`, parents first, each vault's files unpacked
    from TARS/VAULT.tar as soon as its filesystem is mounted (the mount points below it come with them).

    A nocow folder is made with chattr +C before the files that go into it, as on a machine
    where it was set up first (a file takes the flag from its folder when it is made)."""
    lines = []
    for vol in sorted((v for v in vols if v.mountpoint), key=lambda v: (v.mountpoint.count("/"), v.mountpoint)):
        at = where + (vol.mountpoint if vol.mountpoint != "/" else "")
        opts = f"-o subvol={vol.subvol} " if vol.subvol else ""
        lines.append(f"mkdir -p {at} && mount {opts}{guest_device(vol, devices)} {at}")
        for folder in nocow:
            if _mounted_at(folder, vols) == vol.mountpoint:
                lines.append(f"mkdir -p {where}{folder} && chattr +C {where}{folder}")
        if vol.vault:
            lines.append(f"tar -C {at} --numeric-owner --xattrs --xattrs-include='*' --acls -xpf {tars}/{vol.vault}.tar")
    return lines
