"""sysfs entries that vanish between listing and reading (a partition table re-read).

A fake /sys/class/block tree in tmp_path stands in for sysfs: the race needs
an entry removed at one exact moment, which a real kernel does only by chance
(tests/integration/test_partition_table_settle.py provokes it for real).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from pathlib import Path

import pytest

from rescue import devices
from rescue.devices import KernelPartition, kernel_partitions, sys_list, sys_read


def fake_disk(root: Path, name: str, parts: list[tuple[int, int, int]]) -> Path:
    disk = root / name
    (disk / "holders").mkdir(parents=True)
    (disk / "size").write_text("131072\n")
    (disk / "dev").write_text("7:0\n")
    for n, start, size in parts:
        p = disk / f"{name}p{n}"
        p.mkdir()
        for f, v in (("partition", n), ("start", start), ("size", size), ("dev", f"259:{n}")):
            (p / f).write_text(f"{v}\n")
    return disk


def remove_when_read(monkeypatch: pytest.MonkeyPatch, victim: Path, trigger: str) -> None:
    """Delete `victim` (a partition folder) the first time a file named `trigger` under it is opened."""
    real = Path.read_text
    done = []

    def read_text(self: Path, *a: object, **kw: object) -> str:
        if not done and self.parent == victim and self.name == trigger:
            done.append(1)
            for f in victim.iterdir():
                f.unlink()
            victim.rmdir()
        return real(self, *a, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "read_text", read_text)


def test_sys_read_says_gone_for_a_missing_entry(tmp_path: Path) -> None:
    (tmp_path / "size").write_text("42\n")
    assert sys_read(tmp_path / "size") == "42"
    assert sys_read(tmp_path / "gone" / "size") is None
    assert sys_read(tmp_path / "size" / "below-a-file") is None  # ENOTDIR: the folder became something else


def test_sys_read_still_raises_what_is_not_a_vanished_entry(tmp_path: Path) -> None:
    with pytest.raises(IsADirectoryError):
        sys_read(tmp_path)


def test_sys_list_of_a_vanished_folder_is_empty(tmp_path: Path) -> None:
    assert sys_list(tmp_path / "loop9") == []
    fake_disk(tmp_path, "loop9", [(1, 2048, 100)])
    assert [p.name for p in sys_list(tmp_path / "loop9")] == ["dev", "holders", "loop9p1", "size"]


def test_kernel_partitions_reads_number_start_size_devnum(tmp_path: Path) -> None:
    fake_disk(tmp_path, "loop9", [(2, 4096, 200), (1, 2048, 100), (10, 9000, 5)])
    assert kernel_partitions("loop9", tmp_path) == (
        KernelPartition("loop9p1", 1, 2048, 100, (259, 1)),
        KernelPartition("loop9p2", 2, 4096, 200, (259, 2)),
        KernelPartition("loop9p10", 10, 9000, 5, (259, 10)),
    )


@pytest.mark.parametrize("trigger", ["partition", "start", "size", "dev"])
def test_kernel_partitions_leaves_out_a_partition_that_vanishes_while_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trigger: str) -> None:
    disk = fake_disk(tmp_path, "vdb", [(1, 2048, 100), (2, 4096, 200)])
    remove_when_read(monkeypatch, disk / "vdbp1", trigger)
    parts = kernel_partitions("vdb", tmp_path)
    assert [p.name for p in parts] == ["vdbp2"]
    assert not (disk / "vdbp1").exists()  # the removal really happened in the middle of the read


def _old_make_missing_nodes(sys_dir: Path, dev_dir: Path) -> None:
    """rescue/devices.py _make_missing_nodes before the fix (sysfs and /dev as parameters)."""
    name = sys_dir.name
    for child in sorted(sys_dir.iterdir()):
        dev_file = child / "dev"
        if not child.name.startswith(name) or not dev_file.is_file():
            continue
        node = dev_dir / child.name
        if not node.exists():
            major, minor = (int(x) for x in dev_file.read_text().split(":"))
            node.write_text(f"{major}:{minor}")  # stands in for mknod


def test_the_old_node_maker_crashed_on_the_race_of_issue_14(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """is_file() said yes, then the kernel re-read the table: the FileNotFoundError of the UEFI drill."""
    disk = fake_disk(tmp_path / "sys", "vdb", [(1, 2048, 100), (2, 4096, 200)])
    (tmp_path / "dev").mkdir()
    remove_when_read(monkeypatch, disk / "vdbp1", "dev")
    with pytest.raises(FileNotFoundError, match="vdbp1/dev"):
        _old_make_missing_nodes(disk, tmp_path / "dev")


def test_the_node_maker_tolerates_the_same_race(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    disk = fake_disk(tmp_path / "sys", "vdb", [(1, 2048, 100), (2, 4096, 200)])
    made: list[tuple[str, tuple[int, int]]] = []
    monkeypatch.setattr(devices, "SYS_BLOCK", tmp_path / "sys")
    monkeypatch.setattr(os, "stat", _no_node)
    monkeypatch.setattr(os, "mknod", lambda path, mode, dev: made.append((str(path), (os.major(dev), os.minor(dev)))))
    remove_when_read(monkeypatch, disk / "vdbp1", "dev")
    devices._make_missing_nodes("/dev/vdb")
    assert made == [("/dev/vdbp2", (259, 2))]  # the vanished vdbp1 is skipped, not a crash


def _no_node(path: object, *a: object, **kw: object) -> os.stat_result:
    if str(path).startswith("/dev/vdb"):
        raise FileNotFoundError(2, "No such file or directory", str(path))
    return os.lstat(path)  # type: ignore[arg-type]


def test_table_differences_name_what_never_appeared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_disk(tmp_path, "vdb", [(1, 2048, 100), (3, 9000, 50)])
    monkeypatch.setattr(devices, "SYS_BLOCK", tmp_path)
    monkeypatch.setattr(devices, "_node_matches", lambda p: True)
    diffs = devices.table_settle_differences("/dev/vdb", [(1, 2048, 100), (2, 4096, 200), (3, 9000, 60)])
    assert diffs == ["partition 2 never appeared",
                     "partition 3 (vdbp3) shows start 9000 size 50 instead of start 9000 size 60"]


def test_wait_table_settled_gives_up_with_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_disk(tmp_path, "vdb", [(1, 2048, 100)])
    monkeypatch.setattr(devices, "SYS_BLOCK", tmp_path)
    monkeypatch.setattr(devices, "_node_matches", lambda p: True)
    monkeypatch.setattr(devices, "_make_missing_nodes", lambda disk: None)
    asked = []
    monkeypatch.setattr(devices, "run", lambda argv, **kw: asked.append(argv))  # partprobe of a fake disk
    with pytest.raises(devices.RescueError) as e:
        devices.wait_table_settled("/dev/vdb", [(1, 2048, 100), (2, 4096, 200)], timeout=0.3)
    assert "does not show the partition table just written to /dev/vdb" in str(e.value)
    assert e.value.why == "partition 2 never appeared"
    assert e.value.fix and "partprobe /dev/vdb" in e.value.fix
    assert asked and all(a == ["partprobe", "/dev/vdb"] for a in asked)  # the re-read was asked for again


def test_wait_table_settled_returns_once_the_view_equals(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    disk = fake_disk(tmp_path, "vdb", [(1, 2048, 100)])
    monkeypatch.setattr(devices, "SYS_BLOCK", tmp_path)
    monkeypatch.setattr(devices, "_node_matches", lambda p: True)
    monkeypatch.setattr(devices, "_make_missing_nodes", lambda disk: None)

    def partprobe(argv: list[str], **kw: object) -> None:  # the kernel shows partition 2 at the second re-read
        with contextlib.suppress(FileExistsError):
            if len(calls) == 1:
                fake_disk(tmp_path / "x", "vdb", [(2, 4096, 200)])
                (tmp_path / "x" / "vdb" / "vdbp2").rename(disk / "vdbp2")
        calls.append(argv)

    calls: list[list[str]] = []
    monkeypatch.setattr(devices, "run", partprobe)
    devices.wait_table_settled("/dev/vdb", [(1, 2048, 100), (2, 4096, 200)], timeout=5)
    assert len(calls) == 2


def test_a_dos_extended_partition_is_compared_by_its_start_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel shows an extended partition 1 KiB long (size 1 or 2), not its extent."""
    from rescue.layout.model import Partition, PartitionTable
    from rescue.steps import partition

    fake_disk(tmp_path, "vdb", [(1, 2048, 8192), (2, 10240, 2), (5, 12288, 16384)])
    monkeypatch.setattr(devices, "SYS_BLOCK", tmp_path)
    monkeypatch.setattr(devices, "_node_matches", lambda p: True)
    monkeypatch.setattr(devices, "_make_missing_nodes", lambda disk: None)
    table = PartitionTable(label="dos", device="/dev/vdb", partitions=(
        Partition(node="/dev/vdb1", start=2048, size=8192, type="83"),
        Partition(node="/dev/vdb2", start=10240, size=61440, type="5"),
        Partition(node="/dev/vdb5", start=12288, size=16384, type="83")))
    partition.settle("/dev/vdb", table)  # returns: the view equals the table
    moved = dataclasses.replace(table, partitions=(*table.partitions[:1],
                                                   dataclasses.replace(table.partitions[1], start=10241),
                                                   table.partitions[2]))
    monkeypatch.setattr(devices, "SETTLE_TIMEOUT", 0.2)
    monkeypatch.setattr(devices, "run", lambda argv, **kw: None)
    with pytest.raises(partition.StepFailed, match="the kernel does not show"):
        partition.settle("/dev/vdb", moved)
