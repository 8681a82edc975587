"""btrfs: subvolumes, the default subvolume, quota groups, nocow folders. Parsers and pure joins.

The raw files are what btrfs-progs and lsattr print (`LANG=C`); each parser
takes the bytes of one file and names the file in any LayoutError.

Why subvolumes matter to a backup: each subvolume is a filesystem of its own
to stat() (another st_dev), so rsync -x, which dirvish runs for a vault with
`xdev: 1`, copies a nested subvolume's folder empty and nothing inside it.
A subvolume the machine shows (not mounted itself, seen inside a mounted
one) needs a vault of its own, unless it is a read-only snapshot (a copy of
what is backed up already: snapper's /.snapshots/N/snapshot).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rescue.errors import LayoutError
from rescue.layout.model import BtrfsMount, BtrfsVolume, FstabEntry, Mount, Qgroup, Subvolume
from rescue.layout.sfdisk import read_text

TOP_LEVEL = 5  # the id of a btrfs filesystem's top-level subvolume (FS_TREE)
FS_TREE = "<FS_TREE>/"


@dataclass(frozen=True)
class SubvolumeRow:
    """One line of `btrfs subvolume list -a -u -q -p -R`."""

    id: int
    parent_id: int
    uuid: str
    parent_uuid: str | None
    received_uuid: str | None
    path: str  # from the top level


def _uuid(value: str | None) -> str | None:
    return None if value in (None, "-") else value


def parse_subvolume_list(data: bytes | str, file: str) -> tuple[SubvolumeRow, ...]:
    """`btrfs subvolume list -a -u -q -p -R MOUNT`.

    With -a every path is from the top level; btrfs-progs puts `<FS_TREE>/` before
    those whose parent is not the subvolume MOUNT shows, which is dropped here
    (without -a, paths below that subvolume would be relative to it instead).
    The path is the rest of the line: it may hold spaces."""
    text = read_text(data, file)
    rows = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        head, sep, path = line.partition(" path ")
        fields = {k: v for k, v in re.findall(r"(?:^|\s)(ID|parent|top level|parent_uuid|received_uuid|uuid) (\S+)",
                                               head)}
        if not sep or "ID" not in fields or "uuid" not in fields or not path:
            raise LayoutError(file, lineno, f"not a `btrfs subvolume list` line: {line[:60]!r}")
        parent = fields.get("parent", fields.get("top level"))
        if not (fields["ID"].isdigit() and parent is not None and parent.isdigit()):
            raise LayoutError(file, lineno, f"no subvolume id or parent id in {line[:60]!r}")
        rows.append(SubvolumeRow(
            id=int(fields["ID"]), parent_id=int(parent), uuid=fields["uuid"],
            parent_uuid=_uuid(fields.get("parent_uuid")), received_uuid=_uuid(fields.get("received_uuid")),
            path=path.removeprefix(FS_TREE),
        ))
    return tuple(rows)


def parse_readonly_ids(data: bytes | str, file: str) -> frozenset[int]:
    """`btrfs subvolume list -r -a MOUNT`: the ids of the read-only subvolumes."""
    text = read_text(data, file)
    ids = set()
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        m = re.match(r"ID (\d+) ", line)
        if not m:
            raise LayoutError(file, lineno, f"not a `btrfs subvolume list` line: {line[:60]!r}")
        ids.add(int(m.group(1)))
    return frozenset(ids)


def parse_get_default(data: bytes | str, file: str) -> int:
    """`btrfs subvolume get-default MOUNT`: "ID 5 (FS_TREE)" or "ID 256 gen 9 top level 5 path @"."""
    text = read_text(data, file).strip()
    m = re.match(r"ID (\d+)\b", text)
    if not m:
        raise LayoutError(file, 1, f"not `btrfs subvolume get-default` output: {text[:60]!r}")
    return int(m.group(1))


def parse_qgroups(data: bytes | str, file: str) -> tuple[Qgroup, ...]:
    """`btrfs qgroup show --raw -r -e MOUNT`: a header, a rule, then one qgroup a line
    (newer btrfs-progs add a Path column at the end, ignored here)."""
    text = read_text(data, file)
    out = []
    limits = False
    for lineno, line in enumerate(text.splitlines(), 1):
        words = line.split()
        if not words or set(line.strip()) <= {"-", " "}:
            continue
        if words[0].lower() == "qgroupid":
            limits = "max" in line.lower()
            continue
        if not re.fullmatch(r"\d+/\d+", words[0]) or len(words) < 3 or not (words[1].isdigit() and words[2].isdigit()):
            raise LayoutError(file, lineno, f"not a qgroup line: {line[:60]!r}")

        def limit(i: int) -> int | None:
            if not limits or len(words) <= i or words[i] == "none":
                return None
            if not words[i].isdigit():
                raise LayoutError(file, lineno, f"not a limit in bytes: {words[i]!r}")
            return int(words[i])

        out.append(Qgroup(qgroupid=words[0], referenced=int(words[1]), exclusive=int(words[2]),
                          max_referenced=limit(3), max_exclusive=limit(4)))
    return tuple(out)


NOCOW = re.compile(r"([-A-Za-z]+) (/.*)")


def nocow_lines(data: bytes) -> tuple[list[bytes], int]:
    """The lines of `lsattr -d` output whose flags hold C (no copy-on-write), and how many
    of those were left out because their path is not UTF-8 (layout.json could not name it)."""
    kept, odd = [], 0
    for line in data.split(b"\n"):
        m = re.fullmatch(rb"([-A-Za-z]+) (/.*)", line)
        if not m or b"C" not in m.group(1):
            continue
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            odd += 1
            continue
        kept.append(line)
    return kept, odd


def parse_nocow(data: bytes | str, file: str) -> tuple[str, ...]:
    """nocow folders from `lsattr -d` lines: only the topmost of each run, since a folder
    made inside a +C folder inherits the flag (what a restore sets on the topmost, the
    copy then gives the rest)."""
    text = read_text(data, file)
    found = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        m = NOCOW.fullmatch(line)
        if not m:
            raise LayoutError(file, lineno, f"not an lsattr line: {line[:60]!r}")
        if "C" in m.group(1):
            found.append(m.group(2))
    return topmost(found)


def topmost(paths: Iterable[str]) -> tuple[str, ...]:
    out: list[str] = []
    for p in sorted(set(paths)):
        if not any(p == q or p.startswith(q.rstrip("/") + "/") for q in out):
            out.append(p)
    return tuple(out)


def mount_subvol(options: str) -> tuple[str | None, int | None]:
    """subvol= and subvolid= of a btrfs mount's options."""
    subvol = subvolid = None
    for opt in options.split(","):
        key, _, value = opt.partition("=")
        if key == "subvol" and value:
            subvol = value
        elif key == "subvolid" and value.isdigit():
            subvolid = int(value)
    return subvol, subvolid


def compress_of(options: str | None) -> str | None:
    if not options:
        return None
    for opt in options.split(","):
        key, _, value = opt.partition("=")
        if key in ("compress", "compress-force"):
            return value or "zlib"  # a bare compress means zlib
    return None


def _norm(subvol: str) -> str:
    """subvol= as a path from the top level, without the leading slash: "/@home" -> "@home"."""
    return subvol.strip("/")


def join_mounts(mounted: Sequence[Mount], fstab: Sequence[FstabEntry], fstab_names: set[str],
                subvolumes: Sequence[SubvolumeRow]) -> tuple[BtrfsMount, ...]:
    """The filesystem's mounts in use (targets relative to ROOT), each with its fstab line,
    and the fstab lines of it not mounted at capture."""
    by_id = {s.id: s for s in subvolumes}
    lines = {e.file: e for e in fstab if e.spec in fstab_names and e.vfstype in ("btrfs", "auto")}
    out = []
    for m in mounted:
        subvol, subvolid = mount_subvol(m.options)
        e = lines.pop(m.target, None)
        fopts = e.options if e is not None else None
        out.append(BtrfsMount(target=m.target, subvol=subvol, subvolid=subvolid, options=m.options,
                              fstab_options=fopts, compress=compress_of(fopts) or compress_of(m.options)))
    for target, e in sorted(lines.items()):
        subvol, subvolid = mount_subvol(e.options)
        if subvol is None and subvolid in by_id:
            subvol = "/" + by_id[subvolid].path  # type: ignore[index]
        out.append(BtrfsMount(target=target, subvol=subvol, subvolid=subvolid, options="", fstab_options=e.options,
                              compress=compress_of(e.options), mounted=False))
    return tuple(out)


def subvolumes_seen(rows: Sequence[SubvolumeRow], readonly: frozenset[int], mounts: Sequence[BtrfsMount],
                    default_id: int) -> tuple[Subvolume, ...]:
    """Each subvolume with where the machine shows it: through a mount of itself, or
    inside a mounted subvolume above it (the mount of the deepest such, its shallowest target)."""
    by_uuid = {r.uuid: r for r in rows}
    by_id = {r.id: r for r in rows}
    shown: list[tuple[str, str]] = []  # (subvolume path from the top level, target)
    for m in mounts:
        if not m.mounted:
            continue
        if m.subvol is not None:
            shown.append((_norm(m.subvol), m.target))
        elif m.subvolid is not None:
            shown.append(("" if m.subvolid == TOP_LEVEL else by_id[m.subvolid].path if m.subvolid in by_id else "?",
                          m.target))
        else:  # no subvol said: the default subvolume is mounted
            shown.append(("" if default_id == TOP_LEVEL else by_id[default_id].path if default_id in by_id else "?",
                          m.target))
    out = []
    for r in rows:
        seen_at, mounted = None, False
        exact = sorted(t for p, t in shown if p == r.path)
        if exact:
            seen_at, mounted = exact[0], True
        else:
            above = [(p, t) for p, t in shown if p == "" or r.path.startswith(p + "/")]
            if above:
                p, t = min(above, key=lambda x: (-len(x[0]), len(x[1]), x[1]))
                rest = r.path[len(p):].lstrip("/")
                seen_at = t.rstrip("/") + "/" + rest if t != "/" else "/" + rest
                if any(_under(seen_at, t2) and _under(t2, t) and t2 != t for m in mounts if m.mounted
                       for t2 in (m.target,)):
                    seen_at = None  # below a folder another mount covers: the machine does not show it
        origin = by_uuid.get(r.parent_uuid) if r.parent_uuid else None
        out.append(Subvolume(
            id=r.id, path=r.path, parent_id=r.parent_id, uuid=r.uuid, parent_uuid=r.parent_uuid,
            received_uuid=r.received_uuid, readonly=r.id in readonly, snapshot=r.parent_uuid is not None,
            snapshot_of=origin.path if origin is not None else None, seen_at=seen_at, mounted=mounted,
        ))
    return tuple(out)


def _under(path: str, top: str) -> bool:
    return top == "/" or path == top or path.startswith(top.rstrip("/") + "/")


def needs_a_vault(volume: BtrfsVolume) -> list[Subvolume]:
    """The subvolumes a vault with xdev cannot hold through another: seen inside a mounted
    subvolume, not mounted themselves, and not read-only snapshots."""
    return [s for s in volume.subvolumes
            if s.seen_at is not None and not s.mounted and not (s.snapshot and s.readonly)]
