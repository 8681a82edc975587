"""A journal that names a folder rescue did not make: a rerun never unmounts it.

A killed restore leaves its private mounts under mount_dir/target-XXXX, and
the rerun releases them. A damaged journal could name any folder; unmounting
"/" or /backup in the rescue system would take the backup or the system away.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import rescue.engine.executor as executor
from rescue.engine.executor import Executor
from rescue.engine.journal import Journal


@pytest.mark.parametrize("named", ["/", "/backup", "{mnt}/../elsewhere", "{tmp}/not-ours", "{mnt}/other-x"])
def test_rerun_leaves_folders_it_did_not_make_alone(tmp_path, monkeypatch, named):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    (tmp_path / "not-ours").mkdir()
    (mnt / "other-x").mkdir()
    calls = []
    monkeypatch.setattr(executor, "unmount_all", lambda run, base, *a, **kw: calls.append(base) or [])
    ex = Executor(target="/dev/fake0", state_dir=tmp_path / "state", mount_dir=mnt)
    j = ex.journal()
    j.mount_base = named.format(mnt=mnt, tmp=tmp_path)
    j.save()
    loaded = Journal.load(j.path)
    done = ex.release_leftovers(loaded)
    assert calls == []
    if loaded.mount_base is not None:  # a path with .. is no journal at all (test_fuzz_parsers)
        assert any("left" in line and "alone" in line for line in done), done


def test_rerun_releases_its_own_folder(tmp_path, monkeypatch):
    mnt = tmp_path / "mnt"
    (mnt / "target-abc123").mkdir(parents=True)
    calls = []
    monkeypatch.setattr(executor, "unmount_all", lambda run, base, *a, **kw: calls.append(Path(base)) or [])
    ex = Executor(target="/dev/fake0", state_dir=tmp_path / "state", mount_dir=mnt)
    j = ex.journal()
    j.mount_base = str(mnt / "target-abc123")
    j.save()
    done = ex.release_leftovers(Journal.load(j.path))
    assert calls == [mnt / "target-abc123"]
    assert any("released the mounts" in line for line in done)
