from __future__ import annotations

from dataclasses import dataclass

from rescue.engine.mounts import prove_mounted, top_mount_at
from rescue.errors import UnsafeTarget
from rescue.run import CommandError
from rescue.steps.base import Context, Step, at_root, confined, sh


def mount_argv(device: str, fstype: str, where: str, options: str = "") -> list[str]:
    """The private mount. xfs gets nouuid so an attached twin does not block it
    (the device numbers prove afterwards which disk was mounted). ext4 gets
    noinit_itable, as installers use it: mkfs leaves the inode tables to be
    zeroed in the background after the first mount, and that zeroing would
    share the disk with the copy (on a 1 TB disk, 16 GiB of zeros); it then
    happens at the restored system's first boot instead. bench/bench_copy.py
    measured the copy 6-11 % faster."""
    argv = ["mount", "-t", fstype]
    if fstype == "xfs":
        argv += ["-o", "nouuid"]
    elif fstype == "ext4":
        argv += ["-o", "noinit_itable"]
    if options:  # a btrfs subvolume: subvol=@home
        argv += ["-o", options]
    return argv + [device, where]


@dataclass(frozen=True)
class MountFilesystem(Step):
    """Mount a new filesystem under the private root, and prove it is that device.

    Not persistent: a rerun mounts again. The captured mount options are not
    used for the restore's own mount (an "ro" would stop the copy); they stay
    in the restored fstab.
    """

    kind = "mount"
    persistent = False
    device: str
    mountpoint: str  # inside the restored system: "/", "/home"
    fstype: str
    options: str = ""

    @property
    def key(self) -> str:
        return f"mount:{self.mountpoint}"

    def describe(self) -> str:
        how = f" (-o {self.options})" if self.options else ""
        return f"mount {self.device}{how} at {self.mountpoint}"

    def script(self) -> list[str]:
        where = at_root(self.mountpoint)
        argv = mount_argv(self.device, self.fstype, "WHERE", self.options)
        line = sh(*argv[:-1]) + " " + where
        lines = [f"mkdir -p {where}"]
        if self.fstype == "btrfs":
            lines.append("btrfs device scan --forget || true")
        lines.append(line)
        lines.append(
            f'[ "$(findmnt -fno MAJ:MIN {where} | tr -d \' \')" = "$(lsblk -dno MAJ:MIN {sh(self.device)} | tr -d \' \')" ] '
            f"|| {{ echo {sh(f'{self.mountpoint} is not {self.device}: another disk with the same UUID?')} >&2; exit 1; }}"
        )
        return lines

    def run(self, ctx: Context) -> None:
        where = confined(ctx.root, self.mountpoint, create=True)
        if self.fstype == "btrfs":
            ctx.run(["btrfs", "device", "scan", "--forget"], check=False)
        try:
            ctx.run(mount_argv(self.device, self.fstype, str(where), self.options))
        except CommandError as e:
            if self.fstype == "btrfs" and "File exists" in e.stderr:
                # Linux 6.1 (the rescue system's kernel): a btrfs with the same UUID and device id
                # is mounted from another disk, so the kernel refuses this one ("duplicate device").
                raise UnsafeTarget(
                    f"{self.device} cannot be mounted: a btrfs with the same UUID is mounted from another disk",
                    why="the kernel refused it as a duplicate device (mount: File exists); the old disk "
                        "with the same filesystems is probably still attached and mounted",
                    fix="unmount the old disk's filesystems (or detach that disk) and rerun the same command",
                ) from None
            raise
        why = prove_mounted(ctx.run, where, self.device, self.fstype) or self._wrong_subvolume(where)
        if why:
            ctx.run(["umount", str(where)], check=False)
            raise UnsafeTarget(
                f"mounting {self.device} did not give {self.device}",
                why=why,
                fix="detach the old disk that carries the same filesystems and rerun",
            )

    def _wrong_subvolume(self, where) -> str | None:
        """A subvolume mount's mountinfo root names the subvolume: prove it is the one asked for."""
        subvol = next((o[len("subvol="):] for o in self.options.split(",") if o.startswith("subvol=")), None)
        if subvol is None:
            return None
        m = top_mount_at(where)
        if m is None or m.root.strip("/") != subvol.strip("/"):
            return f"{where} shows subvolume {m.root if m else 'nothing'}, not {subvol}"
        return None
