"""The drill for a real machine's backups: restore them into a virtual disk and boot it.

The bank is only read: the chosen image of each vault is copied (rsync,
hard links, ACLs, xattrs kept) into the bank of a backup disk image made by
`rescue prepare-disk`, which qemu boots with a blank disk of the captured
disk's size. After the unattended restore, the drill adds a small report
service to the restored copy (never to anything else), boots it, and checks
that it reaches multi-user with its filesystems (UUIDs as captured) and swap.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rescue.backups.model import Image
from rescue.backups.source import ImageSource
from rescue.devices import attached, partition_path
from rescue.drill import backup_disk
from rescue.drill.demo import (
    RESTORE_TIMEOUT,
    TARGET_BY_ID,
    default_workdir,
    prepare as prepare_shared,
    restore_and_boot,
    tidy,
)
from rescue.drill.demo_disk import FILES, DemoFacts, FsFact, cleanup_mounts
from rescue.drill.report import Phase, PhaseFailed, Report, Run, Say
from rescue.errors import BackupError, PlanRefused, RescueError
from rescue.layout.model import BootMode, Layout
from rescue.plan.build import HOOK_HINT
from rescue.qemu import Firmware
from rescue.run import run

GiB = 1 << 30
MiB = 1 << 20
RESCUE_PART_BYTES = 1100 * MiB  # bios-boot + ESP + rescue partition of prepare-disk, rounded up


@dataclass(frozen=True)
class BankOptions:
    bank: Path | None  # a dirvish bank, or None with rsnapshot
    client: str
    image: str | None = None
    workdir: Path = default_workdir()
    firmware: Firmware | None = None  # None: the captured boot mode
    keep: bool = False
    memory_mib: int = 1024
    rsnapshot: Path | None = None  # an rsnapshot root instead of the bank

    @property
    def source(self) -> ImageSource:
        return ImageSource(banks=(self.bank,) if self.bank else (),
                           rsnapshot_roots=(self.rsnapshot,) if self.rsnapshot else ())


def _tree_bytes(path: Path) -> int:
    out = run(["du", "-s", "-B1", "--one-file-system", str(path)]).stdout.split()
    return int(out[0]) if out else 0


def _root_disk(layout: Layout) -> tuple[str, int]:
    """The captured disk that holds /, and its size."""
    root = layout.filesystem_at("/")
    for disk in layout.disks:
        if root is not None and root.device.startswith(disk.device):
            return disk.device, disk.size
    if len(layout.disks) == 1:
        return layout.disks[0].device, layout.disks[0].size
    raise BackupError("the captured layout does not say which disk holds /",
                      fix="run rescue capture again on the machine")


def _facts(layout: Layout, firmware: Firmware) -> DemoFacts:
    """What the restored machine should report, from its captured layout."""
    fss = tuple(
        FsFact(fs.mountpoint, fs.fstype, fs.uuid) for fs in layout.filesystems
        if fs.mountpoint and fs.uuid and fs.fstype != "swap"
    )
    swap = next((s.uuid for s in layout.swaps if s.uuid), "")
    return DemoFacts(firmware=firmware.value, hostname=layout.hostname or layout.client, label="",
                     disk_size=0, filesystems=fss, swap_uuid=swap, data_sum="", data_list=())


def copy_snapshots(images: tuple[Image, ...], root: Path) -> int:
    """Copy each chosen rsnapshot snapshot's HOST/ and .rescue/HOST/ into root/SNAPSHOT/; read only.

    Only the machine's own folders: a snapshot holds every host of the server."""
    total = 0
    for image in images:
        dest = root / image.name
        dest.mkdir(parents=True, exist_ok=True)
        run(["rsync", "-aHAXS", "--numeric-ids", f"{image.tree}/", f"{dest / image.vault}/"], timeout=None)
        if image.layout_dir is not None:
            (dest / ".rescue").mkdir(exist_ok=True)
            run(["rsync", "-a", f"{image.layout_dir}/", f"{dest / '.rescue' / image.vault}/"])
        total += _tree_bytes(dest)
    return total


def copy_images(images: tuple[Image, ...], bank_dir: Path) -> int:
    """Copy each chosen image (tree, summary, log, rescue/) into bank_dir/VAULT/IMAGE; read only."""
    total = 0
    for image in images:
        dest = bank_dir / image.vault / image.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        run(["rsync", "-aHAXS", "--numeric-ids", f"{image.path}/", f"{dest}/"], timeout=None)
        conf = image.bank / image.vault / "dirvish"
        if conf.is_dir():
            run(["rsync", "-a", f"{conf}/", f"{bank_dir / image.vault / 'dirvish'}/"])
        total += _tree_bytes(dest)
    return total


@contextlib.contextmanager
def _mounted_root(target_img: Path, layout: Layout, where: Path) -> Iterator[Path]:
    """The restored copy's root filesystem, mounted on this host to add the report service."""
    root = layout.filesystem_at("/")
    if root is None:
        raise RescueError("the captured layout has no / filesystem")
    with attached(target_img) as disk:
        node = _partition_with_uuid(disk, root.uuid or "")
        opts = ["-o", "nouuid"] if root.fstype == "xfs" else []  # the original may be mounted here
        where.mkdir(parents=True, exist_ok=True)
        run(["mount", *opts, node, str(where)])
        try:
            yield where
        finally:
            run(["umount", str(where)], check=False)


def _partition_with_uuid(disk: str, uuid: str) -> str:
    """The partition of the restored disk that carries the filesystem UUID (read from the device)."""
    name = os.path.basename(disk)
    for child in sorted(Path("/sys/class/block", name).iterdir()):
        if child.name.startswith(name) and (child / "partition").exists():
            node = partition_path(disk, int((child / "partition").read_text()))
            found = run(["blkid", "-p", "-s", "UUID", "-o", "value", node], check=False).stdout.strip()
            if uuid and found.lower() == uuid.lower():
                return node
    raise RescueError(f"no partition of the restored disk carries the root filesystem UUID {uuid}",
                      why="the restore did not make / as captured")


def add_report_service(root: Path) -> None:
    """The demo machine's report service, without its data fingerprint, in the restored copy."""
    sbin = root / "usr" / "local" / "sbin"
    sbin.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(FILES / "demo-report", sbin / "demo-report")
    os.chmod(sbin / "demo-report", 0o755)
    units = root / "etc" / "systemd" / "system"
    wants = units / "multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(FILES / "demo-report.service", units / "demo-report.service")
    link = wants / "demo-report.service"
    with contextlib.suppress(FileNotFoundError):
        link.unlink()
    link.symlink_to("/etc/systemd/system/demo-report.service")


def add_report_in_rescue_vm(backup_img: Path, target_img: Path, layout: Layout, work: Path,
                            logs: list[str]) -> None:
    """The report service put into a restored copy whose / lies on an LV or an array: the
    backup disk's rescue shell is booted with the restored disk alone beside it, its layers
    assembled and activated there (nothing else is attached to find), / mounted by UUID."""
    import base64

    from rescue.drill.shell_vm import ShellVM, boot_shell

    root = layout.filesystem_at("/")
    if root is None or not root.uuid:
        raise RescueError("the captured layout has no / filesystem with a UUID")
    backup_disk.choose_boot_entry(backup_img, work, "shell")
    put = [
        f"echo {base64.b64encode((FILES / name).read_bytes()).decode()} | base64 -d > /run/r{where}; chmod {mode} /run/r{where}"
        for name, where, mode in (("demo-report", "/usr/local/sbin/demo-report", "755"),
                                  ("demo-report.service", "/etc/systemd/system/demo-report.service", "644"))]
    # one command a line: a console line holds at most 4095 characters
    commands = [
        "mdadm --assemble --scan >/dev/null 2>&1; vgchange -q -ay >/dev/null 2>&1; udevadm settle; "
        f"mkdir -p /run/r && mount $(blkid -U {root.uuid}) /run/r && "
        "mkdir -p /run/r/usr/local/sbin /run/r/etc/systemd/system/multi-user.target.wants && echo STEP-OK",
        *(f"{line} && echo STEP-OK" for line in put),
        "ln -sf /etc/systemd/system/demo-report.service /run/r/etc/systemd/system/multi-user.target.wants/ && "
        "umount /run/r && echo STEP-OK; vgchange -q -an >/dev/null 2>&1; mdadm --stop --scan >/dev/null 2>&1",
    ]
    vm = ShellVM([backup_img, target_img], work, firmware=Firmware.BIOS, name="add-report")
    logs.append(str(vm.serial_log))
    with vm:
        boot_shell(vm)
        for command in commands:
            out = vm.ask(command, timeout=300)
            if "STEP-OK" not in out:
                break
        vm.type("poweroff")
        with contextlib.suppress(RescueError):
            vm.wait_exit(120)
    if "STEP-OK" not in out:
        raise RescueError("the report service could not be added to the restored copy",
                          why=out.strip()[-800:] or "the rescue shell said nothing")


@dataclass(frozen=True)
class Chosen:
    """What the drill restores, read from the bank before anything is made."""

    images: tuple[Image, ...]
    layout: Layout
    firmware: Firmware
    disk: str  # the captured disk that holds /
    disk_size: int
    need: int  # bytes the chosen images hold
    seconds: float  # how long reading the bank took


def choose(opts: BankOptions) -> Chosen:
    """Read the bank: the images to restore, their layout, the disk to rebuild.

    A missing bank, an unknown client, a date with no image or images without
    a captured layout raise here, before the drill makes its work folder."""
    start = time.monotonic()
    selection = opts.source.select(opts.client, opts.image)
    images, layout = selection.images, selection.layout
    if layout is None:
        shown = ", ".join(f"{i.vault}/{i.name}" for i in images)
        raise PlanRefused(
            f"no disk layout was captured with the images of {opts.client} ({shown})",
            why="without the captured partition table and filesystems the drill cannot rebuild the disk",
            fix=HOOK_HINT + ", and make a new backup (or pick a later --image)",
        )
    firmware = opts.firmware or (Firmware.UEFI if layout.boot.mode is BootMode.UEFI else Firmware.BIOS)
    disk, disk_size = _root_disk(layout)
    need = sum(_tree_bytes(i.tree if i.whole_machine else i.path) for i in images)
    return Chosen(images, layout, firmware, disk, disk_size, need, time.monotonic() - start)


def run_bank(opts: BankOptions, say: Say, chosen: Chosen | None = None) -> Report:
    """The bank drill; bad input (see choose) raises before anything is written."""
    chosen = chosen or choose(opts)
    report = Report()
    setup = Run("setup")
    report.runs.append(setup)
    opts.workdir.mkdir(parents=True, exist_ok=True)
    try:
        drill = Run(f"bank {opts.client}")
        report.runs.append(drill)
        try:
            _drill(opts, chosen, setup, drill, say)
        finally:
            tidy(opts.workdir / "bank", keep=opts.keep, failed=not drill.ok)
    except PhaseFailed:
        pass
    report.save(opts.workdir / "report.json")
    return report


def _drill(opts: BankOptions, chosen: Chosen, setup: Run, drill: Run, say: Say) -> None:
    work = opts.workdir / "bank"
    if work.exists():
        cleanup_mounts(work)
        shutil.rmtree(work)
    work.mkdir(parents=True)
    backup_img, target_img = work / "backup-disk.img", work / "new-disk.img"
    images, layout, firmware = chosen.images, chosen.layout, chosen.firmware

    with drill.phase("choose images", say) as ph:
        for image in images:
            ph.notes.append(f"{image.vault}/{image.name} ({image.source})")
        ph.check("a captured layout is among the images", True)
        ph.notes.append(f"restoring {chosen.disk} ({chosen.disk_size / GiB:.1f} GiB) for {firmware.value}")
        ph.notes.append(f"images hold {chosen.need / GiB:.2f} GiB")
    drill.phases[-1].seconds += chosen.seconds

    rescue_image = prepare_shared(setup, say, with_demo_os=False).rescue_image

    with drill.phase("backup disk with copies of the images", say) as ph:
        size = RESCUE_PART_BYTES + int(chosen.need * 1.15) + GiB
        backup_disk.prepare(backup_img, size, rescue_image)
        with backup_disk.mounted_partition(backup_img, "backup", work / "mnt-backup") as top:
            if opts.rsnapshot is not None:
                copied = copy_snapshots(images, top / backup_disk.RSNAPSHOT_ROOT)
            else:
                copied = copy_images(images, top / backup_disk.BANK)
            source = "rsnapshot" if opts.rsnapshot is not None else "bank"
            backup_disk.write_config(top, backup_disk.unattended_config(opts.client, TARGET_BY_ID, source=source))
        ph.check("images copied", copied > 0, got=f"{copied / GiB:.2f} GiB")
        ph.notes.append(backup_disk.choose_boot_entry(backup_img, work, "unattended"))
        backup_disk.blank_disk(target_img, chosen.disk_size)

    def add_report(ph: Phase) -> None:
        root = layout.filesystem_at("/")
        if root is not None and root.device.startswith(chosen.disk):
            with _mounted_root(target_img, layout, work / "mnt-restored"):
                add_report_service(work / "mnt-restored")
        else:  # / on an LV or an array: this host may have no device-mapper nor md; the rescue system has
            add_report_in_rescue_vm(backup_img, target_img, layout, work, drill.logs)
        ph.notes.append("a report service was added to the restored copy (only there) to read its state")

    restore_and_boot(drill, say, work=work, firmware=firmware, backup_img=backup_img, target_img=target_img,
                     facts=_facts(layout, firmware), memory_mib=opts.memory_mib, label=opts.client,
                     data=False, restore_timeout=RESTORE_TIMEOUT * 4, before_boot=add_report)
