"""A killed copy's scratch folder in /tmp is removed by the next copy; a running one's is kept."""

from __future__ import annotations

import os
from pathlib import Path

from rescue.engine.copy import SCRATCH_PREFIX, clear_stale_scratch


def dead_pid() -> int:
    pid = 4_000_000
    while os.path.exists(f"/proc/{pid}"):
        pid += 1
    return pid


def test_only_the_scratch_of_processes_that_are_gone_is_removed(tmp_path: Path) -> None:
    dead = tmp_path / f"{SCRATCH_PREFIX}{dead_pid()}-abc"
    alive = tmp_path / f"{SCRATCH_PREFIX}{os.getpid()}-def"
    other = tmp_path / "rescue-copy-notapid-x"  # not ours by its name: never touched
    for d in (dead, alive, other):
        d.mkdir()
        (d / "links").write_text("x")
    assert clear_stale_scratch(tmp_path) == [dead]
    assert not dead.exists() and alive.exists() and other.exists()
