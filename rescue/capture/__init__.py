"""`rescue capture`: record a machine's storage layout beside its backup.

collect (plain commands, locally or over ssh) -> raw files -> build (pure
join) -> Layout -> written into a temporary folder and renamed into place,
so a capture that fails never leaves a half-written rescue/ folder and
never touches the rest of the image.

What an image's rescue/ folder holds:
  layout.json            the Layout (versioned JSON), what plan and restore read
  sfdisk-<disk>.dump     sfdisk --dump of each disk with a table (sfdisk-sda.dump)
  lsblk.json             lsblk -J -b -O
  blkid-<dev>.txt        blkid -p -o export of each disk and partition (no udev needed)
  findmnt.json           findmnt -J -o TARGET,SOURCE,FSTYPE,OPTIONS
  df.txt                 df -B1 --output=source,fstype,size,used,avail,target of the disks' mounts
  roots.txt              stat -c '%a %u %g %n' of each mount point (mode, owner of each fs root)
  fstab, os-release, hostname, swaps (/proc/swaps; running machines only)
  boot-mode              uefi or bios (/sys/firmware/efi), or from-disk for --disk captures
  grub                   the grub folders found (/boot/grub, /boot/grub2)
  disks                  the disks recorded, one per line
  btrfs-<dev>-subvolumes.txt  per mounted btrfs filesystem: btrfs subvolume list -a -u -q -p -R
  btrfs-<dev>-readonly.txt    btrfs subvolume list -a -r (the read-only subvolumes)
  btrfs-<dev>-default.txt     btrfs subvolume get-default
  btrfs-<dev>-qgroups.txt     btrfs qgroup show --raw -r -e (only when quotas are on)
  btrfs-<dev>-nocow.txt       the lsattr -d lines with C of the folders down to 4 levels below
                              each of its mount points (only those lines are kept)
Only where lsblk shows md arrays or LVM (issue 17):
  md-<md>-detail.export       mdadm --detail --export (UUID, name, level, metadata, members' roles)
  md-<md>-detail.txt          mdadm --detail (chunk, layout, bitmap, consistency policy, states)
  md-examine-<member>.txt     mdadm --examine of each member (data and super offset, device UUID)
  mdstat, mdadm.conf          /proc/mdstat, /etc/mdadm/mdadm.conf (or /etc/mdadm.conf)
  lvm-{pvs,vgs,lvs}.json      pvs/vgs/lvs -a --reportformat json --units b --nosuffix
  lvm-vgcfgbackup-<vg>.txt    vgcfgbackup -f of each VG (a temporary file on the client, removed)
  lvm-system.devices          /etc/lvm/devices/system.devices, when the machine has one
  disk-by-id.txt              the /dev/disk/by-id links ('NAME TARGET' lines)
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from rescue.capture.build import build_layout
from rescue.capture.collect import Raw, collect_offline, collect_running
from rescue.capture.probe import Runner
from rescue.errors import RescueError
from rescue.layout.model import Layout

__all__ = [
    "HookEnv", "Raw", "build_layout", "capture", "collect_offline", "collect_running", "hook_env",
    "is_local", "write_capture",
]


@dataclass(frozen=True)
class HookEnv:
    """What dirvish tells a post-server hook in its environment."""

    server: str
    client: str
    dest: Path  # the image's tree/ folder
    image: str  # vault:branch:image
    status: str

    @property
    def image_dir(self) -> Path:
        return self.dest.parent


def hook_env(environ: Mapping[str, str]) -> HookEnv | None:
    """The dirvish hook environment, or None when not run by dirvish."""
    if "DIRVISH_DEST" not in environ:
        return None
    missing = [k for k in ("DIRVISH_CLIENT", "DIRVISH_DEST") if not environ.get(k)]
    if missing:
        raise RescueError(f"dirvish hook environment lacks {', '.join(missing)}",
                          fix="run rescue capture as a dirvish post-server hook, or give --out DIR")
    return HookEnv(
        server=environ.get("DIRVISH_SERVER", ""),
        client=environ["DIRVISH_CLIENT"],
        dest=Path(environ["DIRVISH_DEST"].replace("\\ ", " ")),
        image=environ.get("DIRVISH_IMAGE", ""),
        status=environ.get("DIRVISH_STATUS", ""),
    )


def is_local(client: str, server: str | None = None) -> bool:
    """dirvish's own rule: the client is local when it is the server or localhost."""
    here = {socket.gethostname(), "localhost"}
    if server:
        here.add(server)
    return client in here or client.split(".")[0] in here


def now_utc() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()


def capture(
    *,
    client: str | None = None,
    runner: Runner | None = None,
    disk: str | Sequence[str] | None = None,
    root: Path | None = None,
    backup_paths: tuple[str, ...] = (),
) -> tuple[Layout, Raw]:
    """Collect and build; nothing is written. disk(s)+root: a system that is not running."""
    if (disk is None) != (root is None):
        raise RescueError("--disk and --root go together", fix="give both: --disk DEV --root DIR")
    if disk is not None and root is not None:
        raw = collect_offline(disk, root, runner)
        root_s = os.path.realpath(root)
    else:
        raw = collect_running(runner, backup_paths)
        root_s = "/"
    layout = build_layout(raw.files, client=client, captured_at=now_utc(), root=root_s, warnings=tuple(raw.warnings))
    return layout, raw


def write_capture(dest: Path, layout: Layout, raw: Raw) -> Path:
    """Write raw files and layout.json into dest, all or nothing (temp folder, then rename)."""
    dest = Path(dest)
    parent = dest.parent
    if not parent.is_dir():
        raise RescueError(f"{parent} is not a folder", fix="give an existing folder's child as --out, or an image dir")
    tmp = parent / f".{dest.name}.tmp-{os.getpid()}"
    old = parent / f".{dest.name}.old-{os.getpid()}"
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(mode=0o755)
        for name, data in sorted(raw.files.items()):
            # a LUKS header opens the disk for every old passphrase: root's only, from the first byte
            fd = os.open(tmp / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if name.endswith("-header.img") else 0o644)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        (tmp / "layout.json").write_text(layout.dumps())
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        if dest.exists():
            dest.rename(old)
        try:
            tmp.rename(dest)
        except OSError:
            if old.exists():
                old.rename(dest)
            raise
        if old.exists():
            shutil.rmtree(old)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise RescueError(f"could not write the capture into {dest}", why=str(e)) from None
    return dest
