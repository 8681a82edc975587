"""The demo drill: a whole disaster and its recovery, on virtual disks.

    demo machine ─ dirvish x2 + rescue capture ─► backup disk (rescue prepare-disk)
    original disk thrown away (its facts on record)
    qemu: boot the backup disk ("Unattended restore") + a blank, bigger disk
          ─► RESCUE-RESTORE: OK
    qemu: boot the restored disk alone ─► DEMO-* lines: multi-user, data,
          /tmp 1777, swap, filesystem UUIDs as captured

Every phase is timed and checked; the first failure of a firmware's drill
stops that drill and keeps its serial logs.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rescue.drill import backup_disk, demo_os, layered, layouts
from rescue.drill.checks import (
    BOOT_FAILURES,
    NOT_BOOTABLE,
    check_restored,
    compared,
    step_times,
    steps_done,
    timing_notes,
)
from rescue.drill.demo_disk import DISK_SIZE, DemoDisk, DemoFacts, cleanup_mounts
from rescue.drill.report import Phase, PhaseFailed, Report, Run, Say
from rescue.drill.shell_vm import ShellVM
from rescue.layout.model import Layout
from rescue.errors import RescueError
from rescue.qemu import VM, BootTimeout, Firmware

GiB = 1 << 30
BACKUP_DISK_SIZE = 3 * GiB
TARGET_SIZE = DISK_SIZE + 1 * GiB  # a different (bigger) disk than the one that died
CLIENT = "localhost"  # dirvish backs up this host's mounts; it names the client so
TARGET_BY_ID = "virtio-rescue-d1"  # the second qemu disk (serial rescue-d1) as udev names it

RESTORE_TIMEOUT = 1800  # TCG on a busy machine: boot ~1-3 min, restore ~3-6 min
BOOT_TIMEOUT = 900
RESTORE_OK = "RESCUE-RESTORE: OK"
RESTORE_FAILED = ("RESCUE-RESTORE: FAILED", "RESCUE-RESTORE: INCOMPLETE", "Kernel panic", *NOT_BOOTABLE)
RESTORE_END = "RESCUE-UNATTENDED-END"  # the rescue console's line once the restore's output ended
BOOTLOADER = "bootloader"  # the key of the restore's bootloader step (rescue.steps.bootloader)


@dataclass(frozen=True)
class Options:
    workdir: Path
    firmwares: tuple[Firmware, ...] = (Firmware.BIOS, Firmware.UEFI)
    keep: bool = False
    memory_mib: int = 1024
    compare_tar: int = 0  # also time a plain tar pipe of the same images in the restore's boot, this many times
    layout: str = "plain"  # rescue.drill.layouts: the demo machine's storage
    onto_one_disk: bool = False  # a machine of several disks restored onto one new disk
    rebuild_machine: bool = False  # a layered machine: build it again, not the cached one
    luks_new_key: bool = False  # the restore makes each LUKS container anew, its one key the new passphrase


@dataclass(frozen=True)
class Prepared:
    """What every firmware's drill shares: the rescue image and the demo OS."""

    rescue_image: Path
    os_tarball: Path | None  # None for the bank drill


def prepare(setup: Run, say: Say, with_demo_os: bool = True) -> Prepared:
    with setup.phase("rescue image (build or reuse)", say) as ph:
        from rescue.image.build import ensure_image

        image, manifest = ensure_image(say=lambda m: say(f"  rescue-image: {m}"))
        ph.notes.append(f"{image} (key {manifest.build_key}, {manifest.used_bytes >> 20} MiB used)")
        ph.check("rescue image exists", image.is_file(), str(image))
    if not with_demo_os:
        return Prepared(image, None)
    with setup.phase("demo OS (build or reuse)", say) as ph:
        built = demo_os.build(progress=lambda m: say(f"  {m}"))
        ph.notes.append(f"{built.tarball} ({'built' if built.built else 'reused'})")
        ph.check("demo OS tarball exists", built.tarball.is_file(), str(built.tarball))
    return Prepared(image, built.tarball)


def drill_one(fw: Firmware, prepared: Prepared, opts: Options, run: Run, say: Say) -> None:
    """One firmware's drill, phase by phase; raises PhaseFailed at the first failure."""
    work = opts.workdir / fw.value
    if work.exists():
        cleanup_mounts(work)
        shutil.rmtree(work)
    work.mkdir(parents=True)
    backup_img = work / "backup-disk.img"
    target_img = work / "new-disk.img"
    facts_file = work / "demo-facts.json"

    assert prepared.os_tarball is not None
    lay = layouts.layout_of(opts.layout)
    captured_disks: tuple[str, ...] = ()
    luks_keys: tuple[tuple[str, Path], ...] = ()
    if lay.built_in is layouts.BuiltIn.VM:
        with run.phase("backup disk (rescue prepare-disk)", say) as ph:
            backup_disk.prepare(backup_img, BACKUP_DISK_SIZE, prepared.rescue_image)
            ph.check("backup disk made", backup_img.is_file(), str(backup_img))
        facts, images, disks = layered.build_machine(lay, fw, prepared.os_tarball, work, backup_img, run, say,
                                                     rescue_image=prepared.rescue_image,
                                                     rebuild=opts.rebuild_machine)
        facts.save(facts_file)
        captured_disks = tuple(layered.guest_disks(lay).values())
        if opts.onto_one_disk:
            # one [target]: the restore takes the half of each mirror the boot code was on
            captured_disks = captured_disks[:1]
            facts = dataclasses.replace(facts, arrays_degraded=1 if facts.arrays else 0)
            facts.save(facts_file)
        if layouts.luks_layers(lay):
            luks_keys, facts = _luks_restore_keys(lay, work / "keys", facts, opts.luks_new_key)
            facts.save(facts_file)
        with run.phase("disaster: original disk gone", say) as ph:
            for disk in disks:
                disk.unlink()
            ph.check("the machine's disks deleted", not any(d.exists() for d in disks))
    else:
        images = _plain_machine(fw, prepared.os_tarball, prepared.rescue_image, work, backup_img, facts_file, run, say)

    # A machine of several disks gets one new disk for each, named in [[targets]]; the
    # qemu disk after the backup disk is virtio-rescue-d1, the next d2, and so on.
    more = tuple(work / f"new-disk-{i}.img" for i in range(2, len(captured_disks) + 1))
    targets = tuple((old, f"virtio-rescue-d{i}") for i, old in enumerate(captured_disks, start=1)) if more else ()
    with run.phase("unattended config + boot entry", say) as ph:
        scratch_by_id = f"virtio-rescue-d{2 + len(more)}"
        with backup_disk.mounted_partition(backup_img, "backup", work / "mnt-backup") as top:
            names = backup_disk.write_keys(top, luks_keys)
            cfg = backup_disk.write_config(top, backup_disk.unattended_config(
                CLIENT, TARGET_BY_ID, compare_tar_onto=scratch_by_id if opts.compare_tar else None,
                compare_tar_runs=opts.compare_tar, targets=targets, luks_keys=names, luks_new_key=opts.luks_new_key))
            if names:
                ph.notes.append("[luks_keys]: " + ", ".join(f"{n} = {f}" for n, f in names)
                                + (" (luks_new_key: a new master key, this key its one keyslot)"
                                   if opts.luks_new_key else " (the kept header opens with it)"))
            onto = ", ".join(f"{old} onto {new}" for old, new in targets) or f"target by-id {TARGET_BY_ID}"
            ph.notes.append(f"{cfg.name}: client {CLIENT}, {onto}, newest image {images[-1]}")
        how = backup_disk.choose_boot_entry(backup_img, work, "unattended")
        ph.check("grub default is the Unattended restore entry", True, got=how)
        ph.notes.append(how)
        for img in (target_img, *more):
            backup_disk.blank_disk(img, TARGET_SIZE)
            ph.notes.append(f"blank target {img.name}: {TARGET_SIZE / GiB:.0f} GiB (the original was "
                            f"{DISK_SIZE / GiB:.0f} GiB)")
        scratch: tuple[Path, ...] = ()
        if opts.compare_tar:
            scratch = (work / "tar-scratch.img",)
            backup_disk.blank_disk(scratch[0], TARGET_SIZE)
            ph.notes.append(f"blank {scratch[0].name}: a plain tar pipe of the same images is timed onto it")

    restore_and_boot(run, say, work=work, firmware=fw, backup_img=backup_img, target_img=target_img,
                     facts=DemoFacts.load(facts_file), memory_mib=opts.memory_mib, label=fw.value,
                     more_targets=more, extra_disks=scratch)


def _luks_restore_keys(lay: layouts.Layout, keys: Path, facts: DemoFacts,
                      new_key: bool) -> tuple[tuple[tuple[str, Path], ...], DemoFacts]:
    """The keyfile the unattended restore opens each container with, and the facts the restored
    machine must show: with new_key, the new passphrase opens it (typed at boot) in its one keyslot."""
    if not new_key:
        return tuple((x.name, keys / f"{x.name}.key") for x in layouts.luks_layers(lay)), facts
    luks = tuple(" ".join((*line.split()[:3], "1", *line.split()[4:])) for line in facts.luks)
    passphrase = next((x.name for x in layouts.luks_layers(lay) if x.keyfile is None), None)
    return (tuple((x.name, keys / f"{x.name}-new.key") for x in layouts.luks_layers(lay)),
            dataclasses.replace(facts, luks=luks, passphrase_file=str(keys / f"{passphrase}-new.key")
                                if passphrase else None))


def machine_vm(disks: Sequence[Path], work: Path, firmware: Firmware, memory_mib: int, name: str,
               facts: DemoFacts) -> VM:
    """The VM that boots the restored machine: a console the drill can type into when the
    machine asks for a LUKS passphrase at boot (its log file is kept all the same)."""
    if facts.passphrase_file:
        return ShellVM(list(disks), work, firmware=firmware, memory_mib=memory_mib, name=name)
    return VM(list(disks), work, firmware=firmware, memory_mib=memory_mib, name=name)


def _plain_machine(fw: Firmware, os_tarball: Path, rescue_image: Path, work: Path, backup_img: Path,
                   facts_file: Path, run: Run, say: Say) -> tuple[str, ...]:
    """The plain machine, built on the host's loop devices, and its backup; returns the images."""
    demo = DemoDisk(work, fw, os_tarball)
    try:
        with run.phase("demo machine", say) as ph:
            facts = demo.build()
            facts.save(facts_file)
            ph.notes.append(f"{demo.image}: {demo.label}, " + ", ".join(
                f"{f.mountpoint} {f.fstype}" for f in facts.filesystems) + ", swap")
            ph.check("data fingerprint recorded", len(facts.data_sum) == 64, "sha256", facts.data_sum)

        with run.phase("backup disk (rescue prepare-disk)", say) as ph:
            backup_disk.prepare(backup_img, BACKUP_DISK_SIZE, rescue_image)
            ph.check("backup disk made", backup_img.is_file(), str(backup_img))

        with run.phase("backup (dirvish x2 + capture)", say) as ph:
            images = _backup(demo, backup_img, work, facts, ph)
        with run.phase("disaster: original disk gone", say) as ph:
            demo.detach_keep_image()
            demo.image.unlink()
            ph.check("original disk detached and deleted", not demo.image.exists() and demo.disk is None)
    finally:
        demo.close()
    return images


def restore_and_boot(
    run: Run, say: Say, *, work: Path, firmware: Firmware, backup_img: Path, target_img: Path,
    facts: DemoFacts, memory_mib: int, label: str, data: bool = True,
    restore_timeout: float = RESTORE_TIMEOUT, before_boot: Callable[[Phase], None] | None = None,
    more_targets: Sequence[Path] = (), extra_disks: Sequence[Path] = (),
) -> None:
    """Boot the backup disk's unattended restore with the blank disk(s), then boot the result alone.

    more_targets: the new disks of a machine of several disks, after target_img (which boots);
    extra_disks: disks the restore VM has besides (a tar pipe's scratch disk)."""

    def progress(what: str) -> Callable[[float, str], None]:
        return lambda s, line: say(f"  [{label}] {what}: {s / 60:4.1f} min  | {line}")

    restore_failed: PhaseFailed | None = None
    vm = VM([backup_img, target_img, *more_targets, *extra_disks], work, firmware=firmware, memory_mib=memory_mib, name="restore")
    try:
        with run.phase("restore inside the rescue VM", say) as ph:
            run.logs.append(str(vm.serial_log))
            with vm:
                try:
                    seconds = vm.wait_for(RESTORE_OK, restore_timeout, fail_markers=RESTORE_FAILED,
                                          progress=progress("restoring"))
                except BootTimeout:
                    _let_the_output_end(vm)
                    raise
                ph.check("backup disk booted the Unattended restore entry", "Unattended restore" in vm.console())
                ph.check(RESTORE_OK, True, got=f"after {seconds:.0f} s")
                ph.notes.extend(timing_notes(step_times(vm.console()), tar=compared(vm.console())))
                try:
                    vm.wait_exit(180)
                    ph.check("rescue system powered off after the restore", True)
                except RescueError:  # a guest that stays up is a note, not a failed restore
                    ph.notes.append("the rescue system did not power off within 3 min; stopped")
    except PhaseFailed as e:
        # A restore that reported FAILED after its bootloader step finished (a late
        # step such as verify failed) may still have made a bootable disk: boot it
        # for the evidence, then fail the drill all the same. Anything else ends the
        # drill here: a disk without its bootloader can only show the firmware's prompt.
        if not boot_for_evidence(vm.console()):
            run.phases[-1].notes.append("the restored disk was not booted: the restore failed before "
                                        "its bootloader step finished")
            raise
        restore_failed = e

    with run.phase("boot the restored disk", say) as ph:
        if restore_failed is not None:
            ph.notes.append("booted for the evidence: the restore reported FAILED after its bootloader step finished")
        if before_boot is not None:
            before_boot(ph)
        boot_and_check(ph, run, machine_vm([target_img, *more_targets], work, firmware, memory_mib, "restored", facts),
                       facts, data, progress("booting the restored disk"))
    if restore_failed is not None:
        raise restore_failed
    if more_targets and facts.arrays:
        # Mirrored boot disks: the machine must also come up from its second disk alone, as
        # it would once the first one dies (grub on each; the arrays then run degraded).
        with run.phase("boot the second new disk alone", say) as ph:
            # The first disk's ESP went with it (mounted nofail): the second disk's own ESP booted it.
            alone = dataclasses.replace(facts, arrays_degraded=1,
                                        filesystems=tuple(f for f in facts.filesystems if f.fstype != "vfat"))
            boot_and_check(ph, run, machine_vm([more_targets[0]], work, firmware, memory_mib, "second-alone", alone),
                           alone, data, progress("booting the second disk alone"))


def boot_and_check(ph: Phase, run: Run, vm: VM, facts: DemoFacts, data: bool,
                   progress: Callable[[float, str], None]) -> None:
    """Boot the restored disk(s) until the machine's report is done, then check it against the facts."""
    run.logs.append(str(vm.serial_log))
    with vm:
        try:
            if isinstance(vm, ShellVM) and facts.passphrase_file:
                unlock_at_boot(vm, Path(facts.passphrase_file), ph, progress)
            seconds = vm.wait_for("DEMO-DONE", BOOT_TIMEOUT, fail_markers=(*BOOT_FAILURES, *LUKS_FAILURES),
                                  progress=progress)
            ph.notes.append(f"multi-user and report after {seconds:.0f} s")
            try:
                vm.wait_exit(180)
            except RescueError:
                ph.notes.append("the restored machine did not power off within 3 min; stopped")
        finally:
            check_restored(vm.console(), facts, ph, data=data)


UNLOCK_PROMPT = "Please unlock disk"  # cryptsetup-initramfs's askpass prompt
LUKS_FAILURES = ("bad password or options",  # the initramfs's cryptroot: the passphrase was wrong
                 "maximum number of tries exceeded",
                 "Dropping to a shell")  # the initramfs found no root: it never asked, or opened nothing


def unlock_at_boot(vm: ShellVM, key: Path, ph: Phase, progress: Callable[[float, str], None]) -> None:
    """Type the passphrase at the initramfs's prompt, as the owner does at the console.

    Typed only once the prompt is out (askpass has turned the echo off by then); the bytes go
    to the guest alone: the log file keeps what the guest says, which is not them."""
    vm.connect()
    seconds = vm.wait_for(UNLOCK_PROMPT, BOOT_TIMEOUT, fail_markers=(*BOOT_FAILURES, *LUKS_FAILURES),
                          progress=progress)
    time.sleep(2)
    vm.type_secret(key.read_bytes())
    ph.notes.append(f"the initramfs asked for the LUKS passphrase after {seconds:.0f} s; typed on the serial console")


def boot_for_evidence(console: str) -> bool:
    """After a failed restore: boot the disk only if the restore said it finished the bootloader step.

    Decided from the restore's own end-of-step lines (RESCUE-STEP-DONE KEY,
    printed when a step ends), never from the plan it printed before it began,
    which names every step, grub's included."""
    return "RESCUE-RESTORE: FAILED" in console and BOOTLOADER in steps_done(console)


def _let_the_output_end(vm: VM, timeout: float = 60.0) -> None:
    """After a FAILED marker, wait (briefly) for the rest of the restore's output.

    The marker also goes through the kernel log, which can reach the serial
    console before the restore's own last lines do."""
    if "RESCUE-RESTORE: FAILED" not in vm.console():
        return
    try:
        vm.wait_for(RESTORE_END, timeout)
    except RescueError:  # powered off, or silent: what is there is what there is
        pass


def _backup(demo: DemoDisk, backup_img: Path, work: Path, facts: DemoFacts, ph: Phase) -> tuple[str, ...]:
    """Two nightly dirvish runs with `rescue capture` as post-server hook, onto the backup disk."""
    from rescue.demo.dirvish import make_bank

    with backup_disk.mounted_partition(backup_img, "backup", work / "mnt-backup") as top:
        bank = make_bank(demo, top / backup_disk.BANK, client=CLIENT, confdir=work / "etc-dirvish")  # type: ignore[arg-type]
        ph.notes.append(f"bank {backup_disk.BANK}/ on the backup partition: vaults "
                        + ", ".join(f"{v} ({mp})" for v, mp in bank.vaults) + "; images " + ", ".join(bank.images))
        for vault, mountpoint in bank.vaults:
            for image in bank.images:
                d = bank.image_dir(vault, image)
                summary = (d / "summary").read_text(errors="replace") if (d / "summary").is_file() else ""
                ph.check(f"{vault}/{image}: dirvish status success", "Status: success" in summary)
        layout_file = bank.image_dir(bank.vaults[0][0]) / "rescue" / "layout.json"
        layout = Layout.loads(layout_file.read_text(), str(layout_file))
        captured = {fs.uuid: fs for fs in layout.filesystems if fs.uuid}
        for fs in facts.filesystems:
            ph.check(f"capture recorded {fs.mountpoint} ({fs.fstype}, UUID {fs.uuid[:8]}...)",
                     fs.uuid in captured, fs.uuid, ",".join(sorted(captured)))
        ph.check("capture recorded the swap UUID", any(s.uuid == facts.swap_uuid for s in layout.swaps))
        ph.check(f"capture says boot mode {facts.firmware}", layout.boot.mode.value == facts.firmware,
                 facts.firmware, layout.boot.mode.value)
        return bank.images


def default_workdir() -> Path:
    return Path("/var/tmp") / f"rescue-drill-{dt.datetime.now():%Y%m%d-%H%M%S}"


def run_demo(opts: Options, say: Say) -> Report:
    """The demo drill for each firmware in turn; a failed one does not stop the next."""
    report = Report()
    setup = Run("setup")
    report.runs.append(setup)
    opts.workdir.mkdir(parents=True, exist_ok=True)
    try:
        prepared = prepare(setup, say)
    except PhaseFailed:
        return report
    for fw in opts.firmwares:
        run = Run(f"demo {fw.value}")
        report.runs.append(run)
        try:
            drill_one(fw, prepared, opts, run, say)
        except PhaseFailed:
            pass
        finally:
            tidy(opts.workdir / fw.value, keep=opts.keep, failed=not run.ok)
    report.save(opts.workdir / "report.json")
    return report


def tidy(work: Path, *, keep: bool, failed: bool) -> None:
    """Without --keep, the disk images go; serial logs, facts and report always stay."""
    if not work.exists():
        return
    cleanup_mounts(work)
    if keep:
        return
    for img in work.glob("*.img"):
        img.unlink()
    for d in ("mnt-backup", "mnt-rescue", "mnt-restored", "etc-dirvish", f"demo-{work.name}-root", "keys"):
        p = work / d
        if p.is_dir() and not p.is_mount():
            shutil.rmtree(p, ignore_errors=True)


def firmwares_of(arg: str | None) -> Sequence[Firmware]:
    return (Firmware(arg),) if arg else (Firmware.BIOS, Firmware.UEFI)
