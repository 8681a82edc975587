"""A plain folder as a backup: one image of one vault (`--tree DIR`).

For a copy made by hand (cp -a, rsync, an unpacked tarball) of a whole
machine, or a dirvish image's tree/ given directly. A person named the
folder, so it counts as a good image. A layout is used when the folder's
parent has `rescue/layout.json` (a dirvish image's tree/ given directly) or
the folder itself has `.rescue/layout.json`, or (one host folder of an
rsnapshot snapshot given directly) the parent has `.rescue/NAME/layout.json`.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from rescue.backups.dirvish import LAYOUT_FILE, shown, within
from rescue.backups.model import Image, ImageStatus, SourceKind, Vault
from rescue.errors import BackupError


def plain_vault(tree: Path, client: str | None = None, source: str = "/") -> Vault:
    """The folder `tree` as a vault holding one image."""
    try:
        real = tree.resolve(strict=True)
    except (OSError, RuntimeError):
        raise BackupError(f"folder {shown(str(tree))} does not exist",
                          fix="give the folder holding the copied files with --tree DIR") from None
    if not real.is_dir():
        raise BackupError(f"{shown(str(tree))} is not a folder",
                          fix="give the folder holding the copied files with --tree DIR")
    layout_dir = None
    # a dirvish image's tree/, a copy kept as FOLDER/tree with FOLDER/rescue, a copy with its layout
    # inside, or one host folder of an rsnapshot snapshot (SNAPSHOT/.rescue/HOST)
    for candidate, root in ((real.parent / "rescue", real.parent), (real / ".rescue", real),
                            (real.parent / ".rescue" / real.name, real.parent)):
        if within(root, candidate / LAYOUT_FILE) is not None:
            layout_dir = candidate
            break
    name = (real.parent.name if real.name == "tree" else real.name) or "/"
    who = client or name
    created = datetime.fromtimestamp(real.stat().st_mtime).isoformat(timespec="seconds")
    image = Image(
        kind=SourceKind.PLAIN,
        bank=real.parent,
        vault=name,
        name=name,
        path=real,
        tree=real,
        client=who,
        source=source,
        status=ImageStatus.SUCCESS,
        status_text="a folder given by hand",
        created=created,
        layout_dir=layout_dir,
    )
    return Vault(bank=real.parent, name=name, images=(image,), kind=SourceKind.PLAIN,
                 configured_client=who, configured_source=source)
