"""The copy's write-behind: background writeback lowered for the copy, and put back.

The kernel's /proc/sys/vm is stood in for by a folder of the same two files (a
write to one zeroes the other, as in the kernel), so these cases (someone
changing the setting meanwhile, a killed copy) do not touch the machine's own
setting; the integration tests (copy, kill -9) check the real one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rescue.engine import copy
from rescue.engine.copy import put_back_writeback, write_behind

LIMIT = 64 << 20


def dead_pid() -> int:
    pid = 4_000_000
    while os.path.exists(f"/proc/{pid}"):
        pid += 1
    return pid


def kernel_like(vm: Path, name: str, value: int) -> None:
    other = "dirty_background_ratio" if name == "dirty_background_bytes" else "dirty_background_bytes"
    (vm / name).write_text(f"{value}\n")
    (vm / other).write_text("0\n")


@pytest.fixture
def vm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "vm"
    d.mkdir()
    (d / "dirty_background_bytes").write_text("0\n")
    (d / "dirty_background_ratio").write_text("10\n")
    monkeypatch.setattr(copy, "_set_sysctl", kernel_like)
    return d


def setting(vm: Path) -> tuple[int, int]:
    return copy.writeback_setting(vm)


def test_lowered_while_copying_then_the_ratio_comes_back(vm: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    with write_behind(LIMIT, vm, state):
        assert setting(vm)[0] == LIMIT
        assert state.read_text().split() == [str(os.getpid()), "0", "10", str(LIMIT)]
    assert setting(vm) == (0, 10) and not state.exists()


def test_a_byte_setting_comes_back_as_bytes(vm: Path, tmp_path: Path) -> None:
    (vm / "dirty_background_bytes").write_text(str(1 << 30))
    with write_behind(LIMIT, vm, tmp_path / "state"):
        assert setting(vm)[0] == LIMIT
    assert setting(vm) == (1 << 30, 0)


def test_a_setting_as_low_already_is_left_alone(vm: Path, tmp_path: Path) -> None:
    (vm / "dirty_background_bytes").write_text(str(16 << 20))  # another copy's, or the admin's
    with write_behind(LIMIT, vm, tmp_path / "state"):
        assert setting(vm)[0] == 16 << 20
    assert setting(vm)[0] == 16 << 20 and not (tmp_path / "state").exists()


def test_a_change_made_during_the_copy_is_kept(vm: Path, tmp_path: Path) -> None:
    with write_behind(LIMIT, vm, tmp_path / "state"):
        kernel_like(vm, "dirty_background_ratio", 5)  # the admin, meanwhile
    assert setting(vm) == (0, 5)


def test_a_killed_copys_setting_is_put_back_by_the_next_copy(vm: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    (vm / "dirty_background_bytes").write_text(str(LIMIT))
    (vm / "dirty_background_ratio").write_text("0")
    state.write_text(f"{dead_pid()} 0 10 {LIMIT}\n")  # what a copy killed with -9 leaves
    with write_behind(LIMIT, vm, state):
        assert setting(vm) == (LIMIT, 0)  # put back, then lowered again by this copy
        assert state.read_text().split() == [str(os.getpid()), "0", "10", str(LIMIT)]
    assert setting(vm) == (0, 10) and not state.exists()


def test_a_running_copys_note_is_not_taken(vm: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.write_text(f"{os.getppid()} 0 10 {LIMIT}\n")
    (vm / "dirty_background_bytes").write_text(str(LIMIT))
    assert put_back_writeback(vm, state) is False
    assert state.exists() and setting(vm)[0] == LIMIT


def test_without_the_right_to_change_it_the_copy_runs_anyway(tmp_path: Path) -> None:
    with write_behind(LIMIT, tmp_path / "no-such-vm", tmp_path / "state"):
        pass
    assert not (tmp_path / "state").exists()


def test_a_setting_that_cannot_be_written_leaves_no_note(vm: Path, tmp_path: Path, monkeypatch) -> None:
    def refused(vm: Path, name: str, value: int) -> None:
        raise PermissionError(1, "Operation not permitted")  # /proc/sys read-only, as in a container

    monkeypatch.setattr(copy, "_set_sysctl", refused)
    with write_behind(LIMIT, vm, tmp_path / "state"):
        assert setting(vm) == (0, 10)
    assert not (tmp_path / "state").exists()
