"""clear_redone_files removes only the target's own copies of files rsync will write again.

The rsync dry run is replaced by a printf of its output here (a stand-in
runner): the cases are about which listed names are removed, not about rsync.
The listing is read as it streams, as from the real dry run.
"""

from __future__ import annotations

import os
from pathlib import Path

from rescue.engine.copy import clear_redone_files
from rescue.run import spawn


class Listing:
    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        self.done = False

    def spawn(self, argv, **kw):
        assert "--dry-run" in argv
        return spawn(["printf", "%s\\n", *self.lines], **kw)

    def child_done(self, proc) -> None:
        assert proc.returncode == 0
        self.done = True


def test_existing_files_to_redo_go_new_and_unlisted_ones_stay(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    (dest / "d").mkdir(parents=True)
    for name in ("half", "link", "kept", "odd name\n"):
        (dest / "d" / name).write_text("x")
    listing = Listing([">f.st...... d/half", "hf.st...... d/link", ">f+++++++++ d/new",
                       ".d..t...... d/", ">f.st...... d/odd name\\#012"])
    gone = clear_redone_files(listing, Path("/nonexistent"), dest, xattrs=True, acls=True)
    assert gone == 3 and listing.done
    assert sorted(os.listdir(dest / "d")) == ["kept"]


def test_a_link_leading_out_of_the_target_is_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("keep me")
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "d").symlink_to(outside)
    gone = clear_redone_files(Listing([">f.st...... d/precious"]), Path("/nonexistent"), dest,
                              xattrs=True, acls=True)
    assert gone == 0
    assert (outside / "precious").read_text() == "keep me"
