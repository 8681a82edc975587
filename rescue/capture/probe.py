"""The plain commands capture runs on a client, locally or over ssh.

The client needs no Python and no rescue: only lsblk, sfdisk, blkid,
findmnt, df, stat, cat and test, which every Linux system has (and, where a
btrfs filesystem is mounted, btrfs, find and lsattr). The same
argv lists run either here (through rescue.run) or on the far side of
`ssh -o BatchMode=yes HOST`, each argument shell-quoted, so nothing the
client prints is ever evaluated: device names and mount points that come
back from the client are checked before they become arguments.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from rescue.errors import RescueError
from rescue.run import CommandError, Result, run

DEVICE = re.compile(r"/dev/[A-Za-z0-9._/:+-]+")


def checked_device(name: str) -> str:
    """A device path from client output, accepted only if it looks like one."""
    if not DEVICE.fullmatch(name) or ".." in name:
        raise RescueError(
            f"the client reported a device name rescue will not use: {name!r}",
            why="device names become command arguments; odd ones are refused, not guessed",
        )
    return name


class Runner:
    """Where the plain commands run."""

    where = "this machine"

    def __call__(self, argv: Sequence[str], ok: Sequence[int] = (0,)) -> Result:
        raise NotImplementedError


class LocalRunner(Runner):
    def __call__(self, argv: Sequence[str], ok: Sequence[int] = (0,)) -> Result:
        r = run(list(argv), check=False, binary=True)
        if r.returncode not in ok:
            raise CommandError(r.argv, r.returncode, r.stderr)
        return r


@dataclass
class SshRunner(Runner):
    host: str
    ssh: str = "ssh"

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9._@:\[\]-]+", self.host) or self.host.startswith("-"):
            raise RescueError(f"not a host name: {self.host!r}", fix="give a plain host name or user@host")
        self.where = self.host

    def __call__(self, argv: Sequence[str], ok: Sequence[int] = (0,)) -> Result:
        remote = shlex.join(argv)
        # BatchMode: never wait for a password at night; StrictHostKeyChecking=yes: only a host
        # whose key is already known (an ssh_config with accept-new or no is overridden);
        # the alive checks end a hung link
        full = [self.ssh, "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=20",
                "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4", self.host, "--", remote]
        r = run(full, check=False, binary=True)
        if r.returncode == 255:
            err = _text(r.stderr)
            if "Host key verification failed" in err:
                raise self._host_key_refused(err) from None
            raise CommandError(full, 255, r.stderr or "ssh could not reach the client")
        if r.returncode not in ok:
            raise CommandError(argv, r.returncode, r.stderr)
        return r


    def _host_key_refused(self, err: str) -> CommandError:
        """ssh refused the client's host key: say which case it is, never how to switch the check off."""
        name = self.host.rpartition("@")[2]
        e = CommandError([self.ssh, self.host], 255, err)
        if "REMOTE HOST IDENTIFICATION HAS CHANGED" in err:
            e.what = f"the ssh host key of {name} is not the one this backup server knows"
            e.why = ("the client was reinstalled or got new host keys, or another machine answers "
                     "under its name; nothing was read from it")
            e.fix = (f"on the client, read its key (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub); if it is "
                     f"the right one, replace the old entry here (ssh-keygen -R {name}; then ssh {name} once "
                     "as the user dirvish runs as, and compare the fingerprint)")
        else:
            e.what = f"the ssh host key of {name} is not known on this backup server"
            e.why = "capture only talks to a client whose host key is already in known_hosts (BatchMode, no prompt)"
            e.fix = f"ssh {name} once as the user dirvish runs as, compare the fingerprint, and accept it"
        return e


def _text(data: bytes | str) -> str:
    return data.decode("utf-8", "replace") if isinstance(data, bytes) else data


# The fixed commands. Per-device ones take the checked device path as their last argument.
HOSTNAME = ("hostname",)
OS_RELEASE = ("cat", "/etc/os-release")
LSBLK = ("lsblk", "-J", "-b", "-O")
FINDMNT = ("findmnt", "-J", "-o", "TARGET,SOURCE,FSTYPE,OPTIONS")
FSTAB = ("cat", "/etc/fstab")
DF = ("df", "-B1", "--output=source,fstype,size,used,avail,target")
SWAPS = ("cat", "/proc/swaps")
EFI = ("test", "-d", "/sys/firmware/efi")
SFDISK = ("sfdisk", "--dump")
BLKID = ("blkid", "-p", "-o", "export")
STAT_ROOTS = ("stat", "-c", "%a %u %g %n")
GRUB_DIRS = ("/boot/grub", "/boot/grub2")
# btrfs (run on one mount point of each btrfs filesystem, given last)
BTRFS_SUBVOLUMES = ("btrfs", "subvolume", "list", "-a", "-u", "-q", "-p", "-R")
BTRFS_READONLY = ("btrfs", "subvolume", "list", "-a", "-r")
BTRFS_DEFAULT = ("btrfs", "subvolume", "get-default")
BTRFS_QGROUPS = ("btrfs", "qgroup", "show", "--raw", "-r", "-e")
# layered storage (only where lsblk shows md arrays or LVM): md arrays given last,
# members for --examine; LVM reports in bytes, JSON; the disks' by-id names
MDSTAT = ("cat", "/proc/mdstat")
MD_DETAIL_EXPORT = ("mdadm", "--detail", "--export")
MD_DETAIL = ("mdadm", "--detail")
MD_EXAMINE = ("mdadm", "--examine")
MDADM_CONF = ("/etc/mdadm/mdadm.conf", "/etc/mdadm.conf")
LVM_DEVICES_FILE = "/etc/lvm/devices/system.devices"
_LVM_COMMON = ("--reportformat", "json", "--units", "b", "--nosuffix")
PVS = ("pvs", *_LVM_COMMON, "-o", "pv_name,pv_uuid,vg_name,pv_size,pe_start,dev_size")
VGS = ("vgs", *_LVM_COMMON, "-o", "vg_name,vg_uuid,vg_extent_size,vg_size,vg_free")
LVS = ("lvs", "-a", *_LVM_COMMON, "-o",
       "lv_name,lv_uuid,vg_name,lv_size,segtype,lv_attr,lv_path,lv_dm_path,pool_lv,data_lv,"
       "metadata_lv,lv_metadata_size,chunk_size,stripes,stripe_size,devices")
MKTEMP = ("mktemp",)
MKTEMP_DIR = ("mktemp", "-d")
LUKS_DUMP = ("cryptsetup", "luksDump")  # DEV
LUKS_HEADER_BACKUP = ("cryptsetup", "luksHeaderBackup")  # DEV --header-backup-file FILE
VGCFGBACKUP = ("vgcfgbackup", "-f")  # FILE VG
BY_ID = ("find", "/dev/disk/by-id", "-maxdepth", "1", "-type", "l", "-printf", "%f %l\\n")
# nocow folders: lsattr -d of every folder down to NOCOW_DEPTH below each btrfs mount point,
# not crossing into another filesystem or subvolume (-xdev; each mounted one is walked from its
# own mount). Deep enough for /var/lib/libvirt/images, /var/lib/mysql, /var/log/journal and
# /home/USER/VMs; a walk of the whole tree each night would cost what the backup itself costs.
# Nested subvolumes that are not mounted (another st_dev, so -xdev stops at them) are walked
# from where the machine shows them.
# find still stats each mount point it meets (to see it is one): `timeout` ends the walk should
# a dead network mount below hang it, and the capture goes on without the nocow folders.
NOCOW_DEPTH = 4
NOCOW_SECONDS = 120
NOCOW_NESTED = 16  # nested subvolumes (not mounted of their own) walked as well, at most


def nocow_walk(mountpoint: str) -> list[str]:
    return ["timeout", str(NOCOW_SECONDS), "find", mountpoint, "-xdev", "-maxdepth", str(NOCOW_DEPTH), "-type", "d",
            "-exec", "lsattr", "-d", "--", "{}", "+"]
