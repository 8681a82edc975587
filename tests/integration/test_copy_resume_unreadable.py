"""A resumed copy meets an unreadable hard-linked file that a killed run half-copied.

A power cut or kill -9 during the copy leaves half-written files at the
target. When one of them is a hard-linked file the backup can no longer read
(a bad sector), `rsync -aH` (the resume) waited forever: its redo of the file
never ends (seen with the rsync here; --timeout does not fire, the two halves
keep talking). The copy engine now removes the target's copies of the files
rsync will write again before it starts, so the resume ends: the file is
listed as unreadable and everything else is copied.

Bad sectors are made as in test_read_errors.py (this host has no
device-mapper): the source is a btrfs on a loop device with one data block
of the file overwritten, so reading it fails with EIO as a bad sector does.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from rescue.devices import loop_disk
from rescue.run import run

MiB = 1 << 20
BLOCK = 4096
MARK = b"RESCUE-RESUME-BAD-BLOCK-0123456789abcdef"


def test_a_resume_over_a_half_copied_unreadable_hard_link_ends(tmp_path: Path) -> None:
    src_img, src = tmp_path / "src.img", tmp_path / "src"
    dest = tmp_path / "dest"
    src.mkdir()
    with loop_disk(src_img, 256 * MiB) as dev:
        run(["mkfs.btrfs", "-q", "-f", dev])
        run(["mount", dev, str(src)])
        try:
            (src / "d").mkdir()
            (src / "d" / "photo.jpg").write_bytes(MARK + os.urandom(64 * 1024))
            os.link(src / "d" / "photo.jpg", src / "d" / "photo (copy).jpg")
            (src / "d" / "ok.txt").write_text("readable\n")
            (src / "e").mkdir()
            (src / "e" / "also-ok.bin").write_bytes(os.urandom(100_000))
        finally:
            run(["umount", str(src)])
        # One bad block in the hard-linked file (its first block holds the mark).
        with open(src_img, "r+b") as f:
            data = f.read()
            at = data.find(MARK)
            assert at >= 0 and at % BLOCK == 0 and data.find(MARK, at + 1) < 0
            f.seek(at)
            f.write(b"\xde\xad" * (BLOCK // 2))
        run(["mount", "-o", "ro", dev, str(src)])
        try:
            with open(src / "d" / "ok.txt") as f:
                assert f.read() == "readable\n"
            try:
                (src / "d" / "photo.jpg").read_bytes()
                raise AssertionError("the damaged file is still readable")
            except OSError:
                pass
            # What a killed run left: both names of the file, half written, one inode.
            (dest / "d").mkdir(parents=True)
            (dest / "d" / "photo.jpg").write_bytes(b"\0" * 100)
            os.link(dest / "d" / "photo.jpg", dest / "d" / "photo (copy).jpg")
            os.utime(dest / "d" / "photo.jpg", (946_684_800, 946_684_800))
            probe = textwrap.dedent(f"""
                from pathlib import Path
                from rescue.engine.copy import Unjournalled, copy_tree
                r = copy_tree(Unjournalled(), Path({str(src)!r}), Path({str(dest)!r}), resume=True)
                print("METHOD", r.method)
                for line in r.unreadable:
                    print("UNREADABLE", line)
            """)
            proc = subprocess.Popen([sys.executable, "-c", probe], stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True, start_new_session=True)
            try:
                out, _ = proc.communicate(timeout=180)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                out, _ = proc.communicate()
                # The engine starts rsync in a process group of its own: end it by its paths.
                run(["pkill", "-9", "-f", f"rsync .* -- {src}/ {dest}/"], check=False)
                raise AssertionError("the resumed copy hung on the half-copied unreadable hard link:\n" + out)
        finally:
            # A hung copy's killed children may hold the mount a moment longer.
            if run(["umount", str(src)], check=False).returncode != 0:
                run(["umount", "-l", str(src)], check=False)
    assert proc.returncode == 0, out
    assert "METHOD rsync" in out, out
    assert "photo.jpg" in out and "UNREADABLE" in out, out
    assert (dest / "d" / "ok.txt").read_text() == "readable\n"
    assert (dest / "e" / "also-ok.bin").stat().st_size == 100_000
    # No half-written copy passes for the real file.
    assert not (dest / "d" / "photo.jpg").exists() or (dest / "d" / "photo.jpg").stat().st_size != 100
