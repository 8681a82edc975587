"""The image recipe: the default one is complete, user recipes extend it, mistakes are caught."""

from __future__ import annotations

from pathlib import Path

import pytest

from rescue.image import build, recipe
from rescue.resources import recipe_dir

RESTORE_TOOLS = ("fdisk", "parted", "e2fsprogs", "xfsprogs", "btrfs-progs", "dosfstools", "mtools", "rsync",
                 "attr", "acl", "grub-pc-bin", "grub-efi-amd64-bin", "grub2-common", "efibootmgr",
                 "openssh-client", "kmod", "udev", "systemd", "less", "linux-image-amd64", "python3", "libparted2")


def test_default_recipe_has_every_restore_tool_and_no_ssh_server():
    r = recipe.load()
    for tool in RESTORE_TOOLS:
        assert tool in r.packages, tool
    assert not any(p.startswith("openssh-server") or p == "dropbear" for p in r.packages)
    assert r.label == "RESCUE" and r.size_mib == 1024 and r.max_used_mib <= 600
    assert r.overlays == (recipe_dir() / "overlay",)


def test_default_overlay_has_the_console_units_and_the_entry_point():
    overlay = recipe_dir() / "overlay"
    for unit in ("etc/systemd/system/getty@tty1.service.d/rescue.conf",
                 "etc/systemd/system/serial-getty@ttyS0.service.d/rescue.conf",
                 "etc/systemd/system/rescue-mount-backup.service"):
        assert (overlay / unit).is_file(), unit
    for script in ("usr/local/sbin/rescue-console", "usr/local/sbin/rescue-mount-backup"):
        assert (overlay / script).stat().st_mode & 0o111, f"{script} must be executable"
    console = (overlay / "usr/local/sbin/rescue-console").read_text()
    assert "RESCUE-READY" in console and "rescue-unattended-restore" in console and "rescue wizard" in console
    mount = (overlay / "usr/local/sbin/rescue-mount-backup").read_text()
    assert "ro" in mount and "/backup" in mount


def test_modules_keep_holds_the_disks_and_filesystems_a_restore_needs():
    keep = recipe.load().modules_keep
    for needed in ("drivers/virtio", "drivers/ata", "drivers/nvme", "drivers/usb/storage", "drivers/md",
                   "fs/ext4", "fs/xfs", "fs/btrfs", "fs/fat", "fs/vfat"):
        assert needed in keep, needed


def test_user_recipe_extends_the_default(tmp_path: Path):
    (tmp_path / "overlay" / "etc").mkdir(parents=True)
    (tmp_path / "overlay" / "etc" / "motd").write_text("site rescue\n")
    f = tmp_path / "site.toml"
    f.write_text('extends = "default"\nextra_packages = ["smartmontools"]\nextra_trim = ["usr/share/terminfo/x"]\n'
                 'max_used_mib = 500\n')
    r = recipe.load(f)
    base = recipe.load()
    assert r.packages == base.packages + ("smartmontools",)
    assert r.trim[-1] == "usr/share/terminfo/x"
    assert r.max_used_mib == 500
    assert r.overlays == (*base.overlays, tmp_path / "overlay")
    assert r.base_key() != base.base_key(), "another package list is another base root"


@pytest.mark.parametrize("text, message", [
    ('extends = "default"\nextra_pakages = ["x"]\n', "unknown keys: extra_pakages"),
    ('extends = "other"\n', "extends must be"),
    ('name = "x"\n', "missing keys"),
    ('extends = "default"\nextra_packages = "x"\n', "must be a list of strings"),
    ('extends = "default"\nsize_mib = "big"\n', "must be a int"),
    ("not toml [", "not valid TOML"),
])
def test_bad_recipes_are_refused_with_the_reason(tmp_path: Path, text: str, message: str):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(recipe.RecipeError, match=message):
        recipe.load(f)


def test_missing_recipe_file_is_a_clear_error(tmp_path: Path):
    with pytest.raises(recipe.RecipeError, match="does not exist"):
        recipe.load(tmp_path / "nope.toml")


def test_mirror_comes_from_the_machines_deb822_sources(tmp_path: Path):
    d = tmp_path / "apt" / "sources.list.d"
    d.mkdir(parents=True)
    (d / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\n"
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\nComponents: main\n")
    assert build.mirror_from_apt("bookworm", tmp_path / "apt") == "http://mirror.example/debian"
    assert build.mirror_from_apt("bookworm-security", tmp_path / "apt") == "http://mirror.example/debian-security"


def test_mirror_from_a_one_line_sources_list(tmp_path: Path):
    (tmp_path / "apt" / "sources.list.d").mkdir(parents=True)
    (tmp_path / "apt" / "sources.list").write_text(
        "# comment\ndeb [arch=amd64] http://mirror.example/debian bookworm main\n")
    assert build.mirror_from_apt("bookworm", tmp_path / "apt") == "http://mirror.example/debian"
    with pytest.raises(build.BuildError, match="--mirror"):
        build.mirror_from_apt("trixie", tmp_path / "apt")


def test_image_key_changes_with_rescue_code_but_the_base_key_does_not(tmp_path: Path):
    project = tmp_path / "project"
    (project / "rescue").mkdir(parents=True)
    (project / "rescue" / "x.py").write_text("a = 1\n")
    r = recipe.load()
    base = build.base_key(r, "bookworm", "http://m/debian")
    k1 = build.image_key(base, r, project)
    (project / "rescue" / "x.py").write_text("a = 2\n")
    assert build.image_key(base, r, project) != k1
    assert build.base_key(r, "bookworm", "http://m/debian") == base
    assert build.base_key(r, "bookworm", "http://other/debian") != base


def test_ensure_image_reuses_a_snapshot_with_its_key_without_building(tmp_path: Path, monkeypatch):
    """A source checkout and an installed rescue (the vm tier runs both) have different image keys;
    each one's image is built once and then found in its snapshot, not rebuilt in turn.

    build() itself is replaced by a failure: it needs root, mmdebstrap and minutes."""
    from rescue.image import manifest as mf

    out = tmp_path / "image"
    m = mf.Manifest(image=mf.IMAGE, bmap=mf.BMAP, label="RESCUE", fs_uuid="u", total_bytes=1 << 30, used_bytes=1,
                    sha256="0" * 64, kernel="6.1.0", suite="bookworm", mirror="http://m/debian",
                    rescue_version="0.1.0", build_key="k-installed", base_key="b", built="2026-12-04T15:00:00+00:00",
                    build_seconds=1.0, unattended_placeholder=False, packages=())
    for key in ("k-installed", "k-checkout"):
        snap = tmp_path / "images" / key
        snap.mkdir(parents=True)
        (snap / mf.IMAGE).write_bytes(b"image " + key.encode())
        mf.save(mf.Manifest(**{**m.__dict__, "build_key": key}), snap)

    def no_build(*a, **k):
        raise AssertionError("rebuilt an image that a snapshot already holds")

    monkeypatch.setattr(build, "build", no_build)
    monkeypatch.setattr(build, "mirror_from_apt", lambda suite: "http://m/debian")
    for key in ("k-installed", "k-checkout", "k-installed"):
        monkeypatch.setattr(build, "image_keys", lambda opts, key=key: ("b", key), raising=False)
        image, got = build.ensure_image(out, say=lambda m: None)
        assert image == tmp_path / "images" / key / mf.IMAGE and got.build_key == key
        assert image.read_bytes() == b"image " + key.encode()
