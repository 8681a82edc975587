"""Verify accepts exactly what Fixups created, and nothing more (issue 14, point 3).

Real rsync on folders under tmp_path; the bind mount verify makes is replaced
by a symlink (no root in the unit tier), as in test_verify_unreadable.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from rescue import run as gateway
from rescue.steps.copy import CopyTree
from rescue.steps.verify import Verify, expected_differences

T = (1_000_000, 1_000_000)


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


def restored_pair(tmp_path: Path) -> tuple[Path, Path]:
    """An image tree without var/tmp, and its restore where Fixups made var/tmp and kept var/'s times."""
    src, dest = tmp_path / "src", tmp_path / "dest"
    for top in (src, dest):
        (top / "var" / "lib").mkdir(parents=True)
        (top / "etc").mkdir()
        (top / "etc" / "hostname").write_text("demo\n")
    os.mkdir(dest / "var" / "tmp", 0o1777)
    for top in (src, dest):
        for d in ("etc/hostname", "etc", "var/lib", "var", "."):
            os.utime(top / d, T)
    return src, dest


def differences(tmp_path: Path, src: Path, dest: Path, created: list[str]) -> list[str]:
    copy = CopyTree(vault="root", image="i", source=src, mountpoint="/", xattrs=False, acls=False)
    step = Verify(disk="/dev/null", copies=(copy,), filesystems=())
    diffs, missing = step._compare(Ctx(tmp_path, dest), copy, expected_differences("/", "ext4", [], created))
    assert missing == []
    return sorted(d[12:].rstrip("/") for d in diffs)


def test_a_folder_the_restore_created_is_accepted(tmp_path):
    src, dest = restored_pair(tmp_path)
    assert differences(tmp_path, src, dest, ["/var/tmp"]) == []


def test_the_same_folder_not_on_the_created_list_fails(tmp_path):
    src, dest = restored_pair(tmp_path)
    assert differences(tmp_path, src, dest, []) == ["var/tmp"]


def test_an_extra_file_elsewhere_still_fails(tmp_path):
    src, dest = restored_pair(tmp_path)
    (dest / "etc" / "extra").write_text("not in the backup\n")
    os.utime(dest / "etc", T)
    assert differences(tmp_path, src, dest, ["/var/tmp"]) == ["etc/extra"]


def test_a_file_inside_a_created_folder_still_fails(tmp_path):
    src, dest = restored_pair(tmp_path)
    (dest / "var" / "tmp" / "junk").write_text("not made by the restore\n")
    os.utime(dest / "var" / "tmp", T)
    assert differences(tmp_path, src, dest, ["/var/tmp"]) == ["var/tmp/junk"]


def test_a_parent_whose_time_changed_still_fails(tmp_path):
    src, dest = restored_pair(tmp_path)
    os.utime(dest / "var", (2_000_000, 2_000_000))
    assert differences(tmp_path, src, dest, ["/var/tmp"]) == ["var"]


def test_restore_sh_fixups_keep_the_times_of_the_folders_they_add_to(tmp_path):
    """The reviewable script does what the step does: /var/tmp made, var/ keeps its times."""
    from rescue.steps.fixups import Fixups

    root, work = tmp_path / "root", tmp_path / "work"
    (root / "var" / "cache" / "apt").mkdir(parents=True)
    work.mkdir()
    old = 1_500_000_000_123_456_789
    for d in ("var/cache/apt", "var/cache", "var", "."):
        os.utime(root / d, ns=(old, old))
    lines = [line for line in Fixups(roots=()).script() if not line.startswith("#")]
    subprocess.run(["bash", "-euc", "\n".join(lines)], check=True,
                   env=dict(os.environ, ROOT=str(root), WORK=str(work)))
    assert (root / "var" / "tmp").stat().st_mode & 0o7777 == 0o1777
    for d in ("var/cache/apt", "var", "."):
        assert os.stat(root / d).st_mtime_ns == old, d
    assert (root / "var" / "cache" / "apt" / "archives" / "partial").stat().st_mode & 0o7777 == 0o700
