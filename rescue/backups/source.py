"""Where a restore's images come from: dirvish banks, rsnapshot roots, plain folders.

Every face (rescue list, plan, restore, the wizard, the unattended config, the
bank drill) turns its options into one `ImageSource` and asks it for the
images of a machine; none of them knows which backup tool made them.

A plain folder (`--tree DIR`) holds one whole machine as one tree: / at its
top, /home's files in home/, ... (a `cp -a` or `rsync -ax` of each filesystem
into one folder). Its layout is `rescue capture --out DIR/.rescue` (or the
parent's rescue/ when DIR is a dirvish image's tree/).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rescue.backups.discover import Backups, choose_images, find_backups
from rescue.backups.model import Image
from rescue.errors import BackupError, RescueError

if TYPE_CHECKING:
    from rescue.layout.model import Layout


@dataclass(frozen=True)
class Selection:
    """The images chosen for a restore and the layout captured with them."""

    images: tuple[Image, ...]
    layout: Layout | None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ImageSource:
    """The backups one restore reads: what --bank, --rsnapshot and --tree named."""

    banks: tuple[Path, ...] = ()
    rsnapshot_roots: tuple[Path, ...] = ()
    trees: tuple[Path, ...] = ()
    config: Path | None = None  # a dirvish master.conf whose banks to read
    tree_client: str | None = None  # the machine a plain --tree is (default: the folder's name)

    @property
    def folders(self) -> tuple[Path, ...]:
        """Every folder named: the disks holding them are never a restore's target."""
        return (*self.banks, *self.rsnapshot_roots, *self.trees)

    @property
    def empty(self) -> bool:
        return not (self.folders or self.config)

    def check(self) -> None:
        """Each folder named exists, before anything else is read or probed."""
        for option, noun, paths in (("--bank", "bank", self.banks),
                                    ("--rsnapshot", "rsnapshot root", self.rsnapshot_roots),
                                    ("--tree", "tree", self.trees)):
            for path in paths:
                if not path.is_dir():
                    raise RescueError(
                        f"{noun} {path} is not a folder",
                        why=("it does not exist" if not path.exists() else "it is a file")
                        + "; it should name where the backups are: " + _WHAT[option],
                        fix=f"check the path (is the backup disk mounted?) and give it with {option} DIR",
                    )

    def find(self) -> Backups:
        return find_backups(self.banks, self.config, self.rsnapshot_roots, self.trees, client=self.tree_client)

    def select(self, client: str, at: str | None = None) -> Selection:
        """Per vault of `client` the newest good image (at or before `at`), and their layout."""
        from rescue.layout.legacy import newest_layout

        self.check()
        backups = self.find()
        images = choose_images(backups.machine(client), at)
        notes = backups.notes + tuple(n for i in images if (n := partial_machine(i)))
        return Selection(images, newest_layout(images), notes)


# what every Debian-like root holds; a whole-machine image without them backed up only part of it
ROOT_FOLDERS = ("etc", "usr")


def partial_machine(image: Image) -> str | None:
    """A note when a whole-machine image lacks the root's own folders (an rsnapshot.conf that backs
    up only /home and /etc): the restore would make a disk that cannot boot."""
    if not image.whole_machine or image.source != "/":
        return None
    missing = [name for name in ROOT_FOLDERS if not (image.tree / name).is_dir()]
    if not missing:
        return None
    return (f"{image.vault} {image.name} has no {', '.join(missing)} folder: it holds only part of the machine "
            "(back up / with one_fs 0); the restored disk will hold only what it has and may not boot")


_WHAT = {
    "--bank": "a dirvish bank, the folder holding the vaults",
    "--rsnapshot": "an rsnapshot snapshot_root, the folder holding daily.0, hourly.0, ...",
    "--tree": "a folder holding a copy of a whole machine",
}


def add_source_arguments(p: argparse.ArgumentParser) -> None:
    """--bank, --rsnapshot and --tree: the same options for every command that reads backups."""
    p.add_argument("--bank", action="append", type=Path, default=[], metavar="DIR",
                   help="a dirvish bank (the folder holding the vaults); may be repeated")
    p.add_argument("--rsnapshot", action="append", type=Path, default=[], metavar="ROOT",
                   help="an rsnapshot snapshot_root (holding daily.0, ...); may be repeated")
    p.add_argument("--tree", action="append", type=Path, default=[], metavar="DIR",
                   help="a plain folder holding a copy of a whole machine (its layout in DIR/.rescue/); "
                        "its machine is named by --client")


def source_from_args(args: argparse.Namespace, required: bool = True) -> ImageSource:
    """The ImageSource the options name; with `required`, at least one must be given."""
    client = getattr(args, "client", None)
    source = ImageSource(
        banks=tuple(args.bank), rsnapshot_roots=tuple(getattr(args, "rsnapshot", ()) or ()),
        trees=tuple(getattr(args, "tree", ()) or ()), config=getattr(args, "config", None),
        tree_client=client,
    )
    if required and source.empty:
        raise BackupError(
            "no backups given",
            why="a restore needs to know where the machine's images are",
            fix="give a dirvish bank with --bank DIR, an rsnapshot root with --rsnapshot ROOT, "
                "or a folder holding a copy of the machine with --tree DIR",
        )
    return source

