"""The read-ahead of the backup's files beside the copy (rescue.engine.readahead).

posix_fadvise is real here; a spy beside it notes which file each call was for, since
what the kernel then holds in memory is not something a test can read reliably."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from rescue.engine import readahead
from rescue.engine.readahead import ReadAhead, read_ahead


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """(path, length) of every read-ahead request, in order."""
    calls: list[tuple[str, int]] = []
    real = os.posix_fadvise

    def spy(fd: int, offset: int, length: int, advice: int) -> None:
        calls.append((os.readlink(f"/proc/self/fd/{fd}"), length))
        real(fd, offset, length, advice)

    monkeypatch.setattr(readahead.os, "posix_fadvise", spy)
    return calls


def _tree(top: Path) -> None:
    (top / "etc" / "ssh").mkdir(parents=True)
    (top / "home" / "ann").mkdir(parents=True)
    for i, rel in enumerate(["etc/hostname", "etc/ssh/sshd_config", "home/ann/notes", "home/ann/big.iso", "vmlinuz"]):
        (top / rel).write_bytes(b"x" * (100 * (i + 1)))
    (top / "home" / "ann" / "big.iso").write_bytes(b"y" * (readahead.SMALL + 4096))
    (top / "etc" / "empty").write_bytes(b"")
    os.symlink("hostname", top / "etc" / "link")
    os.mkfifo(top / "etc" / "initctl")  # opened, it would wait for a writer forever


def _run(ra: ReadAhead) -> None:
    ra.start()
    ra._thread.join(timeout=30)
    assert not ra._thread.is_alive()


def test_every_file_with_data_is_asked_for_once_and_nothing_else_is_opened(tmp_path: Path,
                                                                           asked: list[tuple[str, int]]) -> None:
    _tree(tmp_path)
    ra = ReadAhead(tmp_path, [b""], landed=lambda: 0, window=1 << 30)
    _run(ra)
    paths = sorted(p for p, _ in asked)
    assert paths == sorted(str(tmp_path / r) for r in
                           ["etc/hostname", "etc/ssh/sshd_config", "home/ann/notes", "home/ann/big.iso", "vmlinuz"])
    assert ra.files == 6  # the empty file is opened but has nothing to ask for
    assert dict(asked)[str(tmp_path / "home/ann/big.iso")] == readahead.SMALL  # the kernel reads on from there
    assert dict(asked)[str(tmp_path / "vmlinuz")] == 500


def test_the_walk_follows_the_units_in_order_and_each_folder_in_inode_order(tmp_path: Path,
                                                                             asked: list[tuple[str, int]]) -> None:
    _tree(tmp_path)
    units = [b"home/ann", b"vmlinuz", b"etc", b"gone"]  # as a split hands them to cp; a name that vanished
    _run(ReadAhead(tmp_path, units, landed=lambda: 0, window=1 << 30))
    order = [os.path.relpath(p, tmp_path) for p, _ in asked]
    assert order[:2] == sorted(["home/ann/notes", "home/ann/big.iso"], key=lambda r: os.lstat(tmp_path / r).st_ino)
    assert order[2] == "vmlinuz"
    etc = order[3:]
    assert sorted(etc) == ["etc/hostname", "etc/ssh/sshd_config"]
    # depth first as cp -a: etc's own entries by inode, the folder ssh walked where it comes
    by_inode = sorted(["hostname", "ssh"], key=lambda n: os.lstat(tmp_path / "etc" / n).st_ino)
    assert etc == [f"etc/{'ssh/sshd_config' if n == 'ssh' else n}" for n in by_inode]


def test_it_waits_while_it_is_a_window_ahead_of_the_target_and_goes_on_as_the_copy_lands(
        tmp_path: Path, asked: list[tuple[str, int]]) -> None:
    for i in range(40):
        (tmp_path / f"f{i:02}").write_bytes(os.urandom(8192))
    block = os.lstat(tmp_path / "f00").st_blocks * 512
    landed = {"bytes": 0}
    ra = ReadAhead(tmp_path, [b""], landed=lambda: landed["bytes"], window=5 * block)
    ra.start()
    deadline = time.monotonic() + 10
    while len(asked) < 6 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)
    assert len(asked) == 6  # the sixth file took it past the window: it waits
    landed["bytes"] = 20 * block
    while len(asked) < 26 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)
    assert len(asked) == 26
    ra.stop()
    assert not ra._thread.is_alive()  # stopped while waiting, at once
    assert len(asked) == 26


def test_stop_ends_the_walk_of_a_big_tree_promptly(tmp_path: Path) -> None:
    for d in range(30):
        (tmp_path / f"d{d}").mkdir()
        for f in range(100):
            (tmp_path / f"d{d}" / f"f{f}").write_bytes(b"z")
    ra = ReadAhead(tmp_path, [b""], landed=lambda: 0, window=1 << 40)
    ra.start()
    t0 = time.monotonic()
    ra.stop()
    assert time.monotonic() - t0 < 5
    assert not ra._thread.is_alive()


def test_a_landed_count_that_fails_ends_the_read_ahead_quietly(tmp_path: Path) -> None:
    for i in range(5):
        (tmp_path / f"f{i}").write_bytes(b"data" * 1024)

    def gone() -> int:
        raise OSError("the target was unmounted")

    ra = ReadAhead(tmp_path, [b""], landed=gone, window=1)
    _run(ra)  # no exception escapes the thread, and it ends
    assert ra.files == 1


def test_no_window_no_thread(tmp_path: Path) -> None:
    before = threading.active_count()
    with read_ahead(tmp_path, [b""], lambda: 0, 0) as ra:
        assert ra is None
        assert threading.active_count() == before
    with read_ahead(tmp_path, [b""], lambda: 0, 1 << 20) as ra:
        assert isinstance(ra, ReadAhead)
    assert not ra._thread.is_alive()
