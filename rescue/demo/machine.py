"""A demo machine on a loop disk: the thing every integration test backs up and restores.

`DemoMachine` builds a small but realistic client: a disk image attached as a
loop device, a dos or gpt table, / ext4, /home xfs (or btrfs), swap, and a
separate /tmp (ext4, root mode 1777), all with known labels, mounted under a
root folder and filled with the files that break naive copies (hard links,
symlinks, sparse files, fifos, device nodes, xattrs, ACLs, odd names, odd
modes and owners). It writes only to the loop device and image file it made,
and always unmounts and detaches, even when a test fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from rescue.devices import attach, detach, disk_of, make_image_file, partition_path, rescan, wait_released
from rescue.errors import RescueError
from rescue.layout.model import PartitionTable
from rescue.layout.sfdisk import parse_sfdisk
from rescue.run import run

MiB = 1024 * 1024
GiB = 1024 * MiB

GPT_TYPES = {
    "linux": "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
    "swap": "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F",
    "esp": "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
}
DOS_TYPES = {"linux": "83", "swap": "82", "esp": "ef"}
# What this build host can mount: vfat cannot be (DESIGN.md), so an ESP stays empty here.
HOST_MOUNTABLE = ("ext4", "xfs", "btrfs")

# Odd owners and modes the corpus uses; tests compare them after a restore.
ODD_UID, ODD_GID = 1234, 5678
UNKNOWN_UID, UNKNOWN_GID = 4242, 4343
FIXED_MTIME = 1_600_000_000  # 2020-09-13, so copies that drop times are caught


@dataclass(frozen=True)
class PartSpec:
    """One partition to create. size_mib=0 takes the rest of the disk (last only)."""

    mountpoint: str | None  # "/", "/home", "/tmp"; None for swap
    fstype: str  # ext4, xfs, btrfs, vfat (an ESP), swap
    size_mib: int
    label: str  # filesystem/swap label (xfs: 12 characters at most)
    name: str | None = None  # gpt partition name
    backup: bool = True  # gets a dirvish vault (the drill's machine keeps none for its ESP and /tmp)


@dataclass(frozen=True)
class DemoPartition:
    """What was made: the facts a capture should find and a restore should keep."""

    number: int
    node: str  # /dev/loopNpM while attached (stale after detach)
    mountpoint: str | None
    fstype: str
    label: str
    uuid: str  # as blkid prints it (lower case)
    partuuid: str | None  # gpt PARTUUID / dos disk-id-NN, as blkid prints it
    start: int  # sectors
    size: int  # sectors
    name: str | None = None
    backed_up: bool = True  # False: make_bank makes no vault for it

    @property
    def vault(self) -> str | None:
        """The vault name the demo bank uses for this partition ("root", "home", "tmp")."""
        if self.mountpoint is None or not self.backed_up:
            return None
        return "root" if self.mountpoint == "/" else self.mountpoint.strip("/").replace("/", "-")


def default_parts(home_fs: str = "xfs") -> tuple[PartSpec, ...]:
    """/ ext4 256 MiB, /home xfs|btrfs 320 MiB, swap 64 MiB, /tmp ext4 rest."""
    return (
        PartSpec("/", "ext4", 256, "demo-root", "root"),
        PartSpec("/home", home_fs, 320, "demo-home", "home"),
        PartSpec(None, "swap", 64, "demo-swap", "swap"),
        PartSpec("/tmp", "ext4", 0, "demo-tmp", "tmp"),
    )


class DemoMachine:
    """A client machine on a loop disk, mounted under `root`. Use as a context manager.

    After `with DemoMachine(tmp_path) as m:`
      m.disk        the loop device (/dev/loopN), None once detached
      m.image       the disk image file
      m.root        the folder the filesystems are mounted under (m.root/"home" is /home)
      m.table       the PartitionTable read back with sfdisk -d after writing it
      m.sfdisk_dump that dump's text
      m.partitions  DemoPartition facts (labels, UUIDs, PARTUUIDs, sectors)
      m.fstab       the /etc/fstab text written into the root filesystem
    """

    def __init__(
        self,
        workdir: Path,
        *,
        size: int = 1 * GiB,
        label: str = "gpt",
        home_fs: str = "xfs",
        logical: bool = False,
        hostname: str = "demo",
        parts: Sequence[PartSpec] | None = None,
        corpus: bool = True,
    ) -> None:
        if label not in ("gpt", "dos"):
            raise ValueError("label is gpt or dos")
        if logical and label != "dos":
            raise ValueError("logical partitions need a dos label")
        self.workdir = Path(workdir)
        self.size = size
        self.label = label
        self.logical = logical
        self.hostname = hostname
        self.specs = tuple(parts) if parts is not None else default_parts(home_fs)
        self.with_corpus = corpus
        self.image = self.workdir / "demo-disk.img"
        self.root = self.workdir / "root"
        self.disk: str | None = None
        self.partitions: tuple[DemoPartition, ...] = ()
        self.table: PartitionTable | None = None
        self.sfdisk_dump = ""
        self.fstab = ""
        self._mounted: list[Path] = []

    # -- life cycle -------------------------------------------------------

    def __enter__(self) -> DemoMachine:
        try:
            self.build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def build(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        make_image_file(self.image, self.size)
        self.disk = attach(self.image)
        if not self.disk.startswith("/dev/loop"):
            raise RescueError(f"expected a loop device, got {self.disk}")
        self._partition()
        self._mkfs()
        self.mount()
        self._fill()

    def close(self) -> None:
        """Unmount everything and detach; safe to call twice. The image file stays."""
        self.unmount()
        if self.disk is not None:
            detach(self.disk)
            self.disk = None

    def detach_keep_image(self) -> None:
        """The disaster: the original disk goes away, its facts stay on record."""
        self.close()

    def reattach(self, mount: bool = True) -> str:
        """Attach the image again (a new loop device) and mount it: to compare after a restore.

        Mind the same-UUID twins (DESIGN.md): do this after the restored disk is detached.
        """
        if self.disk is not None:
            return self.disk
        self.disk = attach(self.image)
        _wait_nodes([partition_path(self.disk, p.number) for p in self.partitions])
        self.partitions = tuple(
            replace(p, node=partition_path(self.disk, p.number)) for p in self.partitions
        )
        if mount:
            self.mount()
        return self.disk

    # -- facts ------------------------------------------------------------

    def partition(self, mountpoint: str) -> DemoPartition:
        for p in self.partitions:
            if p.mountpoint == mountpoint:
                return p
        raise KeyError(mountpoint)

    @property
    def filesystems(self) -> tuple[DemoPartition, ...]:
        """Partitions with a mount point (everything but swap), / first."""
        return tuple(sorted((p for p in self.partitions if p.mountpoint), key=lambda p: _depth(p.mountpoint)))

    @property
    def swap(self) -> DemoPartition | None:
        return next((p for p in self.partitions if p.fstype == "swap"), None)

    def dir_of(self, mountpoint: str) -> Path:
        """Where a mount point of the machine lives on this host: root / "home"."""
        return self.root / mountpoint.lstrip("/") if mountpoint != "/" else self.root

    # -- mounting ---------------------------------------------------------

    def mount(self) -> None:
        if self.disk is None:
            raise RescueError("the demo disk is not attached")
        for p in self.filesystems:
            if p.fstype not in HOST_MOUNTABLE:
                continue
            where = self.dir_of(p.mountpoint)
            where.mkdir(parents=True, exist_ok=True)
            if where in self._mounted:
                continue
            run(["mount", "-t", p.fstype, p.node, where])
            self._mounted.append(where)

    def unmount(self) -> None:
        for where in reversed(self._mounted):
            for attempt in range(20):
                r = run(["umount", where], check=False)
                if r.returncode == 0 or not os.path.ismount(where):
                    break
                time.sleep(0.25)
            else:
                run(["umount", "-l", where], check=False)
        self._mounted.clear()
        if self.disk:
            # copies of these mounts in a dirvish run's private namespace go a moment later
            wait_released(self.disk)

    # -- building ---------------------------------------------------------

    def _script(self) -> str:
        lines = [f"label: {self.label}", ""]
        numbered: list[tuple[int, PartSpec]] = []
        for i, spec in enumerate(self.specs):
            kind = {"swap": "swap", "vfat": "esp"}.get(spec.fstype, "linux")
            size = f"size={spec.size_mib}MiB, " if spec.size_mib else ""
            if self.label == "gpt":
                name = f', name="{spec.name}"' if spec.name else ""
                lines.append(f"{size}type={GPT_TYPES[kind]}{name}")
                numbered.append((i + 1, spec))
            elif self.logical and i >= 2:
                if i == 2:
                    lines.append("type=5")  # extended: the rest of the disk
                lines.append(f"{size}type={DOS_TYPES[kind]}")
                numbered.append((i + 3, spec))
            else:
                boot = ", bootable" if spec.mountpoint == "/" else ""
                lines.append(f"{size}type={DOS_TYPES[kind]}{boot}")
                numbered.append((i + 1, spec))
        self._numbered = numbered
        return "\n".join(lines) + "\n"

    def _partition(self) -> None:
        assert self.disk is not None
        run(["sfdisk", "--quiet", "--wipe", "always", self.disk], input=self._script())
        rescan(self.disk)
        _wait_nodes([partition_path(self.disk, n) for n, _ in self._numbered])
        self.sfdisk_dump = run(["sfdisk", "--dump", self.disk]).stdout
        self.table = parse_sfdisk(self.sfdisk_dump, f"sfdisk -d {self.disk}", self.size)

    def _mkfs(self) -> None:
        assert self.disk is not None and self.table is not None
        parts = []
        by_number = {p.number: p for p in self.table.partitions}
        for number, spec in self._numbered:
            node = partition_path(self.disk, number)
            if spec.fstype == "swap":
                run(["mkswap", "--label", spec.label, node])
            elif spec.fstype == "ext4":
                run(["mkfs.ext4", "-q", "-F", "-L", spec.label, node])
            elif spec.fstype == "xfs":
                run(["mkfs.xfs", "-q", "-f", "-L", spec.label, node])
            elif spec.fstype == "btrfs":
                run(["mkfs.btrfs", "-q", "-f", "-L", spec.label, node])
            elif spec.fstype == "vfat":
                run(["mkfs.vfat", "-F", "32", "-n", spec.label, node])
            else:
                raise ValueError(f"no mkfs for {spec.fstype}")
            facts = probe(node)
            tp = by_number[number]
            parts.append(DemoPartition(
                number=number, node=node, mountpoint=spec.mountpoint, fstype=spec.fstype,
                label=spec.label, uuid=facts["UUID"], partuuid=facts.get("PART_ENTRY_UUID"),
                start=tp.start, size=tp.size, name=tp.name, backed_up=spec.backup,
            ))
        self.partitions = tuple(parts)

    def _fill(self) -> None:
        tmp = self.dir_of("/tmp") if any(p.mountpoint == "/tmp" for p in self.partitions) else None
        if tmp is not None:
            os.chown(tmp, 0, 0)
            os.chmod(tmp, 0o1777)
            (tmp / "keep-me").write_text("rsync never saves the mode of /tmp itself\n")
        etc = self.root / "etc"
        etc.mkdir(exist_ok=True)
        (etc / "hostname").write_text(self.hostname + "\n")
        with contextlib.suppress(OSError):
            shutil.copyfile("/etc/os-release", etc / "os-release")
        self.fstab = self._fstab_text()
        (etc / "fstab").write_text(self.fstab)
        if self.with_corpus:
            for p in self.filesystems:
                if p.mountpoint in ("/", "/home"):
                    fill_corpus(self.dir_of(p.mountpoint) / "corpus")

    def _fstab_text(self) -> str:
        lines = ["# /etc/fstab of the rescue demo machine", "# <spec> <file> <type> <options> <dump> <pass>"]
        for p in sorted(self.partitions, key=lambda p: _depth(p.mountpoint or "~")):
            if p.fstype == "swap":
                lines.append(f"UUID={p.uuid} none swap sw 0 0")
            else:
                passno = 1 if p.mountpoint == "/" else 2
                lines.append(f"UUID={p.uuid} {p.mountpoint} {p.fstype} defaults 0 {passno}")
        return "\n".join(lines) + "\n"


def _depth(mountpoint: str) -> tuple[int, str]:
    return (0 if mountpoint == "/" else mountpoint.count("/"), mountpoint)


def _wait_nodes(nodes: Sequence[str], timeout: float = 10.0) -> None:
    """Wait until each partition node exists and is the device the kernel now has there.

    Without udev nothing removes /dev/loopNpM when a loop device is detached: a
    node left by an earlier user of the same loop number can carry another
    partition's numbers (mkfs then fails with "No such device or address").
    Such a stale node is made again with the kernel's numbers.
    """
    deadline = time.monotonic() + timeout
    while not all(_node_is_current(n) for n in nodes):
        if time.monotonic() > deadline:
            missing = [n for n in nodes if not _node_is_current(n)]
            raise RescueError(f"partition nodes did not appear: {', '.join(missing)}")
        time.sleep(0.1)
        if nodes:
            rescan(disk_of(nodes[0]))


def _node_is_current(node: str) -> bool:
    """True if node exists with the major:minor sysfs gives; a stale node is replaced."""
    sys_dev = Path("/sys/class/block") / os.path.basename(node) / "dev"
    try:
        major, minor = (int(x) for x in sys_dev.read_text().split(":"))
    except OSError:
        return False  # the kernel does not have the partition (yet)
    want = os.makedev(major, minor)
    try:
        if os.stat(node).st_rdev == want:
            return True
        os.unlink(node)
    except FileNotFoundError:
        pass
    os.mknod(node, 0o660 | stat.S_IFBLK, want)
    return True


def probe(node: str) -> dict[str, str]:
    """blkid -p: what is on a device, read from the device itself (works without udev)."""
    out = run(["blkid", "-p", "-o", "export", node]).stdout
    facts: dict[str, str] = {}
    for line in out.splitlines():
        key, eq, value = line.partition("=")
        if eq:
            facts[key] = value.replace("\\ ", " ")
    return facts


def fill_corpus(top: Path) -> None:
    """Files that break naive copies. Deterministic, so two machines get the same corpus.

    Needs root (device nodes, chown) and a filesystem with user xattrs and ACLs.
    """
    top.mkdir(parents=True, exist_ok=True)
    d = top
    # hard links, in one folder and across folders
    (d / "links").mkdir()
    (d / "links" / "hard-a").write_text("one inode, three names\n")
    os.link(d / "links" / "hard-a", d / "links" / "hard-b")
    (d / "links" / "sub").mkdir()
    os.link(d / "links" / "hard-a", d / "links" / "sub" / "hard-c")
    # symlinks: absolute, relative, dangling, to a folder
    os.symlink("/etc/hostname", d / "links" / "symlink-absolute")
    os.symlink("hard-a", d / "links" / "symlink-relative")
    os.symlink("../no/such/target", d / "links" / "symlink-dangling")
    os.symlink("sub", d / "links" / "symlink-dir")
    # a sparse file: 64 MiB apparent, two 4 KiB blocks of data
    sparse = d / "sparse.img"
    with open(sparse, "wb") as f:
        f.seek(1 * MiB)
        f.write(b"S" * 4096)
        f.seek(64 * MiB - 4096)
        f.write(b"E" * 4096)
    # special files
    os.mkfifo(d / "fifo")
    os.mknod(d / "null-device", 0o666 | 0o020000, os.makedev(1, 3))
    os.mknod(d / "block-device", 0o660 | 0o060000, os.makedev(7, 200))
    # extended attributes and POSIX ACLs
    x = d / "xattr-file"
    x.write_text("has user xattrs\n")
    os.setxattr(x, "user.rescue.text", b"demo value")
    os.setxattr(x, "user.rescue.binary", b"\x00\xff\x10binary")
    a = d / "acl-file"
    a.write_text("has an access ACL\n")
    run(["setfacl", "-m", f"u:{ODD_UID}:rw,g:{ODD_GID}:r", a])
    (d / "acl-dir").mkdir()
    run(["setfacl", "-m", f"u:{ODD_UID}:rwx", "-d", "-m", f"g:{ODD_GID}:rx", d / "acl-dir"])
    # names
    names = d / "names"
    names.mkdir()
    for name in ("name with spaces", "new\nline", "tab\tand 'quotes\"", "üñíçødé ✓", "-starts-with-dash", ".hidden"):
        (names / name).write_text(name + "\n")
    os.close(os.open(os.fsencode(names) + b"/latin1-caf\xe9", os.O_CREAT | os.O_WRONLY, 0o644))
    os.mkdir(os.fsencode(names) + b"/dir-\xff\xfe")
    (names / ("n" * 255)).write_text("the longest name a Linux filesystem takes\n")
    # deep paths
    deep = d / "deep"
    for i in range(40):
        deep = deep / f"level-{i:02d}"
    deep.mkdir(parents=True)
    (deep / "leaf").write_text("40 levels down\n")
    # empty folders with odd modes and owners, files of unknown owners, set-id bits
    odd = d / "odd-dir"
    odd.mkdir()
    os.chown(odd, ODD_UID, ODD_GID)
    os.chmod(odd, 0o2750)
    sticky = d / "sticky-dir"
    sticky.mkdir()
    os.chmod(sticky, 0o1777)
    private = d / "private-dir"
    private.mkdir()
    os.chmod(private, 0o700)
    orphan = d / "orphan-file"
    orphan.write_text("owned by nobody this system knows\n")
    os.chown(orphan, UNKNOWN_UID, UNKNOWN_GID)
    os.chmod(orphan, 0o640)
    setuid = d / "setuid-file"
    setuid.write_text("#!/bin/sh\n")
    os.chmod(setuid, 0o4755)
    empty = d / "empty-file"
    empty.touch()
    os.chmod(empty, 0o000)
    # fixed times (leaves first, so folder times stick)
    for dirpath, dirnames, filenames in os.walk(os.fsencode(top), topdown=False):
        for n in filenames + dirnames:
            os.utime(os.path.join(dirpath, n), (FIXED_MTIME, FIXED_MTIME), follow_symlinks=False)
    os.utime(top, (FIXED_MTIME, FIXED_MTIME))
