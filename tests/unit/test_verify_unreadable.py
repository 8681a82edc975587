"""Verify excuses only what the backup cannot give back; every other difference still fails.

Real rsync on folders under tmp_path. The bind mount verify makes is replaced
by a symlink (no root here); the unreadable file is simulated by a source
whose open() fails with EIO (monkeypatched), the only thing not real.
"""

from __future__ import annotations

import builtins
import errno
import os
from pathlib import Path

from rescue import run as gateway
from rescue.steps import verify as verify_mod
from rescue.steps.copy import CopyTree
from rescue.steps.verify import Verify


class Ctx:
    def __init__(self, tmp: Path, dest: Path) -> None:
        self.work = tmp / "work"
        self.work.mkdir()
        self.dest = dest
        self.verify_checksum = False

    def path(self, mountpoint: str) -> Path:
        return self.dest

    def run(self, argv, **kw):
        argv = [str(a) for a in argv]
        if argv[0] == "mount":
            os.rmdir(argv[-1])
            os.symlink(argv[-2], argv[-1])
            return None
        if argv[0] == "umount":
            os.unlink(argv[-1])
            os.mkdir(argv[-1])
            return None
        return gateway.run(argv, **kw)


def test_only_unreadable_files_are_excused(tmp_path, monkeypatch):
    src, dest = tmp_path / "src", tmp_path / "dest"
    for top in (src, dest):
        top.mkdir()
        (top / "same").write_text("x")
        os.utime(top / "same", (1_000_000, 1_000_000))
    (src / "listed-by-copy").write_text("a")
    (src / "fails-to-read").write_text("b")
    (src / "readable-but-missing").write_text("c")
    (src / "changed").write_text("new")
    (dest / "changed").write_text("old!")
    for top in (src, dest):
        os.utime(top, (1_000_000, 1_000_000))

    real_open = builtins.open

    def bad_open(path, *a, **kw):
        if str(path).endswith("fails-to-read"):
            raise OSError(errno.EIO, "Input/output error", str(path))
        return real_open(path, *a, **kw)

    monkeypatch.setattr(verify_mod, "open", bad_open, raising=False)
    copy = CopyTree(vault="home", image="i", source=src, mountpoint="/home", xattrs=False, acls=False)
    step = Verify(disk="/dev/null", copies=(copy,), filesystems=())
    diffs, missing = step._compare(Ctx(tmp_path, dest), copy, {"", "."}, (), {"listed-by-copy"})
    assert missing == ["fails-to-read", "listed-by-copy"]
    assert sorted(d[12:] for d in diffs) == ["changed", "readable-but-missing"]
