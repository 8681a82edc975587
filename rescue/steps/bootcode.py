"""prepare-disk's boot code: grub for BIOS and UEFI, written without grub-install (rescue.bootcode)."""

from __future__ import annotations

from dataclasses import dataclass

from rescue.steps.base import Context, Step


@dataclass(frozen=True)
class InstallBootCode(Step):
    """grub's boot.img in the MBR and core.img in the BIOS boot partition (gpt) or the gap after
    the MBR (dos); with an ESP, grub at its removable path. Writing it again is harmless."""

    kind = "bootcode"
    disk: str
    table: str  # gpt or dos
    rescue_number: int  # the partition grub's prefix names
    core_lba: int
    core_room: int  # sectors core.img may use
    esp: str | None = None  # the ESP partition, already a FAT filesystem

    @property
    def key(self) -> str:
        return f"bootcode:{self.disk}"

    def prefix(self) -> str:
        from rescue import bootcode

        return bootcode.prefix(self.table, self.rescue_number)

    def describe(self) -> str:
        where = "BIOS boot partition" if self.table == "gpt" else "gap after the MBR"
        uefi = f", UEFI grub on {self.esp}" if self.esp else ", no UEFI boot (dos)"
        return f"write BIOS boot code to {self.disk} (core image in the {where}){uefi}"

    def script(self) -> list[str]:
        lines = [f"# grub-mkimage -O i386-pc --prefix '{self.prefix()}' core.img -> {self.disk} sector "
                 f"{self.core_lba}, boot.img -> its MBR (rescue.bootcode.install_bios)"]
        if self.esp:
            lines.append(f"# grub-mkimage -O x86_64-efi --prefix '{self.prefix()}' -> {self.esp}:/EFI/BOOT/BOOTX64.EFI "
                         "with mtools (rescue.bootcode.install_efi)")
        return lines

    def run(self, ctx: Context) -> None:
        from rescue import bootcode

        bios = bootcode.install_bios(self.disk, self.core_lba, self.core_room, self.prefix())
        where = "BIOS boot partition" if self.table == "gpt" else "gap after the MBR"
        ctx.say(f"BIOS boot: grub in the MBR, core image ({bios.core_sectors} sectors) in the {where}, "
                f"prefix {self.prefix()}")
        if self.esp:
            bootcode.install_efi(self.esp, self.prefix())
            ctx.say(f"UEFI boot: {self.esp} holds {bootcode.REMOVABLE_PATH} (the removable path, no NVRAM entry needed)")
        else:
            ctx.say("UEFI boot: none (a dos partition table has no ESP; use --table gpt for UEFI machines)")
