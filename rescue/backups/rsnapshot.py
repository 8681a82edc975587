"""rsnapshot roots as vaults and images: <root>/<interval>.N/<host>/<path>.

rsnapshot keeps each source's full path under the host folder, so one host
folder holds the whole machine (/, /home, ... merged). It is presented as one
vault per host whose source is "/", and each `<interval>.N` folder is one
image of it. rsnapshot writes no summary: an interval folder that exists
counts as a finished run; `.sync` (sync_first) and `_delete.*` folders are
runs in progress and listed as incomplete.

A captured layout is looked for in `<interval>.N/.rescue/<host>/layout.json`
(a `backup_script` line with destination `.rescue/<host>/` puts it there, out
of the host's tree, and it rotates with the interval).
"""

from __future__ import annotations

import os
import re
from datetime import datetime
from pathlib import Path

from rescue.backups.dirvish import LAYOUT_FILE, Notes, shown, within
from rescue.backups.model import Image, ImageStatus, SourceKind, Vault
from rescue.errors import BackupError

_INTERVAL = re.compile(r"([A-Za-z][\w-]*)\.(\d+)")
# rsnapshot's documented interval names, most frequent (newest) first; the
# order of a root's `retain` lines is not on the backup disk, these names are.
_KNOWN = ("hourly", "daily", "weekly", "monthly", "yearly", "alpha", "beta", "gamma", "delta")


def _age_order(images: list[Image]):
    """A sort key that puts one host's snapshots oldest first, as rsnapshot rotates them.

    Within an interval a lower index is newer (daily.0 is the last run); across
    intervals every snapshot of a more frequent one is newer (rsnapshot makes
    daily.0 by moving the oldest hourly). Folder times do not decide: two runs in
    the same second leave equal times. Unknown interval names rank by their newest
    snapshot's time; a run in progress (.sync) is the newest of all.
    """
    newest: dict[str, str] = {}
    for i in images:
        m = _INTERVAL.fullmatch(i.name)
        if m:
            newest[m.group(1)] = max(newest.get(m.group(1), ""), i.created or "")
    unknown = sorted((n for n in newest if n not in _KNOWN), key=lambda n: newest[n], reverse=True)
    rank = {n: k for k, n in enumerate([n for n in _KNOWN if n in newest] + unknown)}

    def key(i: Image) -> tuple[int, int]:
        m = _INTERVAL.fullmatch(i.name)
        if m is None:  # .sync (in progress) is newest; _delete.* (being removed) oldest
            return (1, 0) if i.name == ".sync" else (-len(rank) - 1, 0)
        return (-rank[m.group(1)], -int(m.group(2)))

    return key


def scan_root(root: Path, notes: Notes | None = None) -> tuple[Vault, ...]:
    """One vault per host found under any interval folder of an rsnapshot root."""
    notes = notes or Notes()
    try:
        real_root = root.resolve(strict=True)
    except (OSError, RuntimeError):
        raise BackupError(
            f"rsnapshot root {shown(str(root))} does not exist",
            why="the rsnapshot root is the snapshot_root folder that holds daily.0, ...",
            fix="check the path (is the backup disk mounted?) or give it with --rsnapshot DIR",
        ) from None
    images: dict[str, list[Image]] = {}
    try:
        entries = sorted(os.scandir(real_root), key=lambda e: e.name)
    except OSError as e:
        raise BackupError(f"rsnapshot root {shown(str(root))} cannot be read", why=e.strerror,
                          fix="run rescue as root, or check the backup disk") from None
    for e in entries:
        m = _INTERVAL.fullmatch(e.name)
        in_progress = e.name == ".sync" or e.name.startswith("_delete.")
        if not (m or in_progress):
            continue
        if e.is_symlink() or not e.is_dir(follow_symlinks=False):
            if e.is_symlink():
                notes.add(f"{shown(str(real_root / e.name))}: a link, not followed")
            continue
        interval_dir = real_root / e.name
        created = datetime.fromtimestamp(e.stat(follow_symlinks=False).st_mtime)
        try:
            hosts = sorted(os.scandir(interval_dir), key=lambda h: h.name)
        except OSError as err:
            notes.add(f"{shown(str(interval_dir))}: cannot be read ({err.strerror})")
            continue
        for h in hosts:
            if h.name.startswith("."):
                continue
            if h.is_symlink():
                notes.add(f"{shown(str(interval_dir / h.name))}: a link, not followed")
                continue
            if not h.is_dir(follow_symlinks=False):
                continue
            layout = interval_dir / ".rescue" / h.name
            layout_dir = layout if within(real_root, layout / LAYOUT_FILE) is not None else None
            status = ImageStatus.INCOMPLETE if in_progress else ImageStatus.SUCCESS
            images.setdefault(h.name, []).append(Image(
                kind=SourceKind.RSNAPSHOT,
                bank=real_root,
                vault=h.name,
                name=e.name,
                path=interval_dir,
                tree=interval_dir / h.name,
                client=h.name,
                source="/",
                status=status,
                status_text="rsnapshot run in progress" if in_progress
                else "finished (rsnapshot records no status)",
                created=created.isoformat(timespec="seconds"),
                layout_dir=layout_dir,
            ))
    return tuple(
        Vault(bank=real_root, name=host, images=tuple(sorted(imgs, key=_age_order(imgs))),
              kind=SourceKind.RSNAPSHOT, configured_client=host, configured_source="/")
        for host, imgs in sorted(images.items())
    )
