"""The drill's backup disk: made by prepare-disk's engine (rescue.prepare), as a user makes one.

A disk image file gets the rescue system and a backup partition; the drill
mounts the backup partition on the host to let dirvish write the bank, writes
the unattended config beside the bank, and makes "Unattended restore" the
default boot entry of this copy of the disk.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

from rescue.layout.sfdisk import parse_sfdisk
from rescue.devices import attached, make_image_file
from rescue.errors import RescueError
from rescue.run import run

GiB = 1 << 30
BANK = "dirvish"  # prepare-disk's default bank folder on the backup partition
RSNAPSHOT_ROOT = "rsnapshot"  # where the bank drill puts copies of rsnapshot snapshots
CONFIG_NAME = "rescue-unattended.toml"  # rescue.unattended.DEFAULT_CONFIG, relative to /backup
BACKUP_MOUNT_IN_RESCUE = "/backup"  # where the rescue system mounts the backup partition


def prepare(path: Path, size: int, rescue_image: Path, state_dir: Path | None = None) -> Path:
    """A fresh backup disk image file, made by the plan and engine `rescue prepare-disk` runs.

    The journal and the log go beside the image (state_dir), never into the host's state folder."""
    from rescue.prepare import PrepareOptions, prepare_disk

    make_image_file(path, size)
    opts = PrepareOptions(dev=str(path), image=rescue_image, yes=True,
                          state_dir=state_dir or path.parent / "prepare-state")
    prepare_disk(opts, say=lambda line: None)
    return path


def partition_named(disk: str, name: str) -> str:
    """The gpt partition prepare-disk named `name` (rescue, backup, esp)."""
    table = parse_sfdisk(run(["sfdisk", "--dump", disk]).stdout, f"sfdisk --dump {disk}")
    for p in table.partitions:
        if p.name == name:
            return p.node
    raise RescueError(f"{disk} has no partition named {name!r}",
                      why="the drill expects the gpt layout `rescue prepare-disk` makes")


# A plain `mount -o ro` still replays a dirty journal or log, which writes to the
# device; these options read a filesystem exactly as it is (as rescue-mount-backup does).
_READ_ONLY = {"ext2": "ro", "ext3": "ro,noload", "ext4": "ro,noload", "xfs": "ro,norecovery",
              "btrfs": "ro,nologreplay"}


def read_only_options(fstype: str) -> str:
    """mount options that write nothing at all to a filesystem of this type."""
    return _READ_ONLY.get(fstype, "ro")


def fstype_of(node: str) -> str:
    """The filesystem type read from the device itself (no udev on a build host)."""
    return run(["blkid", "-p", "-s", "TYPE", "-o", "value", node], check=False).stdout.strip()


@contextlib.contextmanager
def mounted_partition(image: Path, name: str, where: Path, readonly: bool = False) -> Iterator[Path]:
    """Attach the disk image, mount its partition `name` at `where`; always undone.

    readonly: nothing is written, not even a journal replay."""
    with attached(image) as disk:
        node = partition_named(disk, name)
        where.mkdir(parents=True, exist_ok=True)
        opts = ["-o", read_only_options(fstype_of(node))] if readonly else []
        run(["mount", *opts, node, str(where)])
        try:
            yield where
        finally:
            run(["umount", str(where)], check=False)
            if where.is_mount():
                run(["umount", "-l", str(where)], check=False)


def unattended_config(client: str, target_by_id: str, image: str | None = None, source: str = "bank",
                      compare_tar_onto: str | None = None, compare_tar_runs: int = 1,
                      targets: Sequence[tuple[str, str]] = (),
                      luks_keys: Sequence[tuple[str, str]] = (), luks_new_key: bool = False) -> str:
    """The TOML `rescue.unattended` reads from the backup partition.

    `source`: "bank" (the dirvish bank) or "rsnapshot" (an rsnapshot root, RSNAPSHOT_ROOT).
    `targets`: (captured disk, by-id of its new disk) for a machine of several disks,
    instead of the one target_by_id. `luks_keys`: (crypttab name, keyfile beside the config);
    `luks_new_key`: each container made anew, its keyfile's bytes the one passphrase."""
    folder = RSNAPSHOT_ROOT if source == "rsnapshot" else BANK
    lines = [
        "# Written by rescue drill: restore the newest good images onto the blank disk.",
        f'{source} = "{BACKUP_MOUNT_IN_RESCUE}/{folder}"',
        f'client = "{client}"',
        'after = "poweroff"',
        'after_failure = "poweroff"',  # the drill reads the verdict from the console
    ]
    if image:
        lines.append(f'image = "{image}"')
    if compare_tar_onto:
        lines.append(f'compare_tar_onto = "{compare_tar_onto}"')
        lines.append(f"compare_tar_runs = {max(compare_tar_runs, 1)}")
    if luks_new_key:
        lines.append("luks_new_key = true")
    if luks_keys:
        lines += ["", "[luks_keys]", *(f'"{name}" = "{file}"' for name, file in luks_keys)]
    if targets:
        for disk, by_id in targets:
            lines += ["", "[[targets]]", f'disk = "{disk}"', f'by_id = "{by_id}"']
        return "\n".join(lines) + "\n"
    lines += ["", "[target]", f'by_id = "{target_by_id}"', ""]
    return "\n".join(lines)


KEYS = "keys"  # beside the unattended config: the keyfiles its [luks_keys] names


def write_keys(backup_top: Path, keys: Sequence[tuple[str, Path]]) -> tuple[tuple[str, str], ...]:
    """Copy each container's keyfile onto the backup partition (KEYS/, root only), as an owner
    keeps one beside the unattended config; returns (name, path relative to the config)."""
    if not keys:
        return ()
    folder = backup_top / KEYS
    folder.mkdir(mode=0o700, exist_ok=True)
    out = []
    for name, path in keys:
        dest = folder / f"{name}.key"
        dest.touch(mode=0o600)
        dest.chmod(0o600)
        dest.write_bytes(path.read_bytes())
        out.append((name, f"{KEYS}/{dest.name}"))
    return tuple(out)


def write_config(backup_top: Path, text: str) -> Path:
    path = backup_top / CONFIG_NAME
    path.write_text(text)
    path.chmod(0o600)
    return path


_DEFAULT = re.compile(r"^set default=.*$", re.M)
_TIMEOUT = re.compile(r"^set timeout=.*$", re.M)


def override_path(grub_cfg: str) -> str | None:
    """The backup-partition file the rescue menu sources before it shows (newer images), or None."""
    m = re.search(r'source "\(\$rescue_disk,\$p\)(/[^"]+)"', grub_cfg)
    return m.group(1) if m else None


def boot_override(entry: str = "unattended", timeout: int = 1) -> str:
    return f"# rescue drill: boot {entry} without waiting\nset default={entry}\nset timeout={timeout}\n"


def choose_boot_entry(backup_img: Path, work: Path, entry: str = "unattended") -> str:
    """Make `entry` the default when this backup disk boots; says how.

    The rescue partition stays as prepare-disk wrote it when its menu reads
    an override file from the backup partition; older menus are edited."""
    with mounted_partition(backup_img, "rescue", work / "mnt-rescue", readonly=True) as top:
        cfg = (top / "boot" / "grub" / "grub.cfg").read_text()
    if f"--id {entry}" not in cfg:
        raise RescueError(f"the rescue system's grub menu has no {entry!r} entry")
    rel = override_path(cfg)
    if rel is not None:
        with mounted_partition(backup_img, "backup", work / "mnt-backup") as top:
            path = top / rel.lstrip("/")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(boot_override(entry))
        return f"{rel} on the backup partition sets default={entry}"
    with mounted_partition(backup_img, "rescue", work / "mnt-rescue") as top:
        select_boot_entry(top, entry)
    return f"the rescue partition's grub.cfg now has default={entry}"


def select_boot_entry(rescue_top: Path, entry: str = "unattended", timeout: int = 1) -> Path:
    """Make `entry` the default of the rescue partition's grub menu (this copy of the disk only)."""
    cfg = rescue_top / "boot" / "grub" / "grub.cfg"
    if not cfg.is_file():
        raise RescueError(f"{cfg} is missing", why="the rescue partition has no grub menu")
    text = cfg.read_text()
    if f"--id {entry}" not in text:
        raise RescueError(f"the rescue system's grub menu has no {entry!r} entry", why=str(cfg))
    if not _DEFAULT.search(text):
        raise RescueError(f"{cfg} sets no default entry")
    text = _DEFAULT.sub(f"set default={entry}", text, count=1)
    text = _TIMEOUT.sub(f"set timeout={timeout}", text, count=1)
    cfg.write_text(text)
    return cfg


def blank_disk(path: Path, size: int) -> Path:
    """The new, empty disk the restore writes (sparse)."""
    return make_image_file(path, size)
