"""The base stage's customize hook, run by mmdebstrap inside the new root.

`python -m rescue.image.customize ROOT RECIPE` takes the initramfs settings
from the overlay, drops kernel modules a rescue boot never needs, locks root's password,
enables and masks units, rebuilds the initramfs from what is left and trims
documentation and caches. The image stage (rescue.image.build.finish)
copies the overlay files and enables the units. mmdebstrap has /proc, /sys and /dev mounted in
ROOT while this runs, so `chroot ROOT ...` commands work.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from rescue.image.recipe import Recipe, load
from rescue.run import run


def copy_overlay(root: Path, overlay: Path) -> int:
    """Copy an overlay folder over the root, keeping modes; returns files copied."""
    n = 0
    for src in sorted(overlay.rglob("*")):
        rel = src.relative_to(overlay)
        dst = root / rel
        if src.is_dir() and not src.is_symlink():
            dst.mkdir(parents=True, exist_ok=True)
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        if dst.is_symlink() or dst.exists():
            dst.unlink()
        if src.is_symlink():
            os.symlink(os.readlink(src), dst)
        else:
            shutil.copy2(src, dst)
            os.chown(dst, 0, 0)
        n += 1
    return n


def trim_modules(root: Path, keep: tuple[str, ...]) -> tuple[int, int]:
    """Delete modules outside the keep list; returns (kept, removed)."""
    kept = removed = 0
    for moddir in sorted((root / "lib/modules").glob("*")):
        kernel = moddir / "kernel"
        if not kernel.is_dir():
            continue
        for path in sorted(kernel.rglob("*.ko*")):
            rel = path.relative_to(kernel).as_posix()
            if any(rel == k or rel.startswith(k.rstrip("/") + "/") for k in keep):
                kept += 1
            else:
                path.unlink()
                removed += 1
        for d in sorted(kernel.rglob("*"), reverse=True):
            if d.is_dir() and not any(d.iterdir()):
                d.rmdir()
        run(["chroot", str(root), "depmod", "-a", moddir.name])
    return kept, removed


def trim_paths(root: Path, patterns: tuple[str, ...]) -> int:
    n = 0
    for pattern in patterns:
        for path in root.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            n += 1
    return n


INITRAMFS_CONF = "etc/initramfs-tools"


def customize(root: Path, recipe: Recipe) -> None:
    """The base stage: what needs the chroot, and the initramfs built from what is left."""
    for overlay in recipe.overlays:
        if (overlay / INITRAMFS_CONF).is_dir():
            copy_overlay(root / INITRAMFS_CONF, overlay / INITRAMFS_CONF)
    kept, removed = trim_modules(root, recipe.modules_keep)
    print(f"rescue-image: kernel modules: kept {kept}, removed {removed}", flush=True)
    run(["chroot", str(root), "passwd", "--lock", "root"])
    # Every boot makes its own machine id; no SSH host key is ever baked in.
    (root / "etc/machine-id").write_text("")
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    # The kernel's own postinst made none (INITRD=No): one initramfs, made
    # once, from the modules that are left.
    for moddir in sorted((root / "lib/modules").glob("*")):
        print(f"rescue-image: making the initramfs for {moddir.name}", flush=True)
        (root / "boot" / f"initrd.img-{moddir.name}").unlink(missing_ok=True)
        run(["chroot", str(root), "update-initramfs", "-c", "-k", moddir.name])
    print(f"rescue-image: trimmed {trim_paths(root, recipe.trim)} paths", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m rescue.image.customize ROOT RECIPE", file=sys.stderr)
        return 2
    customize(Path(args[0]), load(Path(args[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
