"""Build the rescue root partition image: mmdebstrap -> trim -> rescue -> mke2fs -d.

Two stages, each cached under the cache folder (default /var/cache/rescue):

base   mmdebstrap of the recipe's packages, with the overlay, trimmed
       modules, locked root and a fresh initramfs (rescue.image.customize),
       kept as base-KEY.tar. KEY covers the recipe, its overlay and the
       customize code, so only a recipe change runs mmdebstrap again.
       Downloaded .debs stay in CACHE/apt: a rebuild downloads nothing.
image  the base unpacked, grub.cfg rendered from grub/, rescue installed
       from wheels built on this host (the rescue system needs no network),
       then `mke2fs -d` into an ext4 image (label RESCUE, no mount needed),
       its block map and manifest.json. Its key also covers rescue's code: an
       output folder that already holds an image with the same key is reused.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import rescue
from rescue.formats.units import sha256_file
from rescue.errors import RescueError
from rescue.image import bmap as bmapmod
from rescue.image import manifest as mf
from rescue.image.customize import copy_overlay
from rescue.image.grubcfg import GrubConfig, render
from rescue.image.recipe import Recipe
from rescue.resources import grub_dir
from rescue.run import CommandError, run, spawn

DEFAULT_CACHE = Path("/var/cache/rescue")
PYTHON_SITE = "usr/local/lib/python3.11/dist-packages"
UNATTENDED = "usr/local/sbin/rescue-unattended-restore"
PLACEHOLDER_MARKER = "RESCUE-UNATTENDED-PLACEHOLDER"

_PACKAGE_DIR = Path(rescue.__file__).resolve().parent
_CODE_VERSION = "1"  # bump when the build steps change in a way keys do not see


class BuildError(RescueError):
    pass


@dataclass(frozen=True)
class BuildOptions:
    out: Path
    recipe: Recipe
    suite: str | None = None  # None: the recipe's
    mirror: str | None = None  # None: from the machine's apt configuration
    cache: Path = DEFAULT_CACHE
    project: Path | None = None  # rescue's source tree for the wheel; None: this one
    force: bool = False


Say = Callable[[str], None]


def _say(msg: str) -> None:
    print(f"rescue-image: {msg}", file=sys.stderr, flush=True)


@contextmanager
def step(say: Say, what: str) -> Iterator[None]:
    """One named phase of the build, with its duration."""
    say(f"{what} ...")
    start = time.monotonic()
    yield
    say(f"{what}: done in {time.monotonic() - start:.1f} s")


# --- the Debian mirror -------------------------------------------------------------------------

def mirror_from_apt(suite: str, etc: Path = Path("/etc/apt")) -> str:
    """The machine's own Debian mirror for `suite`, from its apt sources."""
    for path in sorted((etc / "sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", path.read_text()):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line:
                    continue
                k, _, v = line.partition(":")
                fields[k.strip().lower()] = v.strip()
            if "deb" in fields.get("types", "").split() and suite in fields.get("suites", "").split():
                uris = fields.get("uris", "").split()
                if uris:
                    return uris[0]
    for path in [etc / "sources.list", *sorted((etc / "sources.list.d").glob("*.list"))]:
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            words = re.sub(r"\[[^]]*\]", "", line).split()
            if len(words) >= 3 and words[0] == "deb" and words[2] == suite:
                return words[1]
    raise BuildError(f"no Debian mirror for {suite} in {etc}",
                     why="the machine's apt sources do not list that suite",
                     fix="give one with --mirror URL")


# --- keys --------------------------------------------------------------------------------------

def _hash_tree(h: "hashlib._Hash", root: Path, patterns: tuple[str, ...] = ("**/*",)) -> None:
    files = sorted({p for pat in patterns for p in root.glob(pat) if p.is_file() and "__pycache__" not in p.parts})
    for p in files:
        h.update(p.relative_to(root).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(p.read_bytes()).digest())


def base_key(recipe: Recipe, suite: str, mirror: str) -> str:
    h = hashlib.sha256(f"{_CODE_VERSION}\0{recipe.base_key()}\0{suite}\0{mirror}".encode())
    for overlay in recipe.overlays:
        if (overlay / "etc/initramfs-tools").is_dir():
            _hash_tree(h, overlay / "etc/initramfs-tools")
    h.update((_PACKAGE_DIR / "image" / "customize.py").read_bytes())
    return h.hexdigest()[:16]


def _project_dir(opts: BuildOptions) -> Path:
    return (opts.project or _PACKAGE_DIR.parent).resolve()


def unattended_script(project: Path) -> Path | None:
    for candidate in (project / "scripts" / "unattended-restore", _PACKAGE_DIR / "_data" / "scripts" / "unattended-restore"):
        if candidate.is_file():
            return candidate
    return None


def image_key(base: str, recipe: Recipe, project: Path) -> str:
    h = hashlib.sha256(f"{base}\0{recipe.label}\0{recipe.size_mib}\0{recipe.kernel_cmdline}".encode())
    h.update("\0".join((*recipe.enable_units, "|", *recipe.mask_units)).encode())
    for overlay in recipe.overlays:
        _hash_tree(h, overlay)
    _hash_tree(h, project / "rescue", ("**/*.py", "**/*.j2", "**/*.tcss", "**/*.json", "**/*.sh"))
    _hash_tree(h, grub_dir())
    for f in (project / "pyproject.toml", unattended_script(project)):
        if f is not None and f.is_file():
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


# --- stages ------------------------------------------------------------------------------------

def build_base(recipe: Recipe, suite: str, mirror: str, cache: Path, key: str, say: Say) -> Path:
    """mmdebstrap + customize, cached as CACHE/base-KEY.tar (one builder at a time)."""
    import fcntl

    with open(cache / ".base.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _build_base(recipe, suite, mirror, cache, key, say)


def _build_base(recipe: Recipe, suite: str, mirror: str, cache: Path, key: str, say: Say) -> Path:
    tar = cache / f"base-{key}.tar"
    if tar.is_file():
        say(f"base root {tar.name} is cached")
        return tar
    apt_cache = cache / "apt"
    apt_cache.mkdir(parents=True, exist_ok=True)
    for old in cache.glob("base-*.tar"):
        old.unlink()
    partial = cache / f"base-{key}.tar.partial"
    hook = f'{sys.executable} -m rescue.image.customize "$1" {recipe.source}'
    argv = [
        "mmdebstrap", f"--variant={recipe.variant}", "--mode=root", "--format=tar",
        "--skip=download/empty", "--skip=essential/unlink",
        f"--include={','.join(recipe.packages)}",
        *[f"--dpkgopt=path-exclude={p}" for p in recipe.dpkg_exclude],
        *[f"--dpkgopt=path-include={p}" for p in recipe.dpkg_include],
        '--aptopt=APT::Install-Recommends "false"',
        '--setup-hook=mkdir -p "$1"/var/cache/apt/archives/',
        f"--setup-hook=sync-in {apt_cache} /var/cache/apt/archives/",
        f"--customize-hook=sync-out /var/cache/apt/archives {apt_cache}",
        f"--customize-hook={hook}",
        suite, str(partial), mirror,
    ]
    with step(say, f"mmdebstrap {suite} from {mirror} ({len(recipe.packages)} packages, about 2 minutes)"):
        # INITRD=No: the kernel package makes no initramfs; customize makes
        # the only one, after the modules were trimmed.
        env = {"PYTHONPATH": str(_PACKAGE_DIR.parent), "INITRD": "No"}
        proc = spawn(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        tail: deque[str] = deque(maxlen=40)
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            tail.append(line)
            # mmdebstrap's phases ("I: downloading packages with apt...") and the hook's own lines
            if line.startswith("rescue-image: "):
                say(line.removeprefix("rescue-image: "))
            elif line.startswith("I: ") or os.environ.get("RESCUE_IMAGE_VERBOSE"):
                say(f"  {line.removeprefix('I: ')}")
        if proc.wait() != 0:
            partial.unlink(missing_ok=True)
            raise CommandError(argv, proc.returncode, "\n".join(tail))
    partial.rename(tar)
    return tar


def source_tree(project: Path) -> bool:
    """A checkout of rescue (pyproject.toml beside the package), not the site-packages it is installed in."""
    return (project / "pyproject.toml").is_file() and (project / "rescue" / "__init__.py").is_file()


_NOT_PACKED = ("RECORD", "INSTALLER", "REQUESTED", "direct_url.json")  # written by the installer, not the wheel


def wheel_from_installed(site: Path, out: Path) -> Path:
    """rescue's wheel repacked from the installed files its dist-info RECORD lists.

    A backup server's admin installs rescue from a wheel (pip, pipx, an index):
    there is no source tree to build one from, and the image must carry the
    rescue that runs here, file for file. Scripts (bin/) and byte code are left
    out: the installer in the image makes its own."""
    import base64
    import importlib.metadata as md
    import zipfile

    dists = [d for d in md.distributions(path=[str(site)]) if (d.metadata["Name"] or "").lower() == "rescue"]
    if not dists or dists[0].files is None:
        raise BuildError(f"no installed rescue distribution in {site}",
                         why="rescue's code runs from there, but its dist-info (RECORD) is missing",
                         fix="reinstall rescue (pip install rescue), or build from a source checkout")
    dist = dists[0]
    info = f"{dist.metadata['Name']}-{dist.version}.dist-info"
    tags = [line.split(":", 1)[1].strip() for line in dist.read_text("WHEEL").splitlines()  # type: ignore[union-attr]
            if line.startswith("Tag:")] or ["py3-none-any"]
    files: list[tuple[str, Path]] = []
    for f in dist.files or ():
        rel = f.as_posix()
        if rel.startswith("../") or "__pycache__" in f.parts or rel.endswith(".pyc"):
            continue
        if f.parts[0] == info and f.name in _NOT_PACKED:
            continue
        path = site / rel
        if not path.is_file():
            raise BuildError(f"the installed rescue is incomplete: {path} is missing",
                             why=f"{info}/RECORD lists it", fix="reinstall rescue")
        files.append((rel, path))
    out.mkdir(parents=True, exist_ok=True)
    wheel = out / f"{dist.metadata['Name']}-{dist.version}-{tags[0]}.whl"
    record = []
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as z:
        for rel, path in sorted(files):
            data = path.read_bytes()
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            info_z = zipfile.ZipInfo(rel, date_time=(1980, 1, 1, 0, 0, 0))
            info_z.external_attr = (path.stat().st_mode & 0o777 | 0o100000) << 16
            info_z.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info_z, data)
            record.append(f"{rel},sha256={digest},{len(data)}")
        record.append(f"{info}/RECORD,,")
        z.writestr(zipfile.ZipInfo(f"{info}/RECORD", date_time=(1980, 1, 1, 0, 0, 0)), "\n".join(record) + "\n")
    return wheel


def rescue_wheel(project: Path, out: Path) -> Path:
    """The wheel of the running rescue: built from its source tree, or repacked from its installation."""
    if not source_tree(project):
        return wheel_from_installed(project, out)
    run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(out), str(project)],
        timeout=900)
    return next(out.glob("rescue-*.whl"))


def _build_wheels(project: Path, wheels: Path, say: Say) -> list[Path]:
    """rescue and its dependencies as wheels, built on this host."""
    dep_cache = wheels.parent / "wheels"
    dep_cache.mkdir(parents=True, exist_ok=True)
    fresh = wheels / "fresh"
    fresh.mkdir(parents=True)
    own = rescue_wheel(project, wheels / "rescue")
    run([sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(fresh),
         "--find-links", str(dep_cache), str(own)], timeout=900)
    for w in fresh.glob("*.whl"):
        if not w.name.startswith("rescue-"):
            shutil.copy2(w, dep_cache / w.name)
    return sorted(fresh.glob("*.whl"))


def install_rescue(root: Path, project: Path, work: Path, say: Say) -> bool:
    """rescue into /usr/local of the image; returns True if the unattended script is a placeholder."""
    wheels = _build_wheels(project, work / "wheels", say)
    site = root / PYTHON_SITE
    site.mkdir(parents=True, exist_ok=True)
    run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-compile",
         "--find-links", str(wheels[0].parent), "--target", str(site), "rescue"], timeout=600)
    shutil.rmtree(site / "bin", ignore_errors=True)
    bin_dir = root / "usr/local/bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    entry = bin_dir / "rescue"
    entry.write_text("#!/usr/bin/python3\nimport sys\nfrom rescue.cli import main\nsys.exit(main())\n")
    entry.chmod(0o755)
    # Byte-compiled once here (the same python 3.11 as the image): the rescue
    # system starts faster, and its root stays unchanged when it runs.
    run([sys.executable, "-m", "compileall", "-q", "-j", "0", "-s", str(root), "-p", "/", str(site)])
    script = unattended_script(project)
    target = root / UNATTENDED
    target.parent.mkdir(parents=True, exist_ok=True)
    if script is not None:
        shutil.copy2(script, target)
    else:
        target.write_text(
            "#!/bin/sh\n"
            f"echo '{PLACEHOLDER_MARKER}: this rescue image was built before scripts/unattended-restore existed;'\n"
            "echo 'rebuild it (rescue-image build) to get the unattended restore.'\n"
            "exit 1\n"
        )
    target.chmod(0o755)
    return script is None


def finish(root: Path, recipe: Recipe) -> None:
    """The image stage: overlay files and units (cheap, so not part of the base)."""
    for overlay in recipe.overlays:
        copy_overlay(root, overlay)
    if recipe.enable_units:
        run(["systemctl", f"--root={root}", "enable", *recipe.enable_units])
    run(["systemctl", f"--root={root}", "enable", "serial-getty@ttyS0.service"])
    if recipe.mask_units:
        run(["systemctl", f"--root={root}", "mask", *recipe.mask_units])


def write_grub_cfg(root: Path, recipe: Recipe, built: str, kernel: str) -> None:
    grub = root / "boot/grub"
    grub.mkdir(parents=True, exist_ok=True)
    cfg = GrubConfig(kernel=f"/boot/vmlinuz-{kernel}", initrd=f"/boot/initrd.img-{kernel}",
                     cmdline=recipe.kernel_cmdline, label=recipe.label, name=recipe.name, built=built)
    (grub / "grub.cfg").write_text(render(cfg))
    # Modules grub loads on demand come from the image's own grub packages.
    for platform in ("i386-pc", "x86_64-efi"):
        link = grub / platform
        if not link.exists() and (root / "usr/lib/grub" / platform).is_dir():
            link.symlink_to(f"/usr/lib/grub/{platform}")


def kernel_version(root: Path) -> str:
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    if not kernels:
        raise BuildError("the image has no kernel in /boot", fix="keep linux-image-amd64 in the recipe's packages")
    return kernels[-1].name.removeprefix("vmlinuz-")


def packages_of(root: Path) -> tuple[mf.Package, ...]:
    out = run(["dpkg-query", f"--admindir={root}/var/lib/dpkg", "-W", "-f", "${Package}\t${Version}\n"]).stdout
    return tuple(mf.Package(*line.split("\t", 1)) for line in sorted(out.splitlines()) if "\t" in line)


def make_ext4(root: Path, image: Path, recipe: Recipe) -> str:
    """mke2fs -d: the root folder becomes an ext4 image, no mount needed. Returns the fs UUID."""
    image.unlink(missing_ok=True)
    run(["mke2fs", "-q", "-F", "-t", "ext4", "-L", recipe.label, "-b", "4096", "-m", "0", "-J", "size=16",
         "-E", "root_owner=0:0,lazy_itable_init=0", "-d", str(root), str(image), f"{recipe.size_mib}M"],
        timeout=600)
    return run(["blkid", "-p", "-s", "UUID", "-o", "value", str(image)]).stdout.strip()


def cached_manifest(out: Path, key: str) -> mf.Manifest | None:
    try:
        m = mf.load(out)
    except RescueError:
        return None
    if m.build_key == key and (out / m.image).is_file() and (out / m.bmap).is_file():
        return m
    return None


def image_keys(opts: BuildOptions) -> tuple[str, str]:
    """The base key and the image key of what build(opts) makes."""
    suite = opts.suite or opts.recipe.suite
    bkey = base_key(opts.recipe, suite, opts.mirror or mirror_from_apt(suite))
    return bkey, image_key(bkey, opts.recipe, _project_dir(opts))


def build(opts: BuildOptions, say: Say = _say) -> mf.Manifest:
    """Build (or reuse) the rescue image in opts.out; returns its manifest."""
    if os.geteuid() != 0:
        raise BuildError("rescue-image build must run as root",
                         why="mmdebstrap installs packages as root and mke2fs keeps their owners")
    recipe = opts.recipe
    suite = opts.suite or recipe.suite
    mirror = opts.mirror or mirror_from_apt(suite)
    project = _project_dir(opts)
    bkey, ikey = image_keys(replace(opts, suite=suite, mirror=mirror))
    if not opts.force and (m := cached_manifest(opts.out, ikey)) is not None:
        say(f"{opts.out / m.image} is up to date (key {ikey})")
        return m
    start = time.monotonic()
    opts.out.mkdir(parents=True, exist_ok=True)
    opts.cache.mkdir(parents=True, exist_ok=True)
    tar = build_base(recipe, suite, mirror, opts.cache, bkey, say)
    built = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()
    with tempfile.TemporaryDirectory(prefix="rescue-image-", dir=opts.cache) as tmp:
        work = Path(tmp)
        root = work / "root"
        root.mkdir()
        with step(say, "unpacking the base root"):
            run(["tar", "-C", str(root), "--numeric-owner", "--xattrs", "--xattrs-include=*", "-xpf", str(tar)])
        finish(root, recipe)
        with step(say, "installing rescue from wheels built here"):
            placeholder = install_rescue(root, project, work, say)
            if placeholder:
                say("scripts/unattended-restore is missing: the image has a placeholder that says so")
        kernel = kernel_version(root)
        write_grub_cfg(root, recipe, built, kernel)
        packages = packages_of(root)
        image = opts.out / f".{mf.IMAGE}.partial"
        with step(say, f"mke2fs -d into a {recipe.size_mib} MiB ext4 image"):
            fs_uuid = make_ext4(root, image, recipe)
    with step(say, "block map and checksums"):
        bm = bmapmod.create(image)
        digest = sha256_file(image)
    used_mib = bm.mapped_bytes / (1 << 20)
    if image_key(bkey, recipe, project) != ikey:
        # The key names what the image holds; if rescue's source changed while the
        # wheels were built, neither the old nor the new key would be true of it.
        image.unlink()
        raise BuildError("rescue's source changed while the image was being built",
                         why=f"files under {project / 'rescue'} were edited during the build",
                         fix="run rescue-image build again")
    if used_mib > recipe.max_used_mib:
        image.unlink()
        raise BuildError(f"the image uses {used_mib:.0f} MiB, over the recipe's budget of {recipe.max_used_mib} MiB",
                         fix="trim more in the recipe, or raise max_used_mib")
    # Every output is renamed into place, never rewritten: snapshots (hard
    # links, see ensure_image) and readers of the previous build keep theirs.
    image.rename(opts.out / mf.IMAGE)
    partial_bmap = opts.out / f".{mf.BMAP}.partial"
    bmapmod.save(bm, partial_bmap)
    partial_bmap.rename(opts.out / mf.BMAP)
    manifest = mf.Manifest(
        image=mf.IMAGE, bmap=mf.BMAP, label=recipe.label, fs_uuid=fs_uuid,
        total_bytes=bm.image_size, used_bytes=bm.mapped_bytes, sha256=digest, kernel=kernel,
        suite=suite, mirror=mirror, rescue_version=rescue.__version__, build_key=ikey, base_key=bkey,
        built=built, build_seconds=round(time.monotonic() - start, 1),
        unattended_placeholder=placeholder, packages=packages,
    )
    partial_dir = opts.out / ".manifest.partial"
    partial_dir.mkdir(exist_ok=True)
    mf.save(manifest, partial_dir).rename(opts.out / mf.MANIFEST)
    partial_dir.rmdir()
    say(f"{opts.out / mf.IMAGE}: {used_mib:.0f} MiB used of {bm.image_size >> 20} MiB, "
        f"{len(packages)} packages, kernel {kernel}, {manifest.build_seconds:.0f} s")
    return manifest


DEFAULT_OUT = DEFAULT_CACHE / "image"


def ensure_image(out: Path = DEFAULT_OUT, say: Say = _say, keep: int = 3) -> tuple[Path, mf.Manifest]:
    """The default rescue image, built only when the recipe or rescue's code changed.

    For tests, benchmarks and the drill: one build serves every run until
    something it is made of changes (see the module docstring for the keys).
    The path returned is a snapshot (hard links in OUT/../images/KEY/) that no
    later build replaces while a test still reads it; the newest `keep`
    snapshots are kept.
    """
    import fcntl

    from rescue.image.recipe import load

    out.parent.mkdir(parents=True, exist_ok=True)
    # Two test runs at once (the vm tier, the drill) wait for one build.
    with open(out.parent / f".{out.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        opts = BuildOptions(out=out, recipe=load())
        snaps = out.parent / "images"
        # A snapshot with this key is this image: a source checkout and an
        # installed rescue (other keys) take turns without rebuilding.
        snap = snaps / image_keys(opts)[1]
        if (snap / mf.MANIFEST).is_file():
            m = mf.load(snap)
            if (snap / m.image).is_file():
                say(f"{snap / m.image} is up to date (key {m.build_key})")
                os.utime(snap)
                return snap / m.image, m
        m = build(opts, say)
        snap = snaps / m.build_key
        if not (snap / mf.MANIFEST).is_file():
            partial = snaps / f".{m.build_key}.partial"
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
            os.link(out / m.image, partial / m.image)
            for name in (m.bmap, mf.MANIFEST):
                shutil.copy2(out / name, partial / name)
            partial.rename(snap)
        os.utime(snap)
        for old in sorted((d for d in snaps.iterdir() if d.is_dir() and not d.name.startswith(".")),
                          key=lambda d: d.stat().st_mtime, reverse=True)[keep:]:
            shutil.rmtree(old, ignore_errors=True)
    return snap / m.image, m
