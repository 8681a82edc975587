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
    def __init__(self, lines: list[str], linger: float = 0.0) -> None:
        self.lines = lines
        self.linger = linger
        self.done = False

    def spawn(self, argv, **kw):
        assert "--dry-run" in argv
        if self.linger:  # output closed, the process still exiting (as a loaded machine shows it)
            script = f'printf "%s\\n" "$@"; exec >&-; sleep {self.linger}'
            return spawn(["sh", "-c", script, "sh", *self.lines], **kw)
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


def test_a_dry_run_still_exiting_after_its_listing_is_waited_for_not_stopped(tmp_path: Path) -> None:
    """Under load the dry run can close its output a moment before it exits.

    The copy used to stop it then (SIGTERM), and its exit status became -15.
    """
    dest = tmp_path / "dest"
    (dest / "d").mkdir(parents=True)
    (dest / "d" / "half").write_text("x")
    listing = Listing([">f.st...... d/half"], linger=0.5)
    gone = clear_redone_files(listing, Path("/nonexistent"), dest, xattrs=True, acls=True)
    assert gone == 1 and listing.done
