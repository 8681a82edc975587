from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from rescue.errors import StepFailed
from rescue.layout.model import BootMode
from rescue.steps.base import Context, Step, at_root, confined, sh

BIND = ("/dev", "/proc", "/sys", "/run")
# /run holds the restore's own mounts (the restored root itself, under /run/rescue): a
# recursive bind would copy the restored filesystems into their own /run, and those copies
# reach udevd's private mount namespace, where an unmount may never follow them: the LV
# under them then stays "in use" and its VG cannot be deactivated. /run's own files
# (the udev database grub-probe reads) need no submount.
FLAT = ("/run",)
GRUB_INSTALL = ("/usr/sbin/grub-install", "/usr/bin/grub-install", "/sbin/grub-install",
                "/usr/sbin/grub2-install", "/usr/bin/grub2-install")


def is_loop(disk: str) -> bool:
    return os.path.basename(disk).startswith("loop")


def grub_install_in(root: Path) -> str | None:
    """The restored system's grub-install (inside the chroot), or None."""
    for p in GRUB_INSTALL:
        if confined(root, p).is_file():
            return p
    return None


def os_id(root: Path) -> str:
    """The distribution id (/etc/os-release ID) names the EFI folder, e.g. debian."""
    for rel in ("/etc/os-release", "/usr/lib/os-release"):
        p = confined(root, rel)
        if p.is_file():
            for line in p.read_text(errors="replace").splitlines():
                if line.startswith("ID="):
                    return line[3:].strip().strip('"') or "debian"
    return "debian"


@dataclass(frozen=True)
class InstallBootloader(Step):
    """grub-install for the captured boot mode, then grub-mkconfig, inside the restored system.

    /dev, /proc, /sys and /run are bind-mounted into the restored system first.
    UEFI gets the removable fallback path (EFI/BOOT/BOOTX64.EFI) so firmware
    without an NVRAM entry still boots, plus the normal install with an NVRAM
    entry when this machine runs under UEFI (efivars present).

    A machine on mirrored disks under UEFI had an ESP on each: only one is mounted
    (at `esp`), the others are the copies an admin's hook keeps in sync. Once grub
    is installed, each of those (`esp_copies`, new partitions) gets a copy of the
    mounted ESP, as the hook would make it, so the machine boots from either disk
    when the other dies: the firmware finds EFI/BOOT/BOOTX64.EFI on whichever is left.
    """

    kind = "bootloader"
    disk: str
    mode: BootMode
    esp: str | None = None  # ESP mount point inside the restored system
    also: tuple[str, ...] = ()  # BIOS: the other targets holding a member of the mirrored /boot
    esp_copies: tuple[str, ...] = ()  # UEFI: the other ESPs of the mirrored boot disks, filled from `esp`

    @property
    def key(self) -> str:
        return "bootloader"

    def describe(self) -> str:
        how = "UEFI (with removable fallback)" if self.mode is BootMode.UEFI else "BIOS"
        copies = f", its ESP copied to {' and '.join(self.esp_copies)}" if self.esp_copies else ""
        return f"install grub for {how} on {' and '.join((self.disk, *self.also))}{copies}"

    def installs(self) -> list[list[str]]:
        """The grub-install command lines run inside the restored system."""
        if self.mode is BootMode.UEFI:
            esp = self.esp or "/boot/efi"
            return [["grub-install", "--target=x86_64-efi", f"--efi-directory={esp}", "--removable"]]
        return [["grub-install", "--target=i386-pc", d] for d in (self.disk, *self.also)]

    def chroot_lines(self, grub: str = "grub-install", nvram: bool = False,
                     mkconfig: str = "update-grub || chroot \"$1\" grub-mkconfig -o /boot/grub/grub.cfg") -> list[str]:
        """The shell lines that install grub from inside the restored system, whose root is "$1".

        They run in a mount namespace of their own (unshare --mount, private), so the binds
        of /dev, /proc, /sys and /run into the restored system never reach another
        namespace: systemd-udevd and systemd-logind keep private copies of what is mounted,
        and a bind that reached one of them stayed mounted there on top of the restored
        root, so its LV stayed "in use" after the restore had unmounted everything. The
        namespace, with every bind, ends with the command."""
        deep = [d for d in BIND if d not in FLAT]
        lines = [f'mount --rbind {d} "$1{d}"' for d in deep] + [f'mount --bind {d} "$1{d}"' for d in FLAT]
        lines += [f'chroot "$1" {sh(grub, *argv[1:])}' for argv in self.installs()]
        if nvram:
            esp = self.esp or "/boot/efi"
            lines.append(f'chroot "$1" {sh(grub, "--target=x86_64-efi", f"--efi-directory={esp}")}')
        lines.append(f'chroot "$1" {mkconfig}')
        return lines

    def script(self) -> list[str]:
        inner = "; ".join(self.chroot_lines())
        nvram = ""
        if self.mode is BootMode.UEFI:
            nvram = "; ".join(self.chroot_lines(nvram=True))
            inner = f"if [ -d /sys/firmware/efi/efivars ]; then {nvram}; else {inner}; fi"
        return [f"unshare --mount --propagation private sh -ec '{inner}' rescue-bootloader \"$ROOT\"",
                *self.copy_lines()]

    def copy_lines(self) -> list[str]:
        """restore.sh: each other ESP mounted in $WORK, proved to be that partition, given the ESP's files."""
        esp = at_root(self.esp or "/boot/efi")
        lines = []
        for dev in self.esp_copies:
            where = '"$WORK"/' + shlex.quote(f"esp-{os.path.basename(dev)}")
            lines += [
                f"mkdir -p {where}",
                f"{sh('mount', '-t', 'vfat', dev)} {where}",
                f'[ "$(findmnt -fno MAJ:MIN {where} | tr -d \' \')" = "$(lsblk -dno MAJ:MIN {sh(dev)} | tr -d \' \')" ] '
                f"|| {{ umount {where}; echo {sh(f'the ESP copy at {dev} did not mount as {dev}: another disk with the same UUID?')} >&2; exit 1; }}",
                f"cp -R --preserve=timestamps {esp}/. {where}/",
                f"ls -l {where}/EFI/BOOT/BOOTX64.EFI",
                f"umount {where}",
            ]
        return lines

    def run(self, ctx: Context) -> None:
        data = ctx.data()
        data["attempted"] = False
        if ctx.bootloader == "skip":
            data["reason"] = "skipped on request (--bootloader skip)"
            ctx.note(f"bootloader NOT installed: {data['reason']}; install grub before booting the disk")
            ctx.save()
            return
        if ctx.bootloader == "auto" and is_loop(self.disk):
            data["reason"] = ("not attempted on a loop device: grub-install cannot find a GRUB drive for "
                              "a loop device; the drill (a qemu boot of the restored disk) proves this step")
            ctx.note(f"bootloader NOT installed on {self.disk}: {data['reason']}")
            ctx.save()
            return
        grub = grub_install_in(ctx.root)
        if grub is None:
            data["reason"] = "the restored system has no grub-install"
            ctx.note("bootloader NOT installed: the restored system has no grub-install (no grub package); "
                     "install its own bootloader from a chroot before booting the disk")
            ctx.save()
            return
        if self.mode is BootMode.UEFI:
            esp = self.esp or "/boot/efi"
            from rescue.engine.mounts import is_mountpoint

            if not is_mountpoint(confined(ctx.root, esp)):
                raise StepFailed(f"the EFI system partition is not mounted at {esp} in the restored system",
                                 fix="check the plan's mounts (the ESP must be restored and mounted)")
        for d in BIND:
            confined(ctx.root, d, create=True)
        nvram = self.mode is BootMode.UEFI and Path("/sys/firmware/efi/efivars").is_dir()
        if confined(ctx.root, "/usr/sbin/update-grub").exists():
            mkconfig = "update-grub"
        else:
            gen = "grub2-mkconfig" if "grub2" in grub else "grub-mkconfig"
            mkconfig = f"{gen} -o {'/boot/grub2/grub.cfg' if 'grub2' in grub else '/boot/grub/grub.cfg'}"
        data["attempted"] = True
        ctx.save()
        ctx.run(["unshare", "--mount", "--propagation", "private", "sh", "-ec",
                 "\n".join(self.chroot_lines(grub, nvram, mkconfig)), "rescue-bootloader", str(ctx.root)])
        ctx.note(f"grub installed for {self.mode.value.upper()} on {' and '.join((self.disk, *self.also))}")
        for dev in self.esp_copies:
            self._copy_esp(ctx, dev)
        ctx.save()

    def _copy_esp(self, ctx: Context, dev: str) -> None:
        """The installed ESP's files onto another ESP, mounted privately and proved to be `dev` first."""
        from rescue.engine.mounts import prove_mounted
        from rescue.steps.mount import mount_argv

        esp = confined(ctx.root, self.esp or "/boot/efi")
        where = ctx.work / f"esp-{os.path.basename(dev)}"
        where.mkdir(parents=True, exist_ok=True)
        ctx.run(mount_argv(dev, "vfat", str(where)))
        try:
            why = prove_mounted(ctx.run, where, dev, "vfat")
            if why:
                raise StepFailed(f"the ESP copy {dev} did not mount as itself: {why}",
                                 fix="detach the old disk that carries the same filesystems and rerun")
            ctx.run(["cp", "-R", "--preserve=timestamps", f"{esp}/.", f"{where}/"])
            if not (where / "EFI" / "BOOT" / "BOOTX64.EFI").is_file():
                raise StepFailed(f"the ESP copy {dev} has no EFI/BOOT/BOOTX64.EFI after the copy",
                                 fix=f"check {self.esp or '/boot/efi'} of the restored system and rerun")
        finally:
            ctx.run(["umount", str(where)], check=False)
        ctx.note(f"ESP {self.esp or '/boot/efi'} copied to {dev}: that disk boots alone too (EFI/BOOT/BOOTX64.EFI)")
