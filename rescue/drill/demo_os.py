"""The demo machine's operating system: a small Debian 12 built with mmdebstrap.

Built once into a tarball under the drill cache and reused by every drill
until its recipe changes. Packages come from the mirror this machine's own
apt configuration names; downloaded .debs are kept beside the tarball so a
rebuild needs no network.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

from rescue.drill.cache import drill_cache
from rescue.errors import RescueError
from rescue.run import CommandError, run

SUITE = "bookworm"
APT_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
FILES = Path(__file__).resolve().parent / "files"

# Both grub platforms: the restore runs grub-install inside the restored
# system for whichever firmware the drill boots (BIOS or UEFI).
PACKAGES = (
    "linux-image-amd64", "initramfs-tools", "systemd-sysv", "udev", "kmod",
    "grub-pc-bin", "grub-efi-amd64-bin", "grub2-common", "efibootmgr",
    "e2fsprogs", "xfsprogs", "dosfstools", "passwd",
    # the layered demo machines (rescue.drill.layouts): root on LVM, arrays
    "lvm2", "mdadm", "btrfs-progs",
    # LUKS: crypttab opened at boot (systemd), root's container unlocked by the initramfs
    "cryptsetup", "cryptsetup-initramfs",
)

# Documentation and translations are never read on the demo machine.
DPKG_EXCLUDES = (
    "/usr/share/man/*", "/usr/share/doc/*", "/usr/share/info/*",
    "/usr/share/locale/*", "/usr/share/lintian/*",
)


class BuildFailed(RescueError):
    pass


@dataclass(frozen=True)
class DemoOS:
    """A built root tarball and how it was made."""

    tarball: Path
    key: str
    built: bool  # False when the cached tarball was reused
    seconds: float


def apt_sources() -> Path:
    """The machine's own Debian sources: the drill uses the mirror the admin chose."""
    for candidate in (APT_SOURCES, Path("/etc/apt/sources.list")):
        if candidate.is_file() and candidate.stat().st_size > 0:
            return candidate
    raise BuildFailed(
        "no Debian apt sources on this machine",
        why=f"the demo machine is built from the mirror named in {APT_SOURCES}",
        fix="configure apt (apt-get update must work), then run the drill again",
    )


def recipe_key(sources: Path) -> str:
    """Changes whenever the package list, the trim hook or the mirror changes."""
    h = hashlib.sha256()
    h.update(SUITE.encode())
    h.update("\n".join(PACKAGES).encode())
    h.update("\n".join(DPKG_EXCLUDES).encode())
    h.update((FILES / "customize-os.sh").read_bytes())
    h.update(sources.read_bytes())
    return h.hexdigest()[:12]


def mmdebstrap_argv(out: Path, debs: Path, sources: Path) -> list[str]:
    argv = [
        "mmdebstrap", "--variant=minbase", "--mode=root", "--format=tar",
        "--aptopt=APT::Install-Recommends \"false\"",
        "--include=" + ",".join(PACKAGES),
        "--skip=essential/unlink",
        '--setup-hook=mkdir -p "$1"/var/cache/apt/archives/',
        f"--setup-hook=sync-in {debs} /var/cache/apt/archives/",
        f"--customize-hook=sync-out /var/cache/apt/archives {debs}",
        f'--customize-hook=sh {FILES / "customize-os.sh"} "$1"',
    ]
    argv += [f"--dpkgopt=path-exclude={p}" for p in DPKG_EXCLUDES]
    return argv + [SUITE, str(out), str(sources)]


def build(progress=print, force: bool = False) -> DemoOS:
    """The demo OS tarball: reused from the cache, or built (about 2 minutes).

    Two drills at once (the vm tier and a person) wait for one build."""
    import fcntl

    with open(drill_cache() / ".demo-os.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _build(progress, force)


def _build(progress, force: bool) -> DemoOS:
    sources = apt_sources()
    key = recipe_key(sources)
    cache = drill_cache()
    tarball = cache / f"demo-os-{key}.tar"
    start = time.monotonic()
    if tarball.is_file() and not force:
        return DemoOS(tarball, key, built=False, seconds=time.monotonic() - start)
    debs = cache / "debs"
    debs.mkdir(exist_ok=True)
    partial = tarball.with_suffix(".tar.partial")
    partial.unlink(missing_ok=True)
    progress(f"building the demo machine's Debian with mmdebstrap into {tarball} (about 2 min)")
    try:
        run(mmdebstrap_argv(partial, debs, sources), timeout=3600)
    except CommandError as e:
        partial.unlink(missing_ok=True)
        raise BuildFailed(
            "mmdebstrap could not build the demo machine",
            why=e.why,
            fix="check that apt-get update works with this machine's sources, then rerun",
        ) from None
    os.replace(partial, tarball)
    # The newest two stay: a checkout with another recipe (a branch being merged) reuses its own.
    for old in sorted(cache.glob("demo-os-*.tar"), key=lambda p: p.stat().st_mtime, reverse=True)[2:]:
        old.unlink()
    return DemoOS(tarball, key, built=True, seconds=time.monotonic() - start)
