"""/proc/PID/mountinfo: the one reader of what is mounted, by device number.

Device numbers matter more than source names here: a mount is proved to be
the partition the engine meant by major:minor, never by a path.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rescue.formats.escape import unescape


@dataclass(frozen=True)
class MountInfo:
    mount_id: int
    parent_id: int
    major: int
    minor: int
    root: str            # the path inside the filesystem (a btrfs subvolume, a bind mount's source)
    target: str          # the mount point
    fstype: str
    source: str
    options: str         # per-mount options (ro, nosuid, ...)
    super_options: str   # the filesystem's own (overlay's lowerdir=, btrfs subvol=)


def parse_mountinfo(text: str) -> list[MountInfo]:
    """Every well-formed line; optional fields (shared:5) skipped, broken lines left out."""
    out = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        a = left.split()
        b = right.split()
        if len(a) < 6 or len(b) < 2:
            continue
        try:
            major, minor = (int(x) for x in a[2].split(":"))
            mount_id, parent_id = int(a[0]), int(a[1])
        except ValueError:
            continue
        out.append(MountInfo(
            mount_id=mount_id, parent_id=parent_id, major=major, minor=minor,
            root=unescape(a[3]), target=unescape(a[4]), fstype=b[0], source=unescape(b[1]),
            options=a[5], super_options=b[2] if len(b) > 2 else "",
        ))
    return out


def read_mountinfo(pid: str = "self", proc: Path = Path("/proc")) -> list[MountInfo]:
    """The mounts one process sees (its mount namespace); OSError when it cannot be read (never 'none')."""
    text = (proc / pid / "mountinfo").read_text(encoding="utf-8", errors="surrogateescape")
    return parse_mountinfo(text)
