from __future__ import annotations

from dataclasses import dataclass

from rescue.devices import wait_free
from rescue.errors import PlanRefused, StepFailed
from rescue.run import CommandError
from rescue.steps.base import Context, Step, sh

EXT = ("ext2", "ext3", "ext4")
SUPPORTED = (*EXT, "xfs", "btrfs", "vfat")


def vfat_volume_id(uuid: str) -> str:
    """A FAT volume id as blkid shows it ("ABCD-1234") in mkfs.vfat -i form ("ABCD1234")."""
    return uuid.replace("-", "").upper()


def mkfs_argv(fstype: str, device: str, uuid: str | None, label: str | None) -> list[str]:
    """mkfs for one filesystem, keeping its UUID and label (forced: the disk was just wiped)."""
    if fstype in EXT:
        argv = [f"mkfs.{fstype}", "-F", "-q"]
        if uuid:
            argv += ["-U", uuid]
        if label:
            argv += ["-L", label]
    elif fstype == "xfs":
        argv = ["mkfs.xfs", "-f", "-q"]
        if uuid:
            argv += ["-m", f"uuid={uuid}"]
        if label:
            argv += ["-L", label]
    elif fstype == "btrfs":
        argv = ["mkfs.btrfs", "-f", "-q"]
        if uuid:
            argv += ["-U", uuid]
        if label:
            argv += ["-L", label]
    elif fstype == "vfat":
        argv = ["mkfs.vfat"]
        if uuid:
            argv += ["-i", vfat_volume_id(uuid)]
        if label:
            argv += ["-n", label]
    else:
        raise PlanRefused(
            f"rescue cannot make a {fstype} filesystem",
            why=f"supported are {', '.join(SUPPORTED)}",
            fix="restore this filesystem by hand, or capture it as one of the supported kinds",
        )
    return argv + [device]


def probe(ctx: Context, device: str) -> dict[str, str]:
    """blkid -p: reads the device itself (no udev cache, which may be stale or absent)."""
    try:
        out = ctx.run(["blkid", "-p", "-o", "export", device]).stdout
    except CommandError:
        return {}
    found = {}
    for line in out.splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            found[k] = v
    return found


def same_uuid(a: str | None, b: str | None) -> bool:
    return (a or "").replace("-", "").lower() == (b or "").replace("-", "").lower()


@dataclass(frozen=True)
class MakeFilesystem(Step):
    """mkfs with the captured UUID and label, so fstab and grub keep working.

    An interrupted mkfs is simply made again. When a filesystem cannot keep its
    UUID (btrfs refuses one the kernel still knows from an attached twin), it
    is made with a new one; the journal records old and new so the fstab check
    rewrites fstab and grub's root= and the report says so.
    """

    kind = "mkfs"
    device: str
    fstype: str  # ext2, ext3, ext4, xfs, btrfs, vfat
    uuid: str | None
    label: str | None
    mountpoint: str | None = None  # for the description only

    @property
    def key(self) -> str:
        return f"mkfs:{self.device}"

    def describe(self) -> str:
        what = f" for {self.mountpoint}" if self.mountpoint else ""
        return f"make {self.fstype} on {self.device}{what} (UUID {self.uuid or 'new'}, label {self.label or '-'})"

    def argv(self, uuid: str | None) -> list[str]:
        """The mkfs command line (a subclass may add options, e.g. the ESP's FAT32)."""
        return mkfs_argv(self.fstype, self.device, uuid, self.label)

    def script(self) -> list[str]:
        lines = []
        if self.fstype == "btrfs":
            lines.append("btrfs device scan --forget || true")
        lines.append(sh(*self.argv(self.uuid)))
        lines.append(sh("blkid", "-p", self.device))
        return lines

    def run(self, ctx: Context) -> None:
        argv = self.argv(self.uuid)
        wait_free(self.device)  # a killed run's mount may still be letting go: wait, or name who holds it
        if self.fstype == "btrfs":
            # Forget btrfs devices the kernel remembers but nothing mounts (an old twin).
            ctx.run(["btrfs", "device", "scan", "--forget"], check=False)
        try:
            ctx.run(argv)
        except CommandError as e:
            if self.fstype == "btrfs" and self.uuid and "non-unique" in e.stderr.lower():
                ctx.note(f"btrfs refused UUID {self.uuid} for {self.device}: another attached disk has it (the old disk?); "
                         "making it with a new UUID")
                ctx.run(self.argv(None))
            else:
                raise
        found = probe(ctx, self.device)
        kind = found.get("TYPE", "")
        if kind != self.fstype:
            raise StepFailed(f"{self.device} shows {kind or 'nothing'} after mkfs, not {self.fstype}",
                             fix="check the disk and rerun")
        if self.label and found.get("LABEL") != self.label:
            ctx.note(f"{self.device}: label is {found.get('LABEL')!r}, not {self.label!r} "
                     f"({self.fstype} may shorten labels)")
        new = found.get("UUID")
        data = ctx.data()
        data.pop("uuid_changed", None)
        if self.uuid and not same_uuid(new, self.uuid):
            data["uuid_changed"] = {"old": self.uuid, "new": new, "device": self.device,
                                    "mountpoint": self.mountpoint}
            ctx.note(f"{self.device}{' (' + self.mountpoint + ')' if self.mountpoint else ''}: "
                     f"UUID changed from {self.uuid} to {new}")
        ctx.save()


@dataclass(frozen=True)
class MakeEsp(MakeFilesystem):
    """An EFI system partition: vfat made FAT32, as the UEFI spec asks of a fixed disk's ESP
    (mkfs.vfat alone makes a small one FAT16, which some firmware will not boot from)."""

    def argv(self, uuid: str | None) -> list[str]:
        argv = super().argv(uuid)
        return [argv[0], "-F", "32", *argv[1:]]
