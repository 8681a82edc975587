"""Unattended restore: a TOML config on the backup partition says what goes where.

The rescue image's "Unattended restore" boot entry runs scripts/unattended-restore,
which runs this. It picks exactly one target disk by the config's selector
(refusing when none or several match), runs `rescue restore --yes`, prints
markers on the console that a person, or the drill, can wait for, and then
powers off, reboots or stays, as the config says.

Example /backup/rescue-unattended.toml:

    bank = "/backup/bank"            # or banks = ["/backup/bank", "/backup/bank2"]
    # rsnapshot = "/backup/rsnapshot"  # or instead: an rsnapshot snapshot_root (or a list of them)
    # tree = "/backup/copy/tree"       # or instead: a plain folder holding the machine (or a list)
    client = "web1"
    image = "2026-1126"              # optional: the newest good image at or before this date
    after = "poweroff"               # after success: poweroff, reboot or stay
    after_failure = "stay"           # after a failure (default stay: the console shows why)
    bootloader = "auto"              # optional: auto, install or skip
    grow = "/home"                   # optional: the partition that takes the size difference
    source_disk = "/dev/sda"         # optional: the captured disk this target replaces (machines with
                                     # several; mirrored disks need none: the one grub was on is taken)
    log_dir = "/var/log/rescue"      # optional: journal, log and report (the backup is read-only)
    btrfs_snapshots = "restore"      # optional, as --btrfs-snapshots: btrfs snapshots made as subvolumes
                                     # holding their data (default "leave-out": listed in the plan)
    compare_tar_onto = "virtio-rescue-d2"  # optional (the drill's --compare-tar): after the restore,
                                     # time a plain tar pipe of the same images onto this empty disk
    compare_tar_runs = 3             # optional: that many times, the best counts (default 1)

    [fstype]                         # optional: make these types instead of the captured ones
    "/home" = "ext4"

    [size]                           # optional: exact partition sizes, as --size
    "/home" = "200G"

    [luks_keys]                      # LUKS containers (by crypttab name or LUKS UUID): the keyfile
    cryptroot = "keys/web1-root.key" # that opens each, as --luks-key (relative: beside this config);
                                     # the key itself never goes into this file
    # luks_new_key = true            # optional: luksFormat anew (new master key) with the keyfile's
                                     # contents as the one passphrase, instead of the kept header

    [target]                         # exactly one of:
    by_id = "ata-Samsung_SSD_870_S5Y1NX0R123456"   # a /dev/disk/by-id name (or the full path)
    # device = "/dev/sdb"
    # empty_disk_min_gib = 100       # the only empty disk of at least 100 GiB

A machine with several disks names, instead of [target], one [[targets]] per
captured disk: `disk` is the captured disk (its device as captured, its by-id
name or its serial), plus one selector of the new disk as in [target]. A
captured disk that is not restored must be left out by name:

    skip_disks = ["/dev/sdc"]        # optional: captured disks left out (their vaults too)

    [[targets]]
    disk = "/dev/sda"
    by_id = "ata-NEW_DISK_1"
    [[targets]]
    disk = "/dev/sdb"
    by_id = "ata-NEW_DISK_2"
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rescue.backups.source import ImageSource
from rescue.commands.plan import parse_size
from rescue.engine.restore import RestoreOptions
from rescue.errors import Exit, PlanRefused, RescueError
from rescue.paths import host_paths
from rescue.plan.model import SNAPSHOT_CHOICES
from rescue.target import TargetDisk

MARKER = "RESCUE-RESTORE:"
AFTER = ("poweroff", "reboot", "stay")
GiB = 1 << 30


class ConfigError(RescueError):
    """The unattended config is missing or says something rescue cannot follow."""

    exit_code = Exit.USAGE


@dataclass(frozen=True)
class Selector:
    by_id: str | None = None
    device: str | None = None
    empty_disk_min_gib: float | None = None

    def describe(self) -> str:
        if self.by_id:
            return f"the disk with by-id name {self.by_id}"
        if self.device:
            return f"the disk {self.device}"
        return f"the only empty disk of at least {self.empty_disk_min_gib:g} GiB"


@dataclass(frozen=True)
class Config:
    path: Path
    banks: tuple[Path, ...]
    client: str
    target: Selector | None  # one disk; None when `targets` maps several
    image: str | None = None
    after: str = "poweroff"
    after_failure: str = "stay"
    bootloader: str = "auto"
    grow: str | None = None
    log_dir: Path | None = None
    fstypes: tuple[tuple[str, str], ...] = ()  # (mount point, type) pairs, as --fstype
    sizes: tuple[tuple[str, str], ...] = ()  # (mount point, number or swap; size such as "200G"), as --size
    rsnapshot_roots: tuple[Path, ...] = ()
    trees: tuple[Path, ...] = ()
    source_disk: str | None = None  # the captured disk this target replaces, as --source-disk
    compare_tar_onto: str | None = None  # by-id name of an empty scratch disk (the drill's --compare-tar)
    compare_tar_runs: int = 1  # the tar pipe timed this many times, the best counts
    luks_keys: tuple[tuple[str, str], ...] = ()  # (crypttab name or LUKS UUID, keyfile), as --luks-key
    luks_new_key: bool = False  # as --luks-new-key
    btrfs_snapshots: str = "leave-out"  # as --btrfs-snapshots
    targets: tuple[tuple[str, Selector], ...] = ()  # (captured disk, its new disk) per [[targets]]
    skip_disks: tuple[str, ...] = ()  # captured disks left out on purpose

    @property
    def source(self) -> ImageSource:
        return ImageSource(banks=self.banks, rsnapshot_roots=self.rsnapshot_roots, trees=self.trees,
                           tree_client=self.client)


def load_config(path: Path) -> Config:
    """Read and check the config; every problem names the file and the key."""
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"no unattended config at {path}",
                          fix=f"write one (see `pydoc rescue.unattended`) or boot the normal rescue entry") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} cannot be read: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path} is not valid TOML: {e}", fix="correct the file") from None

    def bad(key: str, what: str) -> ConfigError:
        return ConfigError(f"{path}: {key} {what}", fix="correct the file; `pydoc rescue.unattended` shows an example")

    known = {"bank", "banks", "rsnapshot", "tree", "client", "image", "after", "after_failure", "bootloader", "grow", "log_dir",
             "fstype", "size", "target", "targets", "skip_disks", "source_disk", "compare_tar_onto", "compare_tar_runs",
             "luks_keys", "luks_new_key", "btrfs_snapshots"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise bad(unknown[0], "is not a setting rescue knows")
    banks: list[str] = []
    if "bank" in data:
        banks.append(data["bank"])
    if "banks" in data:
        if not isinstance(data["banks"], list):
            raise bad("banks", "must be a list of folders")
        banks.extend(data["banks"])
    others: dict[str, list[str]] = {}
    for key in ("rsnapshot", "tree"):
        value = data.get(key, [])
        others[key] = [value] if isinstance(value, str) else value
        if not isinstance(others[key], list) or not all(isinstance(v, str) and v for v in others[key]):
            raise bad(key, "must name a folder, or be a list of folders")
    if not banks and not others["rsnapshot"] and not others["tree"]:
        raise bad("bank", "must name the bank folder (bank = \"/backup/bank\"), or give "
                          "rsnapshot = \"ROOT\" or tree = \"DIR\" instead")
    if not all(isinstance(b, str) and b for b in banks):
        raise bad("bank", "must name the bank folder (bank = \"/backup/bank\")")
    client = data.get("client")
    if not isinstance(client, str) or not client:
        raise bad("client", "must name the machine to restore")
    for key in ("image", "grow", "log_dir", "source_disk", "compare_tar_onto"):
        if key in data and not isinstance(data[key], str):
            raise bad(key, "must be a string")
    runs = data.get("compare_tar_runs", 1)
    if not isinstance(runs, int) or isinstance(runs, bool) or not 1 <= runs <= 9:
        raise bad("compare_tar_runs", "must be a whole number from 1 to 9")
    after = data.get("after", "poweroff")
    after_failure = data.get("after_failure", "stay")
    for key, value in (("after", after), ("after_failure", after_failure)):
        if value not in AFTER:
            raise bad(key, f"must be one of {', '.join(AFTER)}")
    bootloader = data.get("bootloader", "auto")
    if bootloader not in ("auto", "install", "skip"):
        raise bad("bootloader", "must be auto, install or skip")
    fstype = data.get("fstype", {})
    if not isinstance(fstype, dict) or not all(isinstance(k, str) and k.startswith("/") and isinstance(v, str)
                                              and v for k, v in fstype.items()):
        raise bad("[fstype]", 'must map mount points to types ("/home" = "ext4")')
    size = data.get("size", {})
    if not isinstance(size, dict) or not all(isinstance(v, str) and parse_size(v) for v in size.values()):
        raise bad("[size]", 'must map mount points to sizes ("/home" = "200G")')
    luks_keys = data.get("luks_keys", {})
    if not isinstance(luks_keys, dict) or not all(isinstance(k, str) and k and isinstance(v, str) and v
                                                  for k, v in luks_keys.items()):
        raise bad("[luks_keys]", 'must map LUKS containers to keyfiles (cryptroot = "keys/root.key")')
    if not isinstance(data.get("luks_new_key", False), bool):
        raise bad("luks_new_key", "must be true or false")
    if data.get("btrfs_snapshots", "leave-out") not in SNAPSHOT_CHOICES:
        raise bad("btrfs_snapshots", f"must be {' or '.join(SNAPSHOT_CHOICES)} (what becomes of btrfs snapshots)")
    selector: Selector | None = None
    targets: list[tuple[str, Selector]] = []
    if "targets" in data:
        if "target" in data or not isinstance(data["targets"], list) or not data["targets"]:
            raise bad("[[targets]]", "must be one table per captured disk, instead of [target]")
        for i, t in enumerate(data["targets"]):
            where = f"targets[{i}]"
            if not isinstance(t, dict) or not isinstance(t.get("disk"), str) or not t["disk"]:
                raise bad(where, "must name the captured disk (disk = \"/dev/sda\") and its new disk")
            targets.append((t["disk"], _selector({k: v for k, v in t.items() if k != "disk"}, where, bad)))
    else:
        t = data.get("target")
        if not isinstance(t, dict):
            raise bad("[target]", "is missing: say which disk to overwrite (by_id, device or empty_disk_min_gib)")
        selector = _selector(t, "target", bad)
    skip_disks = data.get("skip_disks", [])
    if not isinstance(skip_disks, list) or not all(isinstance(d, str) and d for d in skip_disks):
        raise bad("skip_disks", "must be a list of captured disks")
    return Config(
        path=path, banks=tuple(Path(b) for b in banks), client=client, target=selector,
        image=data.get("image"), after=after, after_failure=after_failure, bootloader=bootloader,
        grow=data.get("grow"), log_dir=Path(data["log_dir"]) if data.get("log_dir") else None,
        fstypes=tuple(fstype.items()), sizes=tuple(size.items()),
        rsnapshot_roots=tuple(Path(r) for r in others["rsnapshot"]), trees=tuple(Path(t) for t in others["tree"]),
        source_disk=data.get("source_disk") or None, compare_tar_onto=data.get("compare_tar_onto") or None,
        compare_tar_runs=runs,
        targets=tuple(targets), skip_disks=tuple(skip_disks),
        luks_keys=tuple((name, str(path.parent / file)) for name, file in luks_keys.items()),
        luks_new_key=data.get("luks_new_key", False), btrfs_snapshots=data.get("btrfs_snapshots", "leave-out"),
    )


def _selector(t: dict, where: str, bad: Callable[[str, str], ConfigError]) -> Selector:
    """One disk selector: exactly one of by_id, device, empty_disk_min_gib."""
    unknown = sorted(set(t) - {"by_id", "device", "empty_disk_min_gib"})
    if unknown:
        raise bad(f"{where}.{unknown[0]}", "is not a selector rescue knows")
    if len(t) != 1:
        raise bad(f"[{where}]", "must have exactly one of by_id, device, empty_disk_min_gib")
    if "empty_disk_min_gib" in t:
        n = t["empty_disk_min_gib"]
        if isinstance(n, bool) or not isinstance(n, (int, float)) or n <= 0:
            raise bad(f"{where}.empty_disk_min_gib", "must be a positive number of GiB")
        return Selector(empty_disk_min_gib=float(n))
    key, value = next(iter(t.items()))
    if not isinstance(value, str) or not value:
        raise bad(f"{where}.{key}", "must be a non-empty string")
    return Selector(**{key: value})


def select_targets(config: Config, disks: Sequence[TargetDisk]) -> tuple[str, ...]:
    """The devices of the config's target disks, in its order; each selector picks exactly one."""
    if config.target is not None:
        return (select_target(config.target, disks).device,)
    return tuple(select_target(selector, disks).device for _, selector in config.targets)


def select_target(selector: Selector, disks: Sequence[TargetDisk]) -> TargetDisk:
    """Exactly one disk, or a refusal that lists what was seen."""
    if selector.by_id:
        want = selector.by_id if selector.by_id.startswith("/") else f"/dev/disk/by-id/{selector.by_id}"
        found = [d for d in disks if want in d.by_id]
    elif selector.device:
        real = os.path.realpath(selector.device)
        found = [d for d in disks if d.device in (selector.device, real)]
    else:
        limit = (selector.empty_disk_min_gib or 0) * GiB
        found = [d for d in disks if d.empty and d.size >= limit and not d.unsafe_reasons]
    seen = "; ".join(
        f"{d.device} {d.size / GiB:.1f} GiB{' empty' if d.empty else ''}"
        f"{' (' + ', '.join(d.unsafe_reasons) + ')' if d.unsafe_reasons else ''}" for d in disks
    ) or "no disks at all"
    if not found:
        raise PlanRefused(f"no disk is {selector.describe()}", why=f"disks seen: {seen}",
                          fix="attach the new disk, or correct [target] in the unattended config")
    if len(found) > 1:
        raise PlanRefused(
            f"{len(found)} disks match {selector.describe()}: {', '.join(d.device for d in found)}",
            why="an unattended restore overwrites a disk only when the config names exactly one",
            fix="detach the disks that must not be touched, or name the target by its by_id in the config",
        )
    return found[0]


def restore_options(config: Config, devices: Sequence[str] = ()) -> RestoreOptions:
    """The config's answers as the options every face gives the one restore object.

    `devices`: the selected disks of [[targets]], in its order."""
    from rescue.commands.plan import parse_sizes

    log_dir = config.log_dir
    return RestoreOptions(
        client=config.client, image=config.image, grow=config.grow, fstypes=config.fstypes,
        source_disk=config.source_disk,
        sizes=parse_sizes([f"{where}={text}" for where, text in config.sizes]), bootloader=config.bootloader,
        state_dir=log_dir, log=log_dir / f"restore-{time.strftime('%Y%m%d-%H%M%S')}.log" if log_dir else None,
        face="rescue unattended restore", skip_disks=config.skip_disks,
        disk_map=tuple((old, os.path.realpath(d)) for (old, _), d in zip(config.targets, devices)),
        luks_keys=config.luks_keys, luks_new_key=config.luks_new_key, btrfs_snapshots=config.btrfs_snapshots)


def restore(config: Config, device: str | Sequence[str], console: Callable[..., int] | None = None) -> int:
    """`rescue restore --yes` onto the selected disk(s), with RESCUE-STEP-DONE lines for the drill."""
    from rescue.commands.restore import restore_on_console
    from rescue.engine.restore import Restore

    devices = [device] if isinstance(device, str) else list(device)
    job = Restore(config.source, restore_options(config, devices if config.targets else ()))
    selection = job.select()
    for note in selection.notes:
        print(f"rescue restore: note: {note}", file=sys.stderr)
    real = [os.path.realpath(d) for d in devices]
    return (console or restore_on_console)(job, selection, real[0] if len(real) == 1 else real, yes=True,
                                           markers=True)


def compare_tar(config: Config, target: str) -> str:
    """A plain tar pipe of the restored images onto the config's empty scratch disk, timed: the
    peer the restore's copy is measured against, in the same boot. Returns the line for the
    console. The scratch disk must be empty and not the target; it is made ext4 afresh for each
    of compare_tar_runs runs, and the best run counts (under emulation a tar pipe's time
    varied from 24 to 128 s between boots of the same drill)."""
    import tempfile

    from rescue.engine.copy import FsUsage
    from rescue.engine.restore import Restore
    from rescue.probe import list_disks
    from rescue.run import run, spawn

    assert config.compare_tar_onto
    disks = list_disks(backup_sources=config.source.folders)
    try:
        scratch = select_target(Selector(by_id=config.compare_tar_onto), disks)
    except PlanRefused as e:
        return f"COMPARE skipped: {e}"
    if scratch.device == os.path.realpath(target) or not scratch.empty or scratch.unsafe_reasons:
        return f"COMPARE skipped: {scratch.device} is not an empty spare disk"
    images = Restore(config.source, restore_options(config)).select().images
    times: list[float] = []
    mib = 0.0
    for _ in range(config.compare_tar_runs):  # each onto a fresh filesystem, from the backup disk
        run(["mkfs.ext4", "-q", "-F", scratch.device])
        mnt = Path(tempfile.mkdtemp(prefix="rescue-compare-"))
        run(["mount", "-o", "noinit_itable", scratch.device, str(mnt)])
        try:
            # the restore read the images from the backup disk; tar must too, not from the
            # page cache the restore's copy and verify (or the run before) left behind
            run(["sync"])
            Path("/proc/sys/vm/drop_caches").write_text("3\n")
            before, t0 = FsUsage.of(mnt), time.monotonic()
            for image in images:
                dest = mnt / image.vault
                dest.mkdir()
                reader = spawn(["tar", "--xattrs", "--acls", "--numeric-owner", "-C", str(image.tree), "-cf", "-",
                                "."], stderr=None)
                writer = spawn(["tar", "--xattrs", "--xattrs-include=*", "--acls", "--numeric-owner", "-C",
                                str(dest), "-xpf", "-"], stdin=reader.stdout, stdout=None, stderr=None)
                reader.stdout.close()
                writer.wait()
                reader.wait()
            run(["sync"])
            times.append(time.monotonic() - t0)
            mib = (FsUsage.of(mnt).bytes - before.bytes) / (1 << 20)
        finally:
            run(["umount", str(mnt)], check=False)
            mnt.rmdir()
    best = min(times)
    each = f" (best of {len(times)}: {', '.join(f'{t:.1f}' for t in times)} s)" if len(times) > 1 else ""
    return f"COMPARE tar {mib:.1f} MiB in {best:.1f} s = {mib / max(best, 0.001):.1f} MiB/s{each}"


def power(action: str, run: Callable[[list[str]], object] | None = None) -> list[str] | None:
    """Power off or reboot the rescue system (systemd when it runs, else the plain commands)."""
    if action == "stay":
        return None
    from rescue.run import run as gateway, which

    if Path("/run/systemd/system").is_dir() and which("systemctl"):
        argv = ["systemctl", action]
    else:
        argv = [action, "-f"]
    (run or (lambda a: gateway(a, check=False)))(argv)
    return argv


def marker(text: str, kmsg: bool) -> None:
    """A line the console shows and the drill waits for."""
    line = f"{MARKER} {text}"
    print(line, flush=True)
    if kmsg:
        try:
            with open("/dev/kmsg", "w") as f:  # the kernel prints it on every console, serial too
                f.write(line + "\n")
        except OSError:
            pass


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="unattended-restore", description=__doc__.split("\n\n")[0])
    p.add_argument("config", nargs="?", type=Path, default=None,
                   help=f"the config file (default: rescue.config= on the kernel command line, else {host_paths().unattended_config})")
    p.add_argument("--kmsg", action="store_true", help="also write the markers to the kernel log (the console)")
    p.add_argument("--no-power", action="store_true", help="never power off or reboot (testing)")
    args = p.parse_args(argv)
    path = args.config or config_from_cmdline() or host_paths().unattended_config
    marker(f"START {path}", args.kmsg)
    code = Exit.ERROR
    config: Config | None = None
    try:
        config = load_config(path)
        from rescue.probe import list_disks

        devices = select_targets(config, list_disks(backup_sources=config.source.folders))
        marker(f"TARGET {' '.join(devices)}", args.kmsg)
        code = Exit(restore(config, devices))
        if code == Exit.OK and config.compare_tar_onto:
            marker(compare_tar(config, devices[0]), args.kmsg)
    except RescueError as e:
        print(f"unattended-restore: {e}", file=sys.stderr, flush=True)
        code = e.exit_code
    except KeyboardInterrupt:  # Ctrl-C, or a TERM (shutdown): mounts released, the journal resumes
        print("unattended-restore: interrupted", file=sys.stderr, flush=True)
        code = Exit.ABORTED
    except Exception as e:  # noqa: BLE001 - the console must still get a marker
        print(f"unattended-restore: unexpected error: {e!r}", file=sys.stderr, flush=True)
        code = Exit.ERROR
    ok = code in (Exit.OK, Exit.INCOMPLETE)
    marker("OK" if code == Exit.OK else f"INCOMPLETE {int(code)}" if ok else f"FAILED {int(code)}", args.kmsg)
    if config is not None and not args.no_power:
        power(config.after if ok else config.after_failure)
    return int(code)


def config_from_cmdline(cmdline: str | None = None) -> Path | None:
    """rescue.config=PATH on the kernel command line (set by the boot entry)."""
    try:
        text = cmdline if cmdline is not None else Path("/proc/cmdline").read_text()
    except OSError:
        return None
    for word in text.split():
        if word.startswith("rescue.config="):
            return Path(word.split("=", 1)[1])
    return None


if __name__ == "__main__":
    sys.exit(main())
