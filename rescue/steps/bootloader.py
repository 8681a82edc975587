from __future__ import annotations

import os
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
    """

    kind = "bootloader"
    disk: str
    mode: BootMode
    esp: str | None = None  # ESP mount point inside the restored system
    also: tuple[str, ...] = ()  # BIOS: the other targets holding a member of the mirrored /boot

    @property
    def key(self) -> str:
        return "bootloader"

    def describe(self) -> str:
        how = "UEFI (with removable fallback)" if self.mode is BootMode.UEFI else "BIOS"
        return f"install grub for {how} on {' and '.join((self.disk, *self.also))}"

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
        return [f"unshare --mount --propagation private sh -ec '{inner}' rescue-bootloader \"$ROOT\""]

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
        ctx.save()
