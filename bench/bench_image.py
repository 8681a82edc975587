"""Benchmark: the rescue image's size, build time, write speed and boot time.

In one run:
  - image used size (the ext4 blocks in use, from the block map) and its
    `zstd -3` size; goals: used <= 600 MiB (aim 400), zstd <= 150 MiB;
  - build time from a warm cache: `rescue-image build --force` into a tmp
    folder (the cached base root is reused; --full also drops the base so
    mmdebstrap runs again from the cached .debs);
  - writing the image to the same kind of target (a fresh loop device over a
    sparse 1 GiB file) with prepare-disk's writer (used blocks only, every
    range checked, read back), `dd bs=4M conv=fsync`, and `bmaptool copy`
    (checksums verified); goals: <= 0.5x dd and <= 1.0x bmaptool. Each is run
    --repeat times, the median counts;
  - with --boot: a disk made by prepare-disk booted under TCG (BIOS), seconds
    from qemu's start to the RESCUE-READY line of the entry point.

    .venv/bin/python bench/bench_image.py [--repeat 3] [--build] [--full] [--boot]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from rescue.devices import loop_disk, make_image_file
from rescue.image import bmap as bmapmod
from rescue.image import build as buildmod
from rescue.image import manifest as mf
from rescue.image.recipe import load
from rescue.run import run

MIB = 1 << 20


def timed(fn: Callable[[], object]) -> float:
    start = time.monotonic()
    fn()
    return time.monotonic() - start


def write_benchmark(image: Path, bmap_file: Path, repeat: int, tmp: Path) -> dict[str, float]:
    bm = bmapmod.load(bmap_file)
    # Same start for all three: the image in the page cache.
    with open(image, "rb") as f:
        while f.read(8 << 20):
            pass
    methods: dict[str, Callable[[str], object]] = {
        "prepare-disk": lambda dev: bmapmod.copy_image(image, bm, dev, verify=True),
        "dd bs=4M conv=fsync": lambda dev: run(["dd", f"if={image}", f"of={dev}", "bs=4M", "conv=fsync",
                                                 "status=none"]),
        "bmaptool copy": lambda dev: run(["bmaptool", "-q", "copy", "--bmap", str(bmap_file), str(image), dev]),
    }
    times: dict[str, list[float]] = {name: [] for name in methods}
    for i in range(repeat):
        for name, fn in methods.items():
            target = tmp / f"target-{i}.img"
            with loop_disk(target, bm.image_size) as dev:
                times[name].append(timed(lambda: fn(dev)))
                if name == "prepare-disk":
                    bmapmod.verify_target(dev, bm)
            target.unlink()
    return {name: statistics.median(t) for name, t in times.items()}


def boot_benchmark(image: Path, tmp: Path) -> float:
    from rescue.qemu import VM, Firmware

    disk = make_image_file(tmp / "boot.img", 2 << 30)
    run([sys.executable, "-m", "rescue", "prepare-disk", str(disk), "--image", str(image), "--yes"])
    with VM([disk], tmp / "vm", firmware=Firmware.BIOS, name="bench") as vm:
        return vm.wait_for("RESCUE-READY", 600, fail_markers=("Kernel panic", "grub rescue>"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--build", action="store_true", help="time a forced rebuild (warm cache)")
    p.add_argument("--full", action="store_true", help="with --build: mmdebstrap again too (cached .debs)")
    p.add_argument("--boot", action="store_true", help="time a TCG boot to the entry point")
    args = p.parse_args(argv)

    image, manifest = buildmod.ensure_image()
    bmap_file = image.with_suffix(".bmap")
    print(f"image            {image} (kernel {manifest.kernel}, {len(manifest.packages)} packages)")
    used = manifest.used_bytes / MIB
    print(f"used size        {used:7.1f} MiB of {manifest.total_bytes / MIB:.0f} MiB   "
          f"(goal <= 600, aim 400: {'ok' if used <= 600 else 'OVER'})")
    with tempfile.TemporaryDirectory(prefix="bench-image-", dir="/var/tmp") as t:
        tmp = Path(t)
        zst = tmp / "rescue-root.img.zst"
        zsecs = timed(lambda: run(["zstd", "-3", "-T0", "-q", "-o", str(zst), str(image)]))
        zsize = zst.stat().st_size / MIB
        zst.unlink()
        print(f"zstd -3 size     {zsize:7.1f} MiB in {zsecs:.1f} s        "
              f"(goal <= 150: {'ok' if zsize <= 150 else 'OVER'})")
        if args.build:
            opts = buildmod.BuildOptions(out=tmp / "out", recipe=load(), force=True)
            if args.full:
                for base in buildmod.DEFAULT_CACHE.glob("base-*.tar"):
                    base.unlink()
            secs = timed(lambda: buildmod.build(opts, say=lambda m: None))
            what = "full build, cached .debs" if args.full else "rebuild on the cached base"
            print(f"build time       {secs:7.1f} s   ({what})")
        print(f"last build       {manifest.build_seconds:7.1f} s   (manifest of the image in use)")
        results = write_benchmark(image, bmap_file, args.repeat, tmp)
        dd, bt, ours = results["dd bs=4M conv=fsync"], results["bmaptool copy"], results["prepare-disk"]
        for name, secs in results.items():
            print(f"write {name:<22} {secs:6.2f} s (median of {args.repeat})")
        print(f"prepare-disk / dd        {ours / dd:6.2f}x   (goal <= 0.5: {'ok' if ours / dd <= 0.5 else 'MISSED'})")
        print(f"prepare-disk / bmaptool  {ours / bt:6.2f}x   (goal <= 1.0: {'ok' if ours / bt <= 1.0 else 'MISSED'})")
        if args.boot:
            secs = boot_benchmark(image, tmp)
            print(f"boot to entry    {secs:7.1f} s   (TCG, BIOS, qemu start to RESCUE-READY)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
