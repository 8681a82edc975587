"""The health of a dirvish bank: how full, how fast it grows, how stale each machine is.

A hard-link bank cannot be sized by adding up its images: every image looks
as big as the whole machine, yet holds only what changed that night. What an
image *added* is the set of inodes of its folder that the previous image
(its Reference) does not hold at the same path. That is measured once, by
one walk of the new image, when the image is made (the capture hook) and
kept in IMAGE/rescue/added.json; `rescue list --health` only reads those
small files, so it stays fast on a bank of thousands of images.

Why "same path, same inode" and not "st_nlink == 1": rsync --link-dest links
a file to the reference's file at the same path, and an unchanged file is
also linked by every older image, so its link count says nothing about
whether this image added it. A file whose inode differs from the reference's
at that path (or that the reference lacks) was written anew; rsync never
links across paths (no --fuzzy in dirvish), so no new path shares an old
inode unless the source itself hard-links it, and such a file is still
counted once per inode (a seen set). Folders are always made anew by rsync,
so each counts as added, and so do the image's own files (summary, log,
index, rescue/) outside tree/.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import json
import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rescue.backups.dirvish import parse_config
from rescue.backups.model import Image, ImageStatus, Machine, SourceKind, Vault
from rescue.jsonform import FormError, from_json
from rescue.layout.btrfs import needs_a_vault
from rescue.layout.model import BtrfsVolume

ADDED_FILE = "added.json"
ADDED_VERSION = 1
GROWTH_NIGHTS = 7  # growth per night is the mean of this many last nights
RECENT_NIGHTS = 14  # failed and incomplete images are counted over this many nights


# --------------------------------------------------------------------------- measuring an image


@dataclass(frozen=True)
class Added:
    """What one image added to its bank: allocated bytes (st_blocks * 512) and inodes."""

    bytes: int
    inodes: int
    reference: str | None  # the image compared against (None: the first image, all is new)
    measured_at: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"version": ADDED_VERSION, "bytes": self.bytes, "inodes": self.inodes,
                "reference": self.reference, "measured_at": self.measured_at,
                "seconds": round(self.seconds, 3)}

    @classmethod
    def from_dict(cls, data: object) -> Added | None:
        if not isinstance(data, dict) or data.get("version") != ADDED_VERSION:
            return None
        b, n, ref = data.get("bytes"), data.get("inodes"), data.get("reference")
        if not (isinstance(b, int) and isinstance(n, int) and b >= 0 and n >= 0):
            return None
        return cls(bytes=b, inodes=n, reference=ref if isinstance(ref, str) else None,
                   measured_at=str(data.get("measured_at", "")), seconds=float(data.get("seconds", 0) or 0))


def measure_added(image_dir: Path, reference_dir: Path | None) -> Added:
    """One walk of image_dir; each entry of its tree/ is compared with the
    reference image's entry at the same path (one lstat, no walk of the reference)."""
    import time

    started = time.perf_counter()
    tree = image_dir / "tree"
    ref_tree = reference_dir / "tree" if reference_dir is not None else None
    seen: set[tuple[int, int]] = set()
    total_bytes = inodes = 0

    def count(st: os.stat_result) -> None:
        nonlocal total_bytes, inodes
        key = (st.st_dev, st.st_ino)
        if key in seen:
            return
        seen.add(key)
        total_bytes += st.st_blocks * 512
        inodes += 1

    for root, dirs, files in os.walk(image_dir):
        top = Path(root)
        in_tree = top == tree or tree in top.parents
        for name in (*dirs, *files):
            path = top / name
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if in_tree and ref_tree is not None and not stat.S_ISDIR(st.st_mode):
                try:
                    old = os.lstat(ref_tree / path.relative_to(tree))
                except OSError:
                    old = None
                if old is not None and (old.st_dev, old.st_ino) == (st.st_dev, st.st_ino):
                    continue  # hard-linked to the reference: not new
            count(st)
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(root, d))]
    try:
        count(os.lstat(image_dir))
    except OSError:
        pass
    return Added(bytes=total_bytes, inodes=inodes,
                 reference=reference_dir.name if reference_dir is not None else None,
                 measured_at=dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
                 seconds=time.perf_counter() - started)


def reference_of(image_dir: Path) -> Path | None:
    """The image this one was hard-linked against: the summary's Reference when
    it names a sibling folder, else the newest older sibling image (by name)."""
    vault = image_dir.parent
    try:
        summary = parse_config((image_dir / "summary").read_text(errors="surrogateescape"))
    except OSError:
        summary = {}
    ref = summary.get("Reference")
    if isinstance(ref, str) and ref and "/" not in ref and (vault / ref / "tree").is_dir():
        return vault / ref
    older = sorted(p.name for p in vault.iterdir()
                   if p.name < image_dir.name and p.name != "dirvish" and (p / "tree").is_dir()
                   and not p.is_symlink())
    return vault / older[-1] if older else None


def write_added(image_dir: Path, added: Added) -> Path:
    """IMAGE/rescue/added.json, written to a temporary file and renamed.

    A bank is not trusted: a rescue/ that is a link, or a planted file at the
    temporary name, is refused rather than followed out of the image."""
    folder = image_dir / "rescue"
    try:
        folder.mkdir(mode=0o755)
    except FileExistsError:
        if folder.is_symlink() or not folder.is_dir():
            raise OSError(f"{folder} is not a plain folder; added.json not written") from None
    path = folder / ADDED_FILE
    tmp = folder / f".{ADDED_FILE}.tmp-{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(added.to_dict(), indent=2) + "\n")
    os.rename(tmp, path)
    return path


def record_added(image_dir: Path) -> Added:
    """Measure what image_dir added against its reference and keep it in rescue/added.json."""
    added = measure_added(image_dir, reference_of(image_dir))
    write_added(image_dir, added)
    return added


def read_added(image: Image) -> Added | None:
    """The image's rescue/added.json; a link (out of the bank, perhaps) is not followed."""
    try:
        fd = os.open(image.path / "rescue" / ADDED_FILE, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as f:
            return Added.from_dict(json.loads(f.read(65536)))
    except (OSError, ValueError):
        return None


# --------------------------------------------------------------------------- figures


@dataclass(frozen=True)
class ImageAdded:
    """What one image of that night added (from its rescue/added.json)."""

    vault: str
    image: str
    bytes: int
    inodes: int


@dataclass(frozen=True)
class Night:
    """One night of a bank: what its images added, summed over the vaults."""

    date: str  # YYYY-MM-DD
    bytes: int
    inodes: int
    images: tuple[ImageAdded, ...]


@dataclass(frozen=True)
class BankHealth:
    bank: Path
    size: int  # filesystem bytes
    used: int
    free: int  # bytes available (to root too: dirvish runs as root)
    inodes: int
    inodes_used: int
    inodes_free: int
    nights: tuple[Night, ...]  # the last nights with measured images, oldest first
    unmeasured: int  # images of those last nights without added.json
    growth_bytes: int | None  # per night, mean of the measured nights
    growth_inodes: int | None
    nights_left: float | None  # at that growth; None when nothing grows, nothing was measured, or expiry keeps up
    retention_days: float | None = None  # how long the bank keeps an image (its Expire: lines); None: forever/unknown
    steady_used: int | None = None  # bytes used once expiry frees as fast as the bank grows (an estimate)

    @property
    def used_percent(self) -> float:
        return 100.0 * self.used / self.size if self.size else 0.0

    @property
    def inodes_used_percent(self) -> float:
        return 100.0 * self.inodes_used / self.inodes if self.inodes else 0.0


@dataclass(frozen=True)
class MachineHealth:
    client: str
    newest: str | None  # the newest usable image (vault/image)
    newest_at: str | None  # when it was made (ISO)
    age_days: float | None
    failed: int  # failed images in the last RECENT_NIGHTS nights
    incomplete: int
    layout: bool  # the newest usable image of some vault has a captured layout
    unheld: tuple[str, ...]  # mount points of the captured layout no vault backs up
    # btrfs subvolumes the machine shows inside a mounted one, that no vault holds (xdev skips them)
    unheld_subvolumes: tuple[str, ...] = ()
    layout_root: str | None = None  # where the newest layout was captured (--root; "/" for a running machine)

    @property
    def complete(self) -> bool:
        """Every mount point and subvolume of the captured layout is in some vault."""
        return not self.unheld and not self.unheld_subvolumes


def nights_left(free: int, free_inodes: int, growth_bytes: int | None, growth_inodes: int | None) -> float | None:
    """min(free bytes / growth, free inodes / growth); None when nothing grows."""
    left = [free / growth_bytes if growth_bytes else None, free_inodes / growth_inodes if growth_inodes else None]
    known = [x for x in left if x is not None]
    return min(known) if known else None


def bank_health(bank: Path, vaults: Sequence[Vault], window: int = GROWTH_NIGHTS) -> BankHealth:
    """The bank's filesystem (statvfs) and its last `window` nights' growth.

    Dirvish-expire's rules are not applied: the estimate assumes the bank keeps
    growing at the mean of the last nights, which is what it does until
    dirvish-expire removes images (then nights left is a lower bound)."""
    fs = os.statvfs(bank)
    size = fs.f_blocks * fs.f_frsize
    free = fs.f_bavail * fs.f_frsize
    used = (fs.f_blocks - fs.f_bfree) * fs.f_frsize
    by_night: dict[str, list[Image]] = {}
    for v in vaults:
        for image in v.images[-window:]:
            by_night.setdefault((image.created or image.name)[:10], []).append(image)
    nights: list[Night] = []
    unmeasured = 0
    for date in sorted(by_night)[-window:]:
        measured: list[ImageAdded] = []
        for image in by_night[date]:
            added = read_added(image)
            if added is None:
                unmeasured += 1
                continue
            measured.append(ImageAdded(vault=image.vault, image=image.name, bytes=added.bytes, inodes=added.inodes))
        if measured:
            nights.append(Night(date=date, bytes=sum(x.bytes for x in measured),
                                inodes=sum(x.inodes for x in measured), images=tuple(measured)))
    # the very first night holds whole machines, not one night's growth
    grown = [x for x in nights if not _first_night(x, vaults)] or []
    growth_b = sum(x.bytes for x in grown) // len(grown) if grown else None
    growth_i = sum(x.inodes for x in grown) // len(grown) if grown else None
    inodes_free = fs.f_favail
    left = nights_left(free, inodes_free, growth_b, growth_i)
    keep = retention_days(vaults, window)
    steady = None
    if keep is not None and left is not None and growth_b is not None:
        # images start to expire once the oldest is `keep` days old; from then on each night
        # frees about what a night adds, so the bank stops growing if it has room until then
        until = max(0.0, keep - held_days(vaults))
        if left > until:
            left, steady = None, used + int(growth_b * until)
    return BankHealth(
        bank=bank, size=size, used=used, free=free,
        inodes=fs.f_files, inodes_used=fs.f_files - fs.f_ffree, inodes_free=inodes_free,
        nights=tuple(nights), unmeasured=unmeasured, growth_bytes=growth_b, growth_inodes=growth_i,
        nights_left=left, retention_days=keep, steady_used=steady,
    )


def retention_days(vaults: Sequence[Vault], window: int = GROWTH_NIGHTS) -> float | None:
    """How many days the bank keeps an image: the longest Expire: - Image-now of the last
    `window` images of any vault (dirvish wrote it after its expire rules). None when an image
    says Never or does not say: then the bank only grows."""
    days = []
    for v in vaults:
        for image in v.images[-window:]:
            if image.expires is None or image.expires == "never" or not image.created:
                return None
            span = dt.datetime.fromisoformat(image.expires) - dt.datetime.fromisoformat(image.created)
            days.append(span.total_seconds() / 86400)
    return max(days) if days else None


def held_days(vaults: Sequence[Vault]) -> float:
    """Days between the oldest and the newest image the bank holds."""
    times = [dt.datetime.fromisoformat(i.created) for v in vaults for i in v.images if i.created]
    return (max(times) - min(times)).total_seconds() / 86400 if times else 0.0


def _first_night(night: Night, vaults: Sequence[Vault]) -> bool:
    """A night on which some vault made its first image (a full copy, not growth)."""
    return any(v.images and (v.images[0].created or v.images[0].name)[:10] == night.date for v in vaults)


def machine_health(machine: Machine, now: dt.datetime | None = None, recent: int = RECENT_NIGHTS) -> MachineHealth:
    now = now or dt.datetime.now()
    since = now - dt.timedelta(days=recent)
    newest: Image | None = None
    failed = incomplete = 0
    layout = False
    layout_image: Image | None = None
    holds = held_sources(machine.vaults)
    held = set(holds.paths)
    for v in machine.vaults:
        usable = [i for i in v.images if i.usable]
        if usable and usable[-1].layout_dir is not None:
            layout = True
            if layout_image is None or _when(usable[-1]) > _when(layout_image):
                layout_image = usable[-1]
        for i in usable[-1:]:
            if newest is None or _when(i) > _when(newest):
                newest = i
        for i in v.images:
            when = _when(i)
            if when is not None and when >= since:
                failed += i.status is ImageStatus.FAILED
                incomplete += i.status is ImageStatus.INCOMPLETE
    when = _when(newest) if newest is not None else None
    data = _layout_data(layout_image) if layout_image is not None else None
    return MachineHealth(
        client=machine.client,
        newest=f"{newest.vault}/{newest.name}" if newest is not None else None,
        newest_at=when.isoformat(timespec="seconds") if when is not None else None,
        age_days=(now - when).total_seconds() / 86400 if when is not None else None,
        failed=failed, incomplete=incomplete, layout=layout,
        unheld=_unheld(data, held) if data is not None else (),
        unheld_subvolumes=_unheld_subvolumes(data, holds) if data is not None else (),
        layout_root=str(data.get("root") or "/") if data is not None else None,
    )


@dataclass(frozen=True)
class Held:
    """What a machine's vaults back up: their sources (every image's and the configured tree:),
    those of dirvish vaults whose rsync crosses into other filesystems (xdev off), and each
    source's excludes (the newest image's, as dirvish wrote them in its summary)."""

    paths: frozenset[str]
    crossing: frozenset[str]
    excludes: dict[str, tuple[str, ...]]


def held_sources(vaults: Iterable[Vault]) -> Held:
    held: set[str] = set()
    crossing: set[str] = set()
    excludes: dict[str, tuple[str, ...]] = {}
    for v in vaults:
        sources = {s.rstrip("/") or "/" for s in (v.configured_source, *(i.source for i in v.images)) if s}
        held |= sources
        if v.kind is SourceKind.DIRVISH and v.xdev is False:
            crossing |= sources
        if v.images:
            for s in sources:
                excludes[s] = excludes.get(s, ()) + v.images[-1].excludes
    return Held(frozenset(held), frozenset(crossing), excludes)


def subvolumes_no_vault_holds(layout: dict, vaults: Iterable[Vault]) -> tuple[str, ...]:
    """For a layout just captured (as JSON): its btrfs subvolumes that none of vaults holds."""
    return _unheld_subvolumes(layout, held_sources(vaults))


def _when(image: Image | None) -> dt.datetime | None:
    if image is None or not image.created:
        return None
    try:
        return dt.datetime.fromisoformat(image.created).replace(tzinfo=None)
    except ValueError:
        return None


def _layout_data(image: Image) -> dict | None:
    """The image's layout.json as plain JSON (read leniently: a layout of another
    version still tells its mount points)."""
    try:
        with open(image.layout_dir / "layout.json", "rb") as f:  # type: ignore[operator]
            data = json.loads(f.read(8 << 20))
    except (OSError, ValueError, TypeError):
        return None
    return data if isinstance(data, dict) else None


def _mapped(data: dict, paths: set[str]) -> set[str]:
    """Vault sources as the captured machine names them. A layout captured with --root
    names the client's own mount points, which are what the vault sources name too when
    the client is backed up over ssh; a vault whose source lies under a --root capture's
    root is mapped back by that root."""
    root = str(data.get("root") or "/").rstrip("/")
    mapped = set(paths)
    if root:
        for h in paths:
            if h == root:
                mapped.add("/")
            elif h.startswith(root + "/"):
                mapped.add(h[len(root):])
    return mapped


def _unheld(data: dict, held: set[str]) -> tuple[str, ...]:
    """Mount points of the captured layout (its filesystems, not swap) that no vault backs up."""
    mapped = _mapped(data, held)
    out = []
    for fs in data.get("filesystems") or ():
        mp = fs.get("mountpoint") if isinstance(fs, dict) else None
        if isinstance(mp, str) and mp.startswith("/") and fs.get("fstype") != "swap":
            if (mp.rstrip("/") or "/") not in mapped:
                out.append(mp)
    return tuple(sorted(set(out)))


def _unheld_subvolumes(data: dict, holds: Held) -> tuple[str, ...]:
    """btrfs subvolumes the machine shows inside a mounted subvolume (not mounted themselves,
    not read-only snapshots) that no vault holds: neither a vault of their own nor a vault
    above them whose rsync crosses filesystems (no xdev). dirvish's `xdev: 1` copies such a
    subvolume's folder empty, since it is another st_dev. One the vault above excludes
    (docker's /var/lib/docker, a cache) is left out on purpose: not reported."""
    held_m, crossing_m = _mapped(data, set(holds.paths)), _mapped(data, set(holds.crossing))
    excludes: dict[str, tuple[str, ...]] = {}
    for source, patterns in holds.excludes.items():
        for name in _mapped(data, {source}):
            excludes[name] = excludes.get(name, ()) + patterns
    out = []
    volumes = data.get("btrfs")
    for item in volumes if isinstance(volumes, list) else ():
        try:
            volume = from_json(BtrfsVolume, item)
        except FormError:
            continue
        for sub in needs_a_vault(volume):
            seen = (sub.seen_at or "").rstrip("/") or "/"
            if seen in held_m or any(seen == c or seen.startswith(c.rstrip("/") + "/") for c in crossing_m):
                continue
            above = [h for h in held_m if h == "/" or seen.startswith(h.rstrip("/") + "/")]
            vault = max(above, key=len, default=None)
            if vault is not None and excluded(seen[len(vault.rstrip("/")):], excludes.get(vault, ())):
                continue
            out.append(seen)
    return tuple(sorted(set(out)))


def excluded(rel: str, patterns: Sequence[str]) -> bool:
    """Whether rsync's exclude patterns leave out /rel (relative to the vault's tree) or a
    folder above it. A simple reading of rsync's rules: a pattern starting with / is anchored
    at the tree; one with no other / matches any one name; one with a / inside matches the
    end of the path; a trailing / (folders only) is dropped, as is a trailing ** or *** ."""
    parts = [p for p in rel.strip("/").split("/") if p]
    for pattern in patterns:
        pat = pattern.strip()
        if not pat or pat.startswith(("+", "#", ";")):
            continue
        pat = pat.removeprefix("- ").rstrip("/")
        for tail in ("/***", "/**"):
            pat = pat.removesuffix(tail)
        if not pat:
            continue
        anchored = pat.startswith("/")
        words = pat.strip("/").split("/")
        for i in range(1, len(parts) + 1):  # every folder on the way, and the path itself
            path = parts[:i]
            if anchored:
                if len(path) == len(words) and all(fnmatch.fnmatchcase(a, b) for a, b in zip(path, words)):
                    return True
            elif len(path) >= len(words) and all(fnmatch.fnmatchcase(a, b) for a, b in zip(path[-len(words):], words)):
                return True
    return False


def dirvish_banks(vaults: Iterable[Vault]) -> dict[Path, list[Vault]]:
    out: dict[Path, list[Vault]] = {}
    for v in vaults:
        if v.kind is SourceKind.DIRVISH:
            out.setdefault(v.bank, []).append(v)
    return out


def unmeasured_images(vaults: Iterable[Vault], window: int = GROWTH_NIGHTS) -> list[Image]:
    """The last images of each vault that lack added.json (what --measure measures)."""
    return [i for v in vaults for i in v.images[-window:]
            if i.kind is SourceKind.DIRVISH and i.tree.is_dir() and read_added(i) is None]


# --------------------------------------------------------------------------- checks


@dataclass(frozen=True)
class Limits:
    max_age_days: float | None = None
    min_nights: float | None = None
    max_used_percent: float | None = None


def problems(banks: Sequence[BankHealth], machines: Sequence[MachineHealth], limits: Limits) -> list[str]:
    """One line per problem, naming the bank or machine and the threshold it misses."""
    out: list[str] = []
    for b in banks:
        if limits.max_used_percent is not None:
            if b.used_percent > limits.max_used_percent:
                out.append(f"bank {b.bank}: {b.used_percent:.1f}% of its bytes used, over --max-used "
                           f"{limits.max_used_percent:g}%")
            if b.inodes_used_percent > limits.max_used_percent:
                out.append(f"bank {b.bank}: {b.inodes_used_percent:.1f}% of its inodes used, over --max-used "
                           f"{limits.max_used_percent:g}%")
        if limits.min_nights is not None and b.nights_left is not None and b.nights_left < limits.min_nights:
            out.append(f"bank {b.bank}: full in {b.nights_left:.1f} nights at the last nights' growth, "
                       f"under --min-nights {limits.min_nights:g}")
    for m in machines:
        if limits.max_age_days is not None:
            if m.age_days is None:
                out.append(f"machine {m.client}: no usable image at all (--max-age {limits.max_age_days:g}d)")
            elif m.age_days > limits.max_age_days:
                out.append(f"machine {m.client}: newest usable image {m.newest} is {m.age_days:.1f} days old, "
                           f"over --max-age {limits.max_age_days:g}d")
        # (a mount point in no vault is often meant: an ESP or a scratch /tmp; a subvolume rarely is,
        # and one left out on purpose is excluded in its vault above)
        if m.unheld_subvolumes:
            out.append(f"machine {m.client}: backup incomplete: btrfs subvolume(s) in no vault: "
                       f"{', '.join(m.unheld_subvolumes)} (a vault with xdev copies a subvolume's folder empty)")
    return out
