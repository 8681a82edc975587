"""prepare-disk's backup filesystem top: root-only, with the dirvish bank and DISKLABEL."""

from __future__ import annotations

import os
from dataclasses import dataclass

from rescue.steps.base import Context, Step, at_root, sh


@dataclass(frozen=True)
class MakeBank(Step):
    """The mounted backup filesystem's top made root-only (0700), the bank folder (0700) and the
    DISKLABEL file (0600) the nightly job logs, as that job expects. Doing it again is harmless."""

    kind = "bank"
    device: str  # the backup partition, mounted at `mountpoint` under the private root
    bank: str  # folder name, e.g. dirvish
    label: str  # filesystem label: the default disk name is LABEL-DISKID
    disk_name: str | None = None  # what DISKLABEL says; None: LABEL-DISKID, read from the disk's table
    mountpoint: str = "/backup"

    @property
    def key(self) -> str:
        return f"bank:{self.device}"

    def describe(self) -> str:
        name = repr(self.disk_name) if self.disk_name else f"{self.label}-<disk id>"
        return f"make /{self.bank} (0700, root) and DISKLABEL {name} on {self.device}"

    def script(self) -> list[str]:
        top = at_root(self.mountpoint)
        name = self.disk_name or f"{self.label}-$(blkid -p -s PTUUID -o value \"$DISK\" | cut -d- -f1)"
        return [f"chown 0:0 {top} && chmod 0700 {top}",
                f"mkdir -p {top}/{sh(self.bank)} && chown 0:0 {top}/{sh(self.bank)} && chmod 0700 {top}/{sh(self.bank)}",
                f"echo \"{name}\" > {top}/DISKLABEL && chmod 0600 {top}/DISKLABEL"]

    def name(self, ctx: Context) -> str:
        if self.disk_name:
            return self.disk_name
        out = ctx.run(["blkid", "-p", "-s", "PTUUID", "-o", "value", ctx.target], check=False).stdout
        disk_id = out.strip().lower().removeprefix("0x")
        return f"{self.label}-{disk_id.split('-')[0]}"

    def run(self, ctx: Context) -> None:
        top = ctx.path(self.mountpoint)
        os.chown(top, 0, 0)
        os.chmod(top, 0o700)
        bank = top / self.bank
        bank.mkdir(mode=0o700, exist_ok=True)
        os.chown(bank, 0, 0)
        os.chmod(bank, 0o700)
        name = self.name(ctx)
        (top / "DISKLABEL").write_text(name + "\n")
        os.chmod(top / "DISKLABEL", 0o600)
        ctx.say(f"backup filesystem on {self.device}: /{self.bank} (0700, root) and DISKLABEL {name!r}")
