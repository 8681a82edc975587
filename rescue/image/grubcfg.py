"""The rescue partition's grub.cfg, rendered from grub/grub.cfg.j2.

BIOS and UEFI boot the same file: the core images built by rescue.bootcode
carry a prefix pointing at /boot/grub on the rescue partition of the disk
they booted from.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import jinja2

from rescue.resources import grub_dir

TEMPLATE = "grub.cfg.j2"


@dataclass(frozen=True)
class MenuEntry:
    id: str
    title: str
    mode: str  # rescue.mode= on the kernel command line


ENTRIES = (
    MenuEntry("wizard", "Restore wizard", "wizard"),
    MenuEntry("unattended", "Unattended restore", "unattended"),
    MenuEntry("shell", "Rescue shell", "shell"),
)


@dataclass(frozen=True)
class GrubConfig:
    kernel: str = "/vmlinuz"
    initrd: str = "/initrd.img"
    cmdline: str = "rw console=tty0 console=ttyS0,115200"
    label: str = "RESCUE"
    name: str = "rescue"
    built: str = ""
    timeout: int = 5
    default: str = "wizard"
    serial: bool = True
    serial_unit: int = 0
    serial_speed: int = 115200
    entries: tuple[MenuEntry, ...] = field(default=ENTRIES)
    # Where a backup disk's own boot settings live (see grub/grub.cfg.j2).
    override: str = "/rescue/boot.cfg"
    backup_partitions: tuple[str, ...] = ("gpt4", "msdos2")


def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(grub_dir())),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )


def render(cfg: GrubConfig) -> str:
    ids = {e.id for e in cfg.entries} | {"internal"}
    if cfg.default not in ids:
        raise ValueError(f"default entry {cfg.default!r} is not one of {sorted(ids)}")
    return environment().get_template(TEMPLATE).render(**vars(cfg))
