"""`rescue restore` refuses unsafe restores before a single byte is written.

Each case runs the real command against a real bank and a loop disk, and
checks the disk's sha256 before and after: the disk holding the backup, the
disk the running system lives on (a probe result saying so: the real root
disk is never touched), a disk with something mounted, a target too small,
a partition instead of a disk, images whose Status is not success, a bank
without a captured layout, a person who does not type the target's name,
a disk that gets mounted between the plan and the first write, and a disk
another restore (the wizard on another console) is writing right now.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import pytest

from rescue.formats.units import sha256_file
from rescue.backups import choose_images, find_backups
from rescue.cli import main
from rescue.demo import DemoMachine, make_bank
from rescue.devices import loop_disk, partition_path
from rescue.errors import Exit, UnsafeTarget
from rescue.layout.legacy import load_layout
from rescue.run import run

MiB = 1 << 20
GiB = 1 << 30
# mkfs.ext4 otherwise goes on writing inode tables after mount (and changes the checksum)
NO_LAZY = ("-E", "lazy_itable_init=0,lazy_journal_init=0")


@pytest.fixture(scope="module")
def bank(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("safety")
    with DemoMachine(tmp / "machine") as m:
        b = make_bank(m, tmp / "bank")
        m.detach_keep_image()
    return b


def sha256(path: Path) -> str:
    return sha256_file(path)


def blank_with_table(dev: str) -> None:
    """Something recognisable on the target, so a wipe would change the checksum."""
    run(["sfdisk", dev], input="label: dos\n\nsize=64MiB, type=83\n")
    run(["partprobe", dev], check=False)


def restore(bank, dev: str, state: Path, *extra: str, banks: list[Path] | None = None) -> int:
    argv = ["restore", "--client", bank.client, "--target", dev, "--state-dir", str(state), *extra]
    for b in banks or [bank.bank]:
        argv += ["--bank", str(b)]
    return main(argv)


def test_refuses_the_disk_holding_the_backup(bank, tmp_path, capsys):
    img = tmp_path / "backup-disk.img"
    with loop_disk(img, 512 * MiB) as dev:
        run(["mkfs.ext4", "-q", "-F", *NO_LAZY, dev])
        mnt = tmp_path / "backup"
        mnt.mkdir()
        run(["mount", dev, str(mnt)])
        run(["cp", "-a", str(bank.bank), str(mnt / "bank")])
        run(["umount", str(mnt)])
        # read-only, as the rescue system mounts the backup: nothing changes the image by itself
        run(["mount", "-o", "ro,noload", dev, str(mnt)])
        try:
            before = sha256(img)
            code = restore(bank, dev, tmp_path / "state", "--yes", banks=[mnt / "bank"])
            err = capsys.readouterr().err
        finally:
            run(["umount", str(mnt)])
        assert code == Exit.UNSAFE, err
        assert "holds the backup being restored" in err
        assert sha256(img) == before


def test_refuses_the_disk_the_running_system_lives_on(bank, tmp_path, capsys, monkeypatch):
    """The probe's answer is replaced by one that says 'holds the running system'."""
    import rescue.probe

    real = rescue.probe.probe_disk

    def probe(device, **kw):
        return dataclasses.replace(real(device, **kw), holds_root=True)

    monkeypatch.setattr(rescue.probe, "probe_disk", probe)
    img = tmp_path / "t.img"
    with loop_disk(img, GiB) as dev:
        blank_with_table(dev)
        before = sha256(img)
        code = restore(bank, dev, tmp_path / "state", "--yes")
        err = capsys.readouterr().err
    assert code == Exit.UNSAFE
    assert "holds the running system" in err
    assert sha256(img) == before


def test_refuses_a_disk_with_something_mounted(bank, tmp_path, capsys):
    img = tmp_path / "t.img"
    with loop_disk(img, GiB) as dev:
        blank_with_table(dev)
        part = partition_path(dev, 1)
        run(["mkfs.ext4", "-q", "-F", *NO_LAZY, part])
        mnt = tmp_path / "m"
        mnt.mkdir()
        run(["mount", "-o", "ro,noload", part, str(mnt)])
        try:
            before = sha256(img)
            code = restore(bank, dev, tmp_path / "state", "--yes")
            err = capsys.readouterr().err
            assert sha256(img) == before
        finally:
            run(["umount", str(mnt)])
    assert code == Exit.UNSAFE
    assert "mounted" in err and str(mnt) in err


def test_refuses_a_target_too_small(bank, tmp_path, capsys):
    img = tmp_path / "t.img"
    with loop_disk(img, 200 * MiB) as dev:
        blank_with_table(dev)
        before = sha256(img)
        code = restore(bank, dev, tmp_path / "state", "--yes")
        err = capsys.readouterr().err
        assert sha256(img) == before
    assert code == Exit.REFUSED, err


def test_refuses_a_partition_as_target(bank, tmp_path, capsys):
    img = tmp_path / "t.img"
    with loop_disk(img, GiB) as dev:
        blank_with_table(dev)
        before = sha256(img)
        code = restore(bank, partition_path(dev, 1), tmp_path / "state", "--yes")
        err = capsys.readouterr().err
        assert sha256(img) == before
    assert code == Exit.UNSAFE
    assert "not a whole disk" in err or "is a partition" in err


def _copy_bank(bank, tmp_path: Path) -> Path:
    dest = tmp_path / "bank-copy"
    run(["cp", "-a", str(bank.bank), str(dest)])
    return dest


def test_refuses_images_whose_status_is_not_success(bank, tmp_path, capsys):
    copy = _copy_bank(bank, tmp_path)
    for summary in copy.glob("*/*/summary"):
        text = summary.read_text().replace("Status: success", "Status: fail (24)")
        summary.write_text(text)
    img = tmp_path / "t.img"
    with loop_disk(img, GiB) as dev:
        blank_with_table(dev)
        before = sha256(img)
        code = restore(bank, dev, tmp_path / "state", "--yes", banks=[copy])
        err = capsys.readouterr().err
        assert sha256(img) == before
    assert code != Exit.OK
    assert "no usable image" in err or "not complete successful backups" in err


def test_refuses_a_bank_without_a_captured_layout(bank, tmp_path, capsys):
    copy = _copy_bank(bank, tmp_path)
    for layout_dir in copy.glob("*/*/rescue"):
        shutil.rmtree(layout_dir)
    img = tmp_path / "t.img"
    with loop_disk(img, GiB) as dev:
        blank_with_table(dev)
        before = sha256(img)
        code = restore(bank, dev, tmp_path / "state", "--yes", banks=[copy])
        err = capsys.readouterr().err
        assert sha256(img) == before
    assert code == Exit.REFUSED
    assert "no disk layout was captured" in err


def test_aborts_unless_the_target_name_is_typed(bank, tmp_path, capsys, monkeypatch):
    import io

    img = tmp_path / "t.img"
    with loop_disk(img, GiB) as dev:
        blank_with_table(dev)
        before = sha256(img)
        monkeypatch.setattr("sys.stdin", io.StringIO("yes\n"))
        code = restore(bank, dev, tmp_path / "state")
        captured = capsys.readouterr()
        assert sha256(img) == before
    assert code == Exit.ABORTED
    assert "Type the target's device name" in captured.out
    assert "nothing was written" in captured.err


def test_dry_run_prints_plan_and_script_and_writes_nothing(bank, tmp_path, capsys):
    img = tmp_path / "t.img"
    with loop_disk(img, GiB) as dev:
        blank_with_table(dev)
        before = sha256(img)
        code = restore(bank, dev, tmp_path / "state", "--dry-run", "--yes")
        out = capsys.readouterr().out
        assert sha256(img) == before
    assert code == Exit.OK
    assert "Restore plan for" in out and "#!/bin/bash" in out and "mkfs.xfs -f -q -m uuid=" in out
    assert not (tmp_path / "state").exists()


def test_mount_between_plan_and_first_write_is_caught(bank, tmp_path):
    """The engine probes again right before its first write (rescue.safety.assert_still_safe)."""
    from rescue.engine import Executor
    from rescue.plan import build_plan
    from rescue.probe import probe_disk
    from rescue.safety import assert_still_safe

    images = choose_images(find_backups(banks=[bank.bank]).machine(bank.client))
    img = tmp_path / "t.img"
    with loop_disk(img, GiB) as dev:
        blank_with_table(dev)
        part = partition_path(dev, 1)
        run(["mkfs.ext4", "-q", "-F", *NO_LAZY, part])
        plan = build_plan(load_layout(images[0].path), images, probe_disk(dev, backup_sources=[bank.bank]))
        mnt = tmp_path / "m"
        mnt.mkdir()
        run(["mount", "-o", "ro,noload", part, str(mnt)])  # someone mounts it while the review is read
        try:
            before = sha256(img)
            ex = Executor(target=dev, state_dir=tmp_path / "state", mount_dir=tmp_path / "mnt",
                          recheck=lambda: assert_still_safe(dev, backup_sources=[bank.bank]) and None)
            with pytest.raises(UnsafeTarget):
                ex.run(plan)
            assert sha256(img) == before
        finally:
            run(["umount", str(mnt)])


def test_refuses_a_disk_another_restore_is_writing(bank, tmp_path, capsys):
    """The wizard on another console holds the disk: rescue restore says who, and writes nothing."""
    from rescue.engine.lock import DiskLock

    img = tmp_path / "t.img"
    with loop_disk(img, GiB) as dev:
        blank_with_table(dev)
        before = sha256(img)
        with DiskLock(dev, "rescue wizard"):
            code = restore(bank, dev, tmp_path / "state", "--yes")
            err = capsys.readouterr().err
            assert sha256(img) == before
        assert code == Exit.REFUSED
        assert f"another restore onto {dev} is under way: rescue wizard, pid {os.getpid()}" in err
        assert "what to do:" in err
        assert not list((tmp_path / "state").glob("*/*"))  # no journal, plan.json or log either
        # the holder gone, the same command goes on (a dry run here: the refusal was the point)
        assert restore(bank, dev, tmp_path / "state", "--dry-run") == Exit.OK
