"""The layered demo machine's build is kept between drills (the builder VM is the slow part).

Only file operations: what is kept, what makes another key, that a broken entry is
never reused, and that an older build of the same layout and firmware is dropped.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

from rescue.drill import layered, layouts
from rescue.qemu import Firmware


def _inputs(tmp_path: Path) -> tuple[Path, Path]:
    tarball, image = tmp_path / "demo-os.tar", tmp_path / "rescue.img"
    tarball.write_bytes(b"os")
    image.write_bytes(b"image")
    return tarball, image


def _capture(tmp_path: Path) -> Path:
    cap = tmp_path / "capture"
    (cap / "lvm").mkdir(parents=True)
    (cap / "layout.json").write_text('{"version": 1}')
    (cap / "lvm" / "demo.vg").write_text("demo {\n}\n")
    return cap


def _vols(lay: layouts.Layout) -> tuple[layouts.Volume, ...]:
    n = itertools.count()
    return layouts.volumes(lay, Firmware.BIOS, new_uuid=lambda: f"00000000-0000-4000-8000-{next(n):012d}")


def test_a_kept_build_comes_back_with_its_uuids_and_capture(tmp_path: Path) -> None:
    lay = layouts.LAYOUTS["lvm"]
    tarball, image = _inputs(tmp_path)
    key = layered.build_key(lay, Firmware.BIOS, tarball, image)
    assert layered.cached_build(lay, Firmware.BIOS, key, root=tmp_path / "cache") is None
    vols = _vols(lay)
    log = tmp_path / "build.log"
    log.write_text("+ vgcreate demo\n")
    layered.keep_build(lay, Firmware.BIOS, key, vols, _capture(tmp_path), log, root=tmp_path / "cache")
    got = layered.cached_build(lay, Firmware.BIOS, key, root=tmp_path / "cache")
    assert got is not None
    assert got.vols == vols
    assert (got.capture / "lvm" / "demo.vg").read_text() == "demo {\n}\n"
    assert got.log.read_text() == "+ vgcreate demo\n"


def test_another_firmware_layout_demo_os_or_rescue_image_is_another_build(tmp_path: Path) -> None:
    lay = layouts.LAYOUTS["lvm"]
    tarball, image = _inputs(tmp_path)
    key = layered.build_key(lay, Firmware.BIOS, tarball, image)
    assert key == layered.build_key(lay, Firmware.BIOS, tarball, image)
    assert key != layered.build_key(lay, Firmware.UEFI, tarball, image)
    assert key != layered.build_key(layouts.LAYOUTS["raid1-lvm"], Firmware.BIOS, tarball, image)
    st = image.stat()
    os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # a rebuilt rescue image
    assert key != layered.build_key(lay, Firmware.BIOS, tarball, image)
    tarball.write_bytes(b"another demo os")
    assert key != layered.build_key(lay, Firmware.BIOS, tarball, image)


def test_a_broken_entry_is_not_reused_and_a_new_build_drops_the_older_one(tmp_path: Path) -> None:
    lay, cache = layouts.LAYOUTS["lvm"], tmp_path / "cache"
    vols, cap = _vols(lay), _capture(tmp_path)
    old = layered.keep_build(lay, Firmware.BIOS, "aaaa", vols, cap, tmp_path / "no.log", root=cache)
    other_fw = layered.keep_build(lay, Firmware.UEFI, "aaaa", vols, cap, tmp_path / "no.log", root=cache)
    (old / "capture" / "layout.json").unlink()  # cut short while it was written by hand, say
    assert layered.cached_build(lay, Firmware.BIOS, "aaaa", root=cache) is None
    (old / "volumes.json").write_text("not json")
    assert layered.cached_build(lay, Firmware.BIOS, "aaaa", root=cache) is None
    new = layered.keep_build(lay, Firmware.BIOS, "bbbb", vols, cap, tmp_path / "no.log", root=cache)
    assert not old.exists() and new.is_dir() and other_fw.is_dir()
    assert sorted(p.name for p in cache.iterdir()) == ["lvm-bios-bbbb", "lvm-uefi-aaaa"]


def test_a_reused_capture_points_at_this_drills_copy_of_the_files(tmp_path: Path) -> None:
    """Each vault's tree is a mount point under the capture's root: a capture taken in an
    earlier drill's folder matched no vault of the next drill until it was re-rooted."""
    from rescue.layout.model import Layout as Captured

    sample = Path(__file__).parent / "layout_samples" / "btrfs-capture" / "layout.json"
    taken = tmp_path / "layout.json"
    taken.write_text(sample.read_text())
    before = Captured.loads(taken.read_text(), str(taken))
    layered._reroot(taken, tmp_path / "now" / "machine")
    after = Captured.loads(taken.read_text(), str(taken))
    assert after.root == str(tmp_path / "now" / "machine") != before.root
    assert after.filesystems == before.filesystems and after.layers == before.layers
