"""What the drill writes onto its backup disk: the unattended config and the boot entry."""

from __future__ import annotations

from pathlib import Path

import pytest

from rescue.drill import backup_disk
from rescue.drill.demo_os import PACKAGES, mmdebstrap_argv, recipe_key
from rescue.errors import RescueError
from rescue.image.grubcfg import GrubConfig, render
from rescue.unattended import load_config


def test_the_config_the_drill_writes_is_one_rescue_unattended_accepts(tmp_path: Path) -> None:
    path = backup_disk.write_config(tmp_path, backup_disk.unattended_config("localhost", "virtio-rescue-d1"))
    config = load_config(path)
    assert config.client == "localhost"
    assert config.banks == (Path("/backup/dirvish"),)
    assert config.target.by_id == "virtio-rescue-d1"
    assert (config.after, config.after_failure) == ("poweroff", "poweroff")
    assert config.image is None
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_an_image_date_is_passed_on(tmp_path: Path) -> None:
    path = backup_disk.write_config(tmp_path, backup_disk.unattended_config("web1", "virtio-x", image="2026-1125"))
    assert load_config(path).image == "2026-1125"


def _rescue_partition(tmp_path: Path) -> Path:
    grub = tmp_path / "boot" / "grub"
    grub.mkdir(parents=True)
    (grub / "grub.cfg").write_text(render(GrubConfig()))
    return tmp_path


def test_the_unattended_entry_becomes_the_default_of_the_rescue_menu(tmp_path: Path) -> None:
    top = _rescue_partition(tmp_path)
    before = (top / "boot/grub/grub.cfg").read_text()
    assert "set default=wizard" in before
    cfg = backup_disk.select_boot_entry(top, "unattended", timeout=1)
    after = cfg.read_text()
    assert "set default=unattended" in after and "set default=wizard" not in after
    assert "set timeout=1" in after
    # only those two lines changed
    changed = [(a, b) for a, b in zip(before.splitlines(), after.splitlines()) if a != b]
    assert len(changed) == 2


def test_a_menu_without_the_entry_is_refused(tmp_path: Path) -> None:
    top = _rescue_partition(tmp_path)
    with pytest.raises(RescueError, match="no 'nosuch' entry"):
        backup_disk.select_boot_entry(top, "nosuch")


def test_the_demo_os_comes_from_this_machines_apt_sources(tmp_path: Path) -> None:
    sources = tmp_path / "debian.sources"
    sources.write_text("Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm\nComponents: main\n")
    argv = mmdebstrap_argv(tmp_path / "os.tar", tmp_path / "debs", sources)
    assert argv[-1] == str(sources) and argv[-3] == "bookworm"
    assert "--format=tar" in argv
    include = next(a for a in argv if a.startswith("--include="))
    for pkg in ("linux-image-amd64", "systemd-sysv", "grub-pc-bin", "grub-efi-amd64-bin", "xfsprogs"):
        assert pkg in include.split("=", 1)[1].split(",")
    assert set(PACKAGES) == set(include.split("=", 1)[1].split(","))


def test_the_cache_key_follows_the_mirror(tmp_path: Path) -> None:
    a = tmp_path / "a.sources"
    a.write_text("URIs: http://one/debian\n")
    key_a = recipe_key(a)
    a.write_text("URIs: http://two/debian\n")
    assert recipe_key(a) != key_a


def test_a_menu_that_sources_an_override_file_is_found() -> None:
    cfg = ('for p in gpt4 msdos2; do\n  if [ -f "($rescue_disk,$p)/rescue/boot.cfg" ]; then\n'
           '    source "($rescue_disk,$p)/rescue/boot.cfg"\n  fi\ndone\n')
    assert backup_disk.override_path(cfg) == "/rescue/boot.cfg"
    assert backup_disk.override_path(render(GrubConfig())) == getattr(GrubConfig(), "override", None)
    text = backup_disk.boot_override("unattended", 1)
    assert "set default=unattended" in text.splitlines() and "set timeout=1" in text.splitlines()


def test_the_luks_keys_go_beside_the_config_root_only_and_the_config_names_them(tmp_path: Path) -> None:
    key = tmp_path / "demo-crypt.key"
    key.write_bytes(b"not a real secret")
    top = tmp_path / "backup"
    top.mkdir()
    names = backup_disk.write_keys(top, (("demo-crypt", key),))
    assert names == (("demo-crypt", "keys/demo-crypt.key"),)
    assert (top / "keys" / "demo-crypt.key").read_bytes() == b"not a real secret"
    assert oct((top / "keys").stat().st_mode & 0o777) == "0o700"
    assert oct((top / "keys" / "demo-crypt.key").stat().st_mode & 0o777) == "0o600"
    text = backup_disk.unattended_config("localhost", "virtio-rescue-d1", luks_keys=names, luks_new_key=True)
    assert b"not a real secret".decode() not in text
    config = load_config(backup_disk.write_config(top, text))
    assert config.luks_keys == (("demo-crypt", str(top / "keys" / "demo-crypt.key")),)
    assert config.luks_new_key and config.target.by_id == "virtio-rescue-d1"
    kept = load_config(backup_disk.write_config(top, backup_disk.unattended_config(
        "localhost", "virtio-rescue-d1", luks_keys=names)))
    assert not kept.luks_new_key and kept.luks_keys == config.luks_keys


def test_the_demo_os_can_open_luks_at_boot() -> None:
    assert {"cryptsetup", "cryptsetup-initramfs"} <= set(PACKAGES)
