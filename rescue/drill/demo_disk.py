"""The demo machine's disk: partitions, filesystems, the demo OS and its data.

BIOS: dos table, / ext4, /home xfs, swap, /tmp ext4.
UEFI: gpt table, the same plus an ESP (vfat, /boot/efi) in front. vfat cannot
be mounted on a build host, so the ESP stays empty here: the restore makes it
again and grub-install fills it inside the VM.

Every filesystem has a known label and its UUID is on record (DemoFacts), so
the drill can prove the restored machine kept them. The disk never boots
itself: the proof is that the restored copy does.

`DemoDisk` has the attributes `rescue.demo.make_bank` reads (disk, root,
filesystems with vault names, dir_of) so the demo bank is made by the same
real-dirvish harness the integration tests use.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from rescue.formats.mountinfo import read_mountinfo
from rescue.demo.machine import FIXED_MTIME, DemoMachine, PartSpec, fill_corpus
from rescue.errors import RescueError
from rescue.qemu import Firmware
from rescue.run import CommandError, run

MiB = 1 << 20
GiB = 1 << 30
FILES = Path(__file__).resolve().parent / "files"


HOSTNAME = "demo"
DISK_SIZE = 2 * GiB
ALICE = 1000  # uid and gid of the demo user (made by the OS build)
DEVICE_TIMEOUT = "15min"


def parts_for(firmware: Firmware) -> tuple[PartSpec, ...]:
    """/ and /home get vaults; swap, /tmp and the ESP are made again by the restore."""
    common = (
        PartSpec("/", "ext4", 900, "demo-root", "demo-root"),
        PartSpec("/home", "xfs", 320, "demo-home", "demo-home"),
        PartSpec(None, "swap", 128, "demo-swap", "demo-swap", backup=False),
        PartSpec("/tmp", "ext4", 0, "demo-tmp", "demo-tmp", backup=False),
    )
    if firmware is Firmware.UEFI:
        return (PartSpec("/boot/efi", "vfat", 64, "DEMO-ESP", "DEMO-ESP", backup=False), *common)
    return common


@dataclass(frozen=True)
class FsFact:
    mountpoint: str
    fstype: str
    uuid: str


@dataclass(frozen=True)
class DemoFacts:
    """What the restored machine must report: the original's facts, kept on record."""

    firmware: str
    hostname: str
    label: str  # dos or gpt
    disk_size: int
    filesystems: tuple[FsFact, ...]
    swap_uuid: str
    data_sum: str
    data_list: tuple[str, ...]
    # the layered machines (rescue.drill.layered): identifiers the restored boot must show
    lvs: tuple[str, ...] = ()  # "VG/LV LV-UUID VG-UUID", as captured
    pvs: tuple[str, ...] = ()  # PV UUIDs, as captured
    arrays: tuple[str, ...] = ()  # "HOST:NAME MD-UUID RAID-DEVICES", as captured
    arrays_degraded: int = 0  # members each array misses in this boot (onto one disk: 1)
    subvolumes: tuple[str, ...] = ()  # btrfs subvolume paths, as captured
    btrfs_default: str | None = None  # the default subvolume's id, as captured
    nocow: tuple[str, ...] = ()  # folders that must keep chattr +C
    mount_options: tuple[str, ...] = ()  # "MOUNTPOINT OPTION" each mount must show
    no_failed_units: bool = False  # checked: no systemd unit failed in the restored boot
    luks: tuple[str, ...] = ()  # "NAME LUKS-UUID VERSION KEYSLOTS MOUNTPOINT" (- when it holds a PV)
    passphrase_file: str | None = None  # the file whose bytes are typed at the initramfs's prompt

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> DemoFacts:
        d = json.loads(path.read_text())
        d["filesystems"] = tuple(FsFact(**f) for f in d["filesystems"])
        for key in ("data_list", "lvs", "pvs", "arrays", "subvolumes", "nocow", "mount_options", "luks"):
            d[key] = tuple(d.get(key, ()))
        return cls(**d)


class DemoDisk(DemoMachine):
    """The demo machine's disk image with a Debian on it, mounted under `root` while in use.

    A DemoMachine (partitions, mkfs, mounts, unmount and detach) whose
    filesystems get the demo OS, its configuration and the data the drill
    checks instead of the test corpus. Unlike DemoMachine, entering the
    context builds nothing: build() is a timed phase of the drill."""

    def __init__(self, workdir: Path, firmware: Firmware, os_tarball: Path, size: int = DISK_SIZE) -> None:
        label = "gpt" if firmware is Firmware.UEFI else "dos"
        super().__init__(workdir, size=size, label=label, hostname=HOSTNAME, parts=parts_for(firmware),
                         corpus=False)
        self.firmware = firmware
        self.os_tarball = os_tarball
        self.image = self.workdir / f"demo-{firmware.value}.img"
        self.root = self.workdir / f"demo-{firmware.value}-root"

    def __enter__(self) -> DemoDisk:
        return self

    def build(self) -> DemoFacts:  # type: ignore[override]
        """Partition, make filesystems, unpack the OS, configure it, add the data."""
        super().build()
        facts = self.facts()
        run(["sync"])
        return facts

    def _fill(self) -> None:
        run(["tar", "-C", str(self.root), "--numeric-owner", "--xattrs", "--xattrs-include=*",
             "-xpf", str(self.os_tarball)])
        self._configure()
        self._fill_data()

    def _fstab_text(self) -> str:
        return fstab_text((f"UUID={p.uuid}", p.mountpoint, p.fstype) for p in self.partitions)

    def _configure(self) -> None:
        self.fstab = self._fstab_text()
        configure_os(self.root, self.fstab, self._grub_cfg(), tmp=self.dir_of("/tmp"))

    def _grub_cfg(self) -> str:
        """A plain grub.cfg by UUID; the restore's grub-mkconfig may replace it."""
        root = self.partition("/")
        return grub_cfg(self.root, search_uuid=root.uuid, prefix="/boot", root_spec=f"UUID={root.uuid}",
                        tarball=self.os_tarball)

    def _fill_data(self) -> None:
        fill_data(self.root, home=self.dir_of("/home"))

    def facts(self) -> DemoFacts:
        data_sum, listing = data_facts(self.root)
        fss = tuple(FsFact(p.mountpoint, p.fstype, p.uuid) for p in self.partitions if p.mountpoint)
        swap = next(p for p in self.partitions if p.fstype == "swap")
        return DemoFacts(
            firmware=self.firmware.value, hostname=HOSTNAME, label=self.label, disk_size=self.size,
            filesystems=fss, swap_uuid=swap.uuid, data_sum=data_sum, data_list=listing,
        )


def fstab_text(entries: Iterable[tuple[str, str | None, str] | tuple[str, str | None, str, str]]) -> str:
    """/etc/fstab of a demo machine from (device, mount point or None for swap, type[, options]).

    Under TCG on a busy host udev may need minutes to announce a disk:
    systemd's 90 s device timeout would drop the machine into emergency mode."""
    wait = f"x-systemd.device-timeout={DEVICE_TIMEOUT}"
    lines = ["# /etc/fstab of the rescue drill's demo machine"]
    for spec, mountpoint, fstype, *more in sorted(entries, key=lambda e: (e[1] or "~")):
        extra = f",{more[0]}" if more and more[0] else ""
        if fstype == "swap":
            lines.append(f"{spec} none swap sw,{wait} 0 0")
        elif fstype == "vfat":
            lines.append(f"{spec} {mountpoint} vfat umask=0077{extra},{wait} 0 1")
        elif mountpoint == "/":
            lines.append(f"{spec} / {fstype} defaults{extra} 0 {0 if fstype == 'btrfs' else 1}")
        else:
            lines.append(f"{spec} {mountpoint} {fstype} defaults{extra},{wait} 0 {0 if fstype == 'btrfs' else 2}")
    return "\n".join(lines) + "\n"


def configure_os(r: Path, fstab: str, grub: str, tmp: Path) -> None:
    """The demo OS made into the demo machine: its name, fstab, grub defaults, the report service."""
    (r / "etc" / "fstab").write_text(fstab)
    (r / "etc" / "hostname").write_text(HOSTNAME + "\n")
    (r / "etc" / "hosts").write_text(f"127.0.0.1 localhost\n127.0.1.1 {HOSTNAME}\n")
    (r / "etc" / "default").mkdir(exist_ok=True)
    shutil.copyfile(FILES / "default-grub", r / "etc" / "default" / "grub")
    (r / "boot" / "efi").mkdir(parents=True, exist_ok=True)
    (r / "boot" / "grub").mkdir(parents=True, exist_ok=True)
    (r / "boot" / "grub" / "grub.cfg").write_text(grub)
    sbin = r / "usr" / "local" / "sbin"
    sbin.mkdir(parents=True, exist_ok=True)
    for name in ("demo-report", "demo-data-sum"):
        shutil.copyfile(FILES / name, sbin / name)
        os.chmod(sbin / name, 0o755)
    units = r / "etc" / "systemd" / "system"
    shutil.copyfile(FILES / "demo-report.service", units / "demo-report.service")
    wants = units / "multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    link = wants / "demo-report.service"
    with contextlib.suppress(FileNotFoundError):
        link.unlink()
    link.symlink_to("/etc/systemd/system/demo-report.service")
    # No login on the serial console: the report owns it (a getty's hangup would cut it off).
    getty = units / "serial-getty@ttyS0.service"
    with contextlib.suppress(FileNotFoundError):
        getty.unlink()
    getty.symlink_to("/dev/null")
    os.chown(tmp, 0, 0)
    os.chmod(tmp, 0o1777)


def grub_cfg(root: Path, *, search_uuid: str, prefix: str, root_spec: str, tarball: Path) -> str:
    """A plain grub.cfg that finds the kernel's filesystem by UUID (prefix: "/boot", or "" when
    /boot is a filesystem of its own); the restore's grub-mkconfig may replace it."""
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    if not kernels:
        raise RescueError(f"the demo OS {tarball} has no kernel in /boot",
                          fix="delete the tarball so the drill builds it again")
    version = kernels[-1].name.removeprefix("vmlinuz-")
    return (
        "serial --unit=0 --speed=115200\nterminal_input serial\nterminal_output serial\n"
        "set timeout=0\ninsmod part_msdos\ninsmod part_gpt\ninsmod ext2\n"
        f"search --no-floppy --fs-uuid --set=root {search_uuid}\n"
        "menuentry 'Debian (rescue drill demo)' {\n"
        f"  linux {prefix}/vmlinuz-{version} root={root_spec} ro console=ttyS0,115200\n"
        f"  initrd {prefix}/initrd.img-{version}\n}}\n"
    )


def fill_data(root: Path, home: Path) -> None:
    """The data the drill checks: A's corpus of hard cases, twice, plus a user's files."""
    srv = root / "srv" / "demo"
    alice = home / "alice"
    fill_corpus(srv)
    fill_corpus(alice / "corpus")
    (alice / "notes.txt").write_text("the demo machine's user data survives a restore\n")
    os.chown(alice / "notes.txt", ALICE, ALICE)
    os.chmod(alice / "notes.txt", 0o600)
    for top in (srv, alice):
        for dirpath, dirnames, filenames in os.walk(os.fsencode(top), topdown=False):
            for n in filenames + dirnames:
                os.utime(os.path.join(dirpath, n), (FIXED_MTIME, FIXED_MTIME), follow_symlinks=False)
        os.utime(top, (FIXED_MTIME, FIXED_MTIME))


def data_facts(root: Path) -> tuple[str, tuple[str, ...]]:
    """The data fingerprint and listing, as the demo machine's own demo-data-sum prints them."""
    data_sum = run(["chroot", str(root), "/usr/local/sbin/demo-data-sum"]).stdout.strip()
    listing = run(["chroot", str(root), "/usr/local/sbin/demo-data-sum", "--list"]).stdout
    return data_sum, tuple(listing.splitlines())


def cleanup_mounts(root: Path) -> None:
    """Lazy-unmount whatever is still mounted below root (after a crash of an earlier run)."""
    with contextlib.suppress(CommandError):
        for target in reversed([m.target for m in read_mountinfo()]):
            if target == str(root) or target.startswith(str(root) + "/"):
                run(["umount", "-l", target], check=False)
