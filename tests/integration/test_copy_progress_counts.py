"""The copy's progress shows only counts that are true, on every target filesystem.

Files copied are counted by the target's inode use (statvfs). btrfs reports
no inode figures at all, and a copy onto it showed "0 of 303 files" from
start to end: there the progress carries no file count, only bytes. On ext4
and xfs the count ends equal to the total.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rescue.engine.copy import Unjournalled, copy_tree
from rescue.devices import loop_disk
from rescue.run import run

MiB = 1 << 20
FILES = 303


@pytest.mark.parametrize("fstype", ["btrfs", "ext4", "xfs"])
def test_progress_counts_files_only_where_the_target_counts_them(tmp_path: Path, fstype: str) -> None:
    source = tmp_path / "source"
    source.mkdir()
    for i in range(FILES):
        (source / f"f{i:03}").write_bytes(b"x" * (i % 7 + 1))
    target = tmp_path / "target"
    target.mkdir()
    calls: list[tuple[int, int, int, int]] = []
    with loop_disk(tmp_path / "target.img", 320 * MiB) as dev:
        run([f"mkfs.{fstype}", "-f" if fstype != "ext4" else "-F", "-q", dev])
        run(["mount", dev, str(target)])
        try:
            copy_tree(Unjournalled(), source, target, resume=False, total_bytes=FILES * 4, total_files=FILES,
                      progress=lambda bd, bt, fd, ft, eta: calls.append((bd, bt, fd, ft)))
            assert len([p for p in target.iterdir() if p.name != "lost+found"]) == FILES
        finally:
            run(["umount", str(target)])
    assert calls, "the copy reported no progress at all"
    final = calls[-1]
    if fstype == "btrfs":
        assert all(fd == 0 and ft == 0 for _, _, fd, ft in calls), f"a file count on btrfs: {calls}"
    else:
        assert final[3] >= FILES and final[2] == final[3], f"final count not complete: {final}"
