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

    def script(self) -> list[str]:
        deep = [d for d in BIND if d not in FLAT]
        lines = [f"for d in {' '.join(deep)}; do mount --rbind \"$d\" \"$ROOT$d\"; "
                 "mount --make-rslave \"$ROOT$d\"; done"]
        lines += [f"mount --bind {d} \"$ROOT{d}\"; mount --make-slave \"$ROOT{d}\"" for d in FLAT]
        for argv in self.installs():
            lines.append(f"chroot \"$ROOT\" {sh(*argv)}")
        if self.mode is BootMode.UEFI:
            esp = self.esp or "/boot/efi"
            lines.append(f"[ -d /sys/firmware/efi/efivars ] && chroot \"$ROOT\" "
                         f"{sh('grub-install', '--target=x86_64-efi', f'--efi-directory={esp}')}")
        lines.append('chroot "$ROOT" update-grub || chroot "$ROOT" grub-mkconfig -o /boot/grub/grub.cfg')
        lines.append(f"for d in {' '.join(reversed(BIND))}; do umount -R \"$ROOT$d\"; done")
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
        bound: list[Path] = []
        try:
            for d in BIND:
                where = confined(ctx.root, d, create=True)
                flat = d in FLAT
                ctx.run(["mount", "--bind" if flat else "--rbind", d, str(where)])
                bound.append(where)
                ctx.run(["mount", "--make-slave" if flat else "--make-rslave", str(where)])
            data["attempted"] = True
            ctx.save()
            for argv in self.installs():
                ctx.run(["chroot", str(ctx.root), grub, *argv[1:]])
            if self.mode is BootMode.UEFI and Path("/sys/firmware/efi/efivars").is_dir():
                esp = self.esp or "/boot/efi"
                ctx.run(["chroot", str(ctx.root), grub, "--target=x86_64-efi", f"--efi-directory={esp}",
                         f"--bootloader-id={os_id(ctx.root)}"])
            if confined(ctx.root, "/usr/sbin/update-grub").exists():
                ctx.run(["chroot", str(ctx.root), "update-grub"])
            else:
                mkconfig = "grub2-mkconfig" if "grub2" in grub else "grub-mkconfig"
                cfg = "/boot/grub2/grub.cfg" if "grub2" in grub else "/boot/grub/grub.cfg"
                ctx.run(["chroot", str(ctx.root), mkconfig, "-o", cfg])
            ctx.note(f"grub installed for {self.mode.value.upper()} on {' and '.join((self.disk, *self.also))}")
        finally:
            for where in reversed(bound):
                ctx.run(["umount", "--recursive", str(where)], check=False)
        ctx.save()
