"""The drill's first half on real loop disks: the demo machine, backed up by real dirvish.

The demo OS is built with mmdebstrap once and cached (/var/cache/rescue/drill);
the demo disk is a loop disk with real filesystems; dirvish runs twice with
`rescue capture` as post-server hook. What the drill later checks in the
restored machine must already be true of the backup: the data fingerprint
computed inside the backed-up trees equals the original's, and the capture
recorded every UUID and the boot mode.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from rescue.demo.dirvish import make_bank
from rescue.devices import loop_disk
from rescue.drill import demo_os
from rescue.drill.demo_disk import DemoDisk
from rescue.layout.model import BootMode, Layout
from rescue.qemu import Firmware
from rescue.run import run


@pytest.fixture(scope="module")
def os_tarball() -> Path:
    return demo_os.build().tarball


@contextlib.contextmanager
def bank_disk(tmp_path: Path) -> Iterator[Path]:
    """A plain ext4 loop disk to hold the bank (the vm tier uses prepare-disk's)."""
    mnt = tmp_path / "backup"
    mnt.mkdir()
    with loop_disk(tmp_path / "backup.img", 2 << 30) as dev:
        run(["mkfs.ext4", "-q", "-F", dev])
        run(["mount", dev, str(mnt)])
        try:
            yield mnt
        finally:
            run(["umount", str(mnt)], check=False)


@contextlib.contextmanager
def assembled(root_tree: Path, home_tree: Path) -> Iterator[Path]:
    """The backed-up / tree with the /home tree bind-mounted where it belongs (read only use)."""
    run(["mount", "--bind", str(home_tree), str(root_tree / "home")])
    try:
        yield root_tree
    finally:
        run(["umount", str(root_tree / "home")], check=False)


@pytest.mark.slow
@pytest.mark.parametrize("firmware", [Firmware.BIOS, Firmware.UEFI], ids=["bios", "uefi"])
def test_the_demo_machine_backed_up_twice_keeps_what_the_drill_checks(
        firmware: Firmware, os_tarball: Path, tmp_path: Path) -> None:
    with DemoDisk(tmp_path / "demo", firmware, os_tarball) as demo, bank_disk(tmp_path) as top:
        facts = demo.build()
        assert len(facts.data_sum) == 64 and len(facts.data_list) > 100
        fstab = (demo.root / "etc" / "fstab").read_text()
        for fs in facts.filesystems:
            assert f"UUID={fs.uuid} {fs.mountpoint} " in fstab
        assert f"UUID={facts.swap_uuid} none swap" in fstab
        assert oct((demo.root / "tmp").stat().st_mode & 0o7777) == "0o1777"

        bank = make_bank(demo, top / "dirvish", confdir=tmp_path / "etc-dirvish")  # type: ignore[arg-type]
        assert [v for v, _ in bank.vaults] == ["root", "home"]  # no vault for /tmp, swap or the ESP
        assert len(bank.images) == 2

        layout_file = bank.image_dir("root") / "rescue" / "layout.json"
        layout = Layout.loads(layout_file.read_text())
        by_uuid = {fs.uuid: fs for fs in layout.filesystems}
        for fs in facts.filesystems:
            assert fs.uuid in by_uuid, f"{fs.mountpoint} missing from the capture"
            assert by_uuid[fs.uuid].fstype == fs.fstype
            assert by_uuid[fs.uuid].mountpoint == fs.mountpoint
        assert [s.uuid for s in layout.swaps] == [facts.swap_uuid]
        assert layout.boot.mode is (BootMode.UEFI if firmware is Firmware.UEFI else BootMode.BIOS)
        if firmware is Firmware.UEFI:
            assert layout.boot.esp == "/boot/efi"
        tmp_root = layout.filesystem_at("/tmp")
        assert tmp_root is not None and tmp_root.root is not None and tmp_root.root.mode == 0o1777

        # what the fingerprint covers, listed inside the newest backup, equals the original's
        # except link counts: dirvish hard-links unchanged files to the night before
        root_tree, home_tree = bank.image_dir("root") / "tree", bank.image_dir("home") / "tree"
        with assembled(root_tree, home_tree) as tree:
            listing = run(["chroot", str(tree), "/usr/local/sbin/demo-data-sum", "--list"]).stdout
        got, want = without_link_counts(listing.splitlines()), without_link_counts(facts.data_list)
        assert sorted(set(want) - set(got)) == [] and sorted(set(got) - set(want)) == []
        assert got == want
        assert any(line.split()[6] != "1" for line in listing.splitlines() if line.startswith("f "))


def without_link_counts(lines) -> list[str]:
    """--list lines are 'type mode uid gid size mtime nlink path -> target'."""
    out = []
    for line in lines:
        f = line.split(" ", 7)
        out.append(" ".join(f[:6] + f[7:]))
    return sorted(out)
