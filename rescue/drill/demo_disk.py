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
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from rescue.demo.machine import FIXED_MTIME, DemoPartition, fill_corpus, probe
from rescue.devices import attach, detach, make_image_file, partition_path, rescan
from rescue.errors import RescueError
from rescue.layout.sfdisk import parse_sfdisk
from rescue.qemu import Firmware
from rescue.run import CommandError, run

MiB = 1 << 20
GiB = 1 << 30
FILES = Path(__file__).resolve().parent / "files"

ESP_GPT = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
LINUX_GPT = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
SWAP_GPT = "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F"

HOSTNAME = "demo"
DISK_SIZE = 2 * GiB
ALICE = 1000  # uid and gid of the demo user (made by the OS build)
DEVICE_TIMEOUT = "15min"


@dataclass(frozen=True)
class PartSpec:
    mountpoint: str | None  # None for swap
    fstype: str  # ext4, xfs, vfat, swap
    size_mib: int  # 0: the rest of the disk (last partition only)
    label: str
    vault: bool = True  # backed up by dirvish (the ESP and swap are not)


def parts_for(firmware: Firmware) -> tuple[PartSpec, ...]:
    common = (
        PartSpec("/", "ext4", 900, "demo-root"),
        PartSpec("/home", "xfs", 320, "demo-home"),
        PartSpec(None, "swap", 128, "demo-swap", vault=False),
        PartSpec("/tmp", "ext4", 0, "demo-tmp", vault=False),
    )
    if firmware is Firmware.UEFI:
        return (PartSpec("/boot/efi", "vfat", 64, "DEMO-ESP", vault=False), *common)
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

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> DemoFacts:
        d = json.loads(path.read_text())
        d["filesystems"] = tuple(FsFact(**f) for f in d["filesystems"])
        d["data_list"] = tuple(d["data_list"])
        return cls(**d)


class DemoDisk:
    """The demo machine's disk image, attached and mounted under `root` while in use."""

    def __init__(self, workdir: Path, firmware: Firmware, os_tarball: Path, size: int = DISK_SIZE) -> None:
        self.workdir = Path(workdir)
        self.firmware = firmware
        self.os_tarball = os_tarball
        self.size = size
        self.specs = parts_for(firmware)
        self.label = "gpt" if firmware is Firmware.UEFI else "dos"
        self.image = self.workdir / f"demo-{firmware.value}.img"
        self.root = self.workdir / f"demo-{firmware.value}-root"
        self.disk: str | None = None
        self.partitions: tuple[DemoPartition, ...] = ()
        self.sfdisk_dump = ""
        self._mounted: list[Path] = []

    # -- what make_bank reads ------------------------------------------------

    @property
    def filesystems(self) -> tuple[DemoPartition, ...]:
        """The partitions that get a dirvish vault, / first."""
        backed = {s.mountpoint for s in self.specs if s.vault}
        return tuple(sorted((p for p in self.partitions if p.mountpoint in backed),
                            key=lambda p: (p.mountpoint != "/", p.mountpoint)))

    def dir_of(self, mountpoint: str) -> Path:
        return self.root / mountpoint.lstrip("/") if mountpoint != "/" else self.root

    # -- life cycle ----------------------------------------------------------

    def __enter__(self) -> DemoDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def build(self) -> DemoFacts:
        """Partition, make filesystems, unpack the OS, configure it, add the data."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        make_image_file(self.image, self.size)
        self.disk = attach(self.image)
        if not self.disk.startswith("/dev/loop"):
            raise RescueError(f"expected a loop device for the demo disk, got {self.disk}")
        self._partition()
        self._mkfs()
        self.mount()
        run(["tar", "-C", str(self.root), "--numeric-owner", "--xattrs", "--xattrs-include=*",
             "-xpf", str(self.os_tarball)])
        self._configure()
        self._fill()
        facts = self.facts()
        run(["sync"])
        return facts

    def mount(self) -> None:
        assert self.disk is not None
        for spec, part in self._mountable():
            where = self.dir_of(spec.mountpoint)
            where.mkdir(parents=True, exist_ok=True)
            run(["mount", "-t", spec.fstype, part.node, str(where)])
            self._mounted.append(where)

    def unmount(self) -> None:
        for where in reversed(self._mounted):
            for _ in range(20):
                if run(["umount", str(where)], check=False).returncode == 0 or not os.path.ismount(where):
                    break
                time.sleep(0.25)
            else:
                run(["umount", "-l", str(where)], check=False)
        self._mounted.clear()

    def close(self) -> None:
        """Unmount and detach (the image file stays); safe to call twice."""
        self.unmount()
        if self.disk is not None:
            detach(self.disk)
            self.disk = None

    def detach_keep_image(self) -> None:
        """The disaster: the disk is gone; its facts are on record."""
        self.close()

    # -- building ------------------------------------------------------------

    def _mountable(self) -> list[tuple[PartSpec, DemoPartition]]:
        """(spec, partition) for the filesystems this host can mount, / first."""
        pairs = [(s, p) for s, p in zip(self.specs, self.partitions)
                 if s.mountpoint and s.fstype in ("ext4", "xfs")]
        return sorted(pairs, key=lambda sp: (sp[0].mountpoint != "/", sp[0].mountpoint))

    def _script(self) -> str:
        lines = [f"label: {self.label}", ""]
        for spec in self.specs:
            size = f"size={spec.size_mib}MiB, " if spec.size_mib else ""
            if self.label == "gpt":
                kind = {"vfat": ESP_GPT, "swap": SWAP_GPT}.get(spec.fstype, LINUX_GPT)
                lines.append(f'{size}type={kind}, name="{spec.label}"')
            else:
                kind = {"swap": "82"}.get(spec.fstype, "83")
                boot = ", bootable" if spec.mountpoint == "/" else ""
                lines.append(f"{size}type={kind}{boot}")
        return "\n".join(lines) + "\n"

    def _partition(self) -> None:
        assert self.disk is not None
        run(["sfdisk", "--quiet", "--wipe", "always", self.disk], input=self._script())
        rescan(self.disk)
        nodes = [partition_path(self.disk, i + 1) for i in range(len(self.specs))]
        deadline = time.monotonic() + 10
        while not all(os.path.exists(n) for n in nodes):
            if time.monotonic() > deadline:
                raise RescueError(f"partition nodes of {self.disk} did not appear")
            time.sleep(0.2)
            rescan(self.disk)
        self.sfdisk_dump = run(["sfdisk", "--dump", self.disk]).stdout

    def _mkfs(self) -> None:
        assert self.disk is not None
        table = parse_sfdisk(self.sfdisk_dump, f"sfdisk -d {self.disk}", self.size)
        by_number = {p.number: p for p in table.partitions}
        parts = []
        for i, spec in enumerate(self.specs):
            node = partition_path(self.disk, i + 1)
            if spec.fstype == "swap":
                run(["mkswap", "--label", spec.label, node])
            elif spec.fstype == "ext4":
                run(["mkfs.ext4", "-q", "-F", "-L", spec.label, node])
            elif spec.fstype == "xfs":
                run(["mkfs.xfs", "-q", "-f", "-L", spec.label, node])
            elif spec.fstype == "vfat":
                run(["mkfs.vfat", "-F", "32", "-n", spec.label, node])
            facts = probe(node)
            tp = by_number[i + 1]
            parts.append(DemoPartition(
                number=i + 1, node=node, mountpoint=spec.mountpoint, fstype=spec.fstype,
                label=spec.label, uuid=facts["UUID"], partuuid=facts.get("PART_ENTRY_UUID"),
                start=tp.start, size=tp.size, name=tp.name,
            ))
        self.partitions = tuple(parts)

    def _part(self, mountpoint: str | None, fstype: str | None = None) -> DemoPartition:
        for p in self.partitions:
            if p.mountpoint == mountpoint and (fstype is None or p.fstype == fstype):
                return p
        raise KeyError(mountpoint)

    def fstab(self) -> str:
        """By UUID. Under TCG on a busy host udev may need minutes to announce a disk:
        systemd's 90 s device timeout would drop the machine into emergency mode."""
        wait = f"x-systemd.device-timeout={DEVICE_TIMEOUT}"
        lines = ["# /etc/fstab of the rescue drill's demo machine: every filesystem by UUID"]
        for p in sorted(self.partitions, key=lambda p: (p.mountpoint or "~")):
            if p.fstype == "swap":
                lines.append(f"UUID={p.uuid} none swap sw,{wait} 0 0")
            elif p.fstype == "vfat":
                lines.append(f"UUID={p.uuid} {p.mountpoint} vfat umask=0077,{wait} 0 1")
            elif p.mountpoint == "/":
                lines.append(f"UUID={p.uuid} / {p.fstype} defaults 0 1")
            else:
                lines.append(f"UUID={p.uuid} {p.mountpoint} {p.fstype} defaults,{wait} 0 2")
        return "\n".join(lines) + "\n"

    def _configure(self) -> None:
        r = self.root
        (r / "etc" / "fstab").write_text(self.fstab())
        (r / "etc" / "hostname").write_text(HOSTNAME + "\n")
        (r / "etc" / "hosts").write_text(f"127.0.0.1 localhost\n127.0.1.1 {HOSTNAME}\n")
        (r / "etc" / "default").mkdir(exist_ok=True)
        shutil.copyfile(FILES / "default-grub", r / "etc" / "default" / "grub")
        (r / "boot" / "efi").mkdir(parents=True, exist_ok=True)
        (r / "boot" / "grub").mkdir(parents=True, exist_ok=True)
        (r / "boot" / "grub" / "grub.cfg").write_text(self._grub_cfg())
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
        tmp = self.dir_of("/tmp")
        os.chown(tmp, 0, 0)
        os.chmod(tmp, 0o1777)

    def _grub_cfg(self) -> str:
        """A plain grub.cfg by UUID; the restore's grub-mkconfig may replace it."""
        kernels = sorted((self.root / "boot").glob("vmlinuz-*"))
        if not kernels:
            raise RescueError(f"the demo OS {self.os_tarball} has no kernel in /boot",
                              fix="delete the tarball so the drill builds it again")
        version = kernels[-1].name.removeprefix("vmlinuz-")
        root = self._part("/")
        return (
            "serial --unit=0 --speed=115200\nterminal_input serial\nterminal_output serial\n"
            "set timeout=0\ninsmod part_msdos\ninsmod part_gpt\ninsmod ext2\n"
            f"search --no-floppy --fs-uuid --set=root {root.uuid}\n"
            "menuentry 'Debian (rescue drill demo)' {\n"
            f"  linux /boot/vmlinuz-{version} root=UUID={root.uuid} ro console=ttyS0,115200\n"
            f"  initrd /boot/initrd.img-{version}\n}}\n"
        )

    def _fill(self) -> None:
        """The data the drill checks: A's corpus of hard cases, twice, plus a user's files."""
        srv = self.root / "srv" / "demo"
        alice = self.dir_of("/home") / "alice"
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

    def facts(self) -> DemoFacts:
        data_sum = run(["chroot", str(self.root), "/usr/local/sbin/demo-data-sum"]).stdout.strip()
        listing = run(["chroot", str(self.root), "/usr/local/sbin/demo-data-sum", "--list"]).stdout
        fss = tuple(FsFact(p.mountpoint, p.fstype, p.uuid) for p in self.partitions if p.mountpoint)
        swap = next(p for p in self.partitions if p.fstype == "swap")
        return DemoFacts(
            firmware=self.firmware.value, hostname=HOSTNAME, label=self.label, disk_size=self.size,
            filesystems=fss, swap_uuid=swap.uuid, data_sum=data_sum,
            data_list=tuple(listing.splitlines()),
        )


def cleanup_mounts(root: Path) -> None:
    """Lazy-unmount whatever is still mounted below root (after a crash of an earlier run)."""
    with contextlib.suppress(CommandError):
        for line in reversed(Path("/proc/self/mounts").read_text().splitlines()):
            target = line.split()[1].replace("\\040", " ")
            if target == str(root) or target.startswith(str(root) + "/"):
                run(["umount", "-l", target], check=False)
