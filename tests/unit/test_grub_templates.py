"""The rescue partition's grub.cfg: rendered from grub/ and checked by grub's own parser."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from rescue.image.grubcfg import ENTRIES, GrubConfig, render


def test_menu_has_the_four_entries_in_order_with_the_wizard_first():
    text = render(GrubConfig())
    titles = [line.split('"')[1] for line in text.splitlines() if line.startswith("menuentry ")]
    assert titles == ["Restore wizard", "Unattended restore", "Rescue shell", "Boot the first internal disk"]
    assert "set default=wizard" in text


def test_every_linux_entry_selects_its_mode_and_prints_on_screen_and_serial():
    cfg = GrubConfig(kernel="/boot/vmlinuz-6.1.0-9-amd64", initrd="/boot/initrd.img-6.1.0-9-amd64",
                     cmdline="rw console=tty0 console=ttyS0,115200")
    text = render(cfg)
    linux_lines = [line.strip() for line in text.splitlines() if line.strip().startswith("linux ")]
    assert [line.rsplit("rescue.mode=", 1)[1].split()[0] for line in linux_lines] == [e.mode for e in ENTRIES]
    for line in linux_lines:
        assert line.startswith("linux /boot/vmlinuz-6.1.0-9-amd64 $rescue_root ")
        assert "console=tty0" in line and "console=ttyS0,115200" in line
    assert text.count("initrd /boot/initrd.img-6.1.0-9-amd64") == 3
    assert "terminal_output console serial" in text and "serial --unit=0 --speed=115200" in text


def test_root_is_found_by_partuuid_of_the_booted_disk_with_label_fallback():
    text = render(GrubConfig(label="MYRESCUE"))
    assert "probe --set=rescue_partuuid --part-uuid $root" in text
    assert 'set rescue_root="root=LABEL=MYRESCUE"' in text
    # menu entries run in a fresh grub context: only exported variables reach them
    assert "export rescue_root" in text


def test_serial_off_keeps_the_console_only():
    text = render(GrubConfig(serial=False))
    assert "serial --unit" not in text and "terminal_output console\n" in text


def test_unknown_default_entry_is_refused():
    with pytest.raises(ValueError):
        render(GrubConfig(default="nope"))


def test_grub_script_check_accepts_the_rendered_file(tmp_path: Path):
    """grub-script-check is grub's own parser: a syntax error here would stop the boot menu."""
    checker = shutil.which("grub-script-check", path="/usr/bin:/usr/sbin:/bin:/sbin")
    assert checker, "grub-script-check missing (package grub2-common, scripts/setup.sh)"
    cfg = tmp_path / "grub.cfg"
    cfg.write_text(render(GrubConfig()))
    result = subprocess.run([checker, str(cfg)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr + result.stdout
    bad = tmp_path / "bad.cfg"
    bad.write_text(cfg.read_text() + "\nif [ x ]; then\n")
    assert subprocess.run([checker, str(bad)], capture_output=True).returncode != 0


def test_a_backup_partition_may_set_the_default_entry_and_kernel_options():
    text = render(GrubConfig())
    assert 'for p in gpt4 msdos2; do' in text
    assert 'source "($rescue_disk,$p)/rescue/boot.cfg"' in text
    # the override is read before any menu entry exists, so `set default=` takes effect
    assert text.index("/rescue/boot.cfg") < text.index("menuentry ")
    for line in text.splitlines():
        if line.strip().startswith("linux "):
            assert line.rstrip().endswith("$rescue_extra")
