"""`rescue doctor`: hygiene of a backed-up machine and its dirvish side, from files only.

Every finding says what, the evidence (the file and line, the figure from
the bank) and the fix. Nothing is written and nothing is run: the machine's
configuration is read under ROOT (/ for this machine, or a mounted system)
or, for a client the backup server pulls from, copied with `cat` over ssh
(the same BatchMode ssh as `rescue capture --ssh`); the bank only through
its image folders.

Findings made so far (issue 20, first part):
  updatedb-indexes-bank  updatedb (mlocate, plocate, slocate) walks the bank every night
  logrotate-no-dateext   rotated logs renamed every night (log.1 -> log.2): the bank copies them
                         all again; the bytes re-copied come from the newest image
  no-capture-hook        neither master.conf nor the vault's config runs `rescue capture`
  no-xattrs-acls         a vault's rsync options keep neither xattrs nor ACLs
  changes-every-night    the files stored anew on each of the last nights, biggest first (top ten)
  mbox-changes-nightly   an mbox over MBOX_MIN bytes stored anew every night (the whole mailbox)
  expire-not-running     images still in the bank past the Expire: date dirvish wrote in their summary
  never-expire           no expire-default or expire-rule, and the images say Expire: Never
  no-disklabel           the backup filesystem holding the bank has no DISKLABEL file (which disk is this?)
  mount-not-backed-up    a mount point of the captured layout that no vault holds (xdev stops at it)
  subvolume-not-backed-up  a btrfs subvolume the machine shows inside a mounted one, that no vault
                         holds: a vault with xdev copies its folder empty (another st_dev)
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rescue.formats.mountinfo import read_mountinfo
from rescue.backups.dirvish import parse_config

if TYPE_CHECKING:
    from rescue.capture.probe import Runner

MBOX_MIN = 10 << 20  # an mbox above this, re-copied whole each night, is worth a finding
TOP = 10
ROTATED = re.compile(r".+\.\d+(\.(gz|xz|bz2|zst|lz4))?")


@dataclass(frozen=True)
class Finding:
    code: str
    what: str
    evidence: str
    fix: str
    cost_bytes: int | None = None  # what it costs the bank per night, where the bank can tell


def _read(path: Path, limit: int = 1 << 20) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read(limit).decode("utf-8", "replace")
    except OSError:
        return None


def _under(root: Path, path: str) -> Path:
    return root / path.lstrip("/")


# --------------------------------------------------------------------------- a client over ssh

CLIENT_FILES = ("/etc/logrotate.conf",)  # what the client-side findings read (logrotate)


def fetch_client_files(runner: Runner, into: Path) -> list[str]:
    """Copy the client's files doctor reads (plain `cat` over ssh, nothing written there)
    to the same paths under `into`; the paths the client has."""
    got = []
    for path in CLIENT_FILES:
        r = runner(["cat", "--", path], ok=(0, 1))
        if r.returncode == 0:
            dest = _under(into, path)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(r.stdout.encode("latin-1"))  # binary runner: latin-1 keeps every byte
            got.append(path)
    return got


# --------------------------------------------------------------------------- updatedb


def updatedb_findings(root: Path, banks: Sequence[str]) -> list[Finding]:
    """A locate database built nightly over the bank walks millions of hard-linked files.

    A bank is left alone when PRUNEPATHS holds it or a folder above it, or
    PRUNEFS holds the type of the filesystem it lies on."""
    conf = _under(root, "/etc/updatedb.conf")
    text = _read(conf)
    has_updatedb = any(_under(root, p).exists() for p in ("/usr/bin/updatedb", "/usr/sbin/updatedb"))
    if text is None and not has_updatedb:
        return []
    settings: dict[str, tuple[list[str], str]] = {}
    for line in (text or "").splitlines():
        m = re.match(r"\s*(PRUNEPATHS|PRUNEFS)\s*=\s*\"?([^\"]*)\"?", line)
        if m:
            settings[m.group(1)] = (m.group(2).split(), line.strip())
    prune, line_seen = settings.get("PRUNEPATHS", ([], ""))
    prunefs = {t.lower() for t in settings.get("PRUNEFS", ([], ""))[0]}
    out = []
    for bank in banks:
        b = bank.rstrip("/") or "/"
        if any(b == p.rstrip("/") or b.startswith(p.rstrip("/") + "/") for p in prune):
            continue
        if prunefs and fstype_of(Path(bank)).lower() in prunefs:
            continue
        evidence = f"{conf}: {line_seen}" if line_seen else f"{conf}: no PRUNEPATHS" if text else "no updatedb.conf"
        out.append(Finding(
            code="updatedb-indexes-bank",
            what=f"updatedb indexes the backup bank {bank}",
            evidence=evidence,
            fix=f'add {bank} to PRUNEPATHS in /etc/updatedb.conf (PRUNEPATHS="... {bank}")',
        ))
    return out


def fstype_of(path: Path) -> str:
    """The type of the filesystem path lies on (mountinfo), '' when unknown."""
    try:
        top = str(mount_top(path))
        mounts = read_mountinfo()
    except OSError:
        return ""
    seen = [m.fstype for m in mounts if m.target == top]
    return seen[-1] if seen else ""  # the last mount on a point is the one seen


# --------------------------------------------------------------------------- logrotate


LOGROTATE_CONF = "/etc/logrotate.conf"


def logrotate_findings(root: Path, newest: Path | None = None, reference: Path | None = None,
                       shown: str | None = None) -> list[Finding]:
    """Without dateext, each rotation renames every old log: new paths each night,
    so rsync --link-dest finds nothing to link and the bank stores them again.
    newest/reference: the root vault's last image and the one it was linked to;
    shown: how to name the file in the evidence (e.g. host:/etc/logrotate.conf)."""
    conf = _under(root, LOGROTATE_CONF)
    text = _read(conf)
    if text is None:
        return []
    if any(re.fullmatch(r"\s*dateext\b.*", line) for line in text.splitlines()):
        return []
    cost = None
    evidence = f"{shown or conf}: no dateext"
    if newest is not None:
        cost, count = _rotated_recopied(newest, reference)
        evidence += f"; image {newest.name} stored {count} rotated log(s) anew under var/log ({cost} bytes)"
    return [Finding(
        code="logrotate-no-dateext",
        what="logrotate renames every rotated log each night (no dateext)",
        evidence=evidence,
        fix="add 'dateext' to /etc/logrotate.conf: a rotated log then keeps its name and the bank links it",
        cost_bytes=cost,
    )]


def _rotated_recopied(image: Path, reference: Path | None) -> tuple[int, int]:
    top = image / "tree" / "var" / "log"
    total = count = 0
    for dirpath, _dirs, files in os.walk(top):
        for name in files:
            if not ROTATED.fullmatch(name):
                continue
            path = Path(dirpath) / name
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if reference is not None:
                try:
                    old = os.lstat(reference / "tree" / path.relative_to(image / "tree"))
                    if (old.st_dev, old.st_ino) == (st.st_dev, st.st_ino):
                        continue
                except OSError:
                    pass
            total += st.st_blocks * 512
            count += 1
    return total, count


# --------------------------------------------------------------------------- dirvish side


def _rsync_options(conf: dict) -> list[str]:
    v = conf.get("rsync-option")
    items = v if isinstance(v, list) else [v] if isinstance(v, str) else []
    return [w for item in items for w in shlex.split(item)]


def _keeps(options: Sequence[str], long: str, short: str) -> bool:
    for o in options:
        if o == long or (o.startswith("-") and not o.startswith("--") and short in o[1:]):
            return True
    return False


def dirvish_findings(master: Path | None, bank: Path) -> list[Finding]:
    """The capture hook and xattrs/ACLs, per vault of a bank."""
    mconf = parse_config(_read(master) or "") if master is not None else {}
    out = []
    for conf_path in sorted(bank.glob("*/dirvish/default.conf")):
        vault = conf_path.parent.parent.name
        vconf = parse_config(_read(conf_path) or "")
        hooks = [str(c.get("post-server", "")) for c in (vconf, mconf)]
        if not any(re.search(r"\brescue\b.*\bcapture\b", h) for h in hooks):
            out.append(Finding(
                code="no-capture-hook",
                what=f"vault {vault}: its images get no disk layout (no rescue capture hook)",
                evidence=f"post-server: {hooks[0] or '(none)'} in {conf_path}; "
                         f"{hooks[1] or '(none)'} in {master or 'master.conf'}",
                fix="add 'post-server: rescue capture' to /etc/dirvish/master.conf (or the vault's default.conf)",
            ))
        options = _rsync_options(vconf) + _rsync_options(mconf)
        missing = [n for n, long, short in (("xattrs", "--xattrs", "X"), ("ACLs", "--acls", "A"))
                   if not _keeps(options, long, short)]
        if missing:
            out.append(Finding(
                code="no-xattrs-acls",
                what=f"vault {vault}: {' and '.join(missing)} are not backed up",
                evidence=f"rsync-option: {' '.join(options) or '(none)'} ({conf_path}, master.conf)",
                fix="add to the vault's default.conf: rsync-option: with --xattrs and --acls, one per line",
            ))
    return out


# --------------------------------------------------------------------------- nightly changers


@dataclass(frozen=True)
class Changer:
    path: str  # inside the image's tree, e.g. var/lib/db/main.db
    bytes: int  # allocated in the newest image


def nightly_changers(images: Sequence[Path]) -> list[Changer]:
    """Files that have a new inode at the same path in each of `images` (oldest
    first, each hard-linked against the one before): one walk of the newest
    tree, then one lstat per file and older image. Biggest first."""
    if len(images) < 2:
        return []
    newest = images[-1] / "tree"
    out = []
    for dirpath, _dirs, files in os.walk(newest):
        for name in files:
            path = Path(dirpath) / name
            rel = path.relative_to(newest)
            try:
                sts = [os.lstat(path)]
                for image in reversed(images[:-1]):
                    sts.append(os.lstat(image / "tree" / rel))
            except OSError:
                continue  # missing on some night: not a nightly changer
            if len({(st.st_dev, st.st_ino) for st in sts}) == len(sts):
                out.append(Changer(path=str(rel), bytes=sts[0].st_blocks * 512))
    return sorted(out, key=lambda c: (-c.bytes, c.path))


def changer_findings(vault: str, images: Sequence[Path]) -> list[Finding]:
    changers = nightly_changers(images)
    if not changers:
        return []
    nights = len(images) - 1
    out = []
    for c in changers:
        if re.match(r"var/(spool/)?mail/[^/]+$", c.path) and c.bytes >= MBOX_MIN:
            out.append(Finding(
                code="mbox-changes-nightly",
                what=f"vault {vault}: the mbox /{c.path} is stored whole again every night",
                evidence=f"a new copy in each of the last {nights} nights, {c.bytes} bytes now",
                fix="move the mailbox to Maildir (one file per message: only new mail is stored), or archive it",
                cost_bytes=c.bytes,
            ))
    top = changers[:TOP]
    out.append(Finding(
        code="changes-every-night",
        what=f"vault {vault}: {len(changers)} file(s) stored anew on each of the last {nights} nights",
        evidence="; ".join(f"/{c.path} {c.bytes} bytes" for c in top),
        fix="exclude what need not be kept (caches, dumps that are made again), or back up a database's dump "
            "instead of its live files",
        cost_bytes=sum(c.bytes for c in changers),
    ))
    return out


# --------------------------------------------------------------------------- dirvish-expire


def _expiry(image: Path) -> str | None:
    """The summary's Expire: value ('+15 days == 2026-12-10 03:00:00' or 'Never')."""
    text = _read(image / "summary") or ""
    m = re.search(r"^Expire: (.*)$", text, re.MULTILINE)
    return m.group(1).strip() if m else None


def expire_findings(master: Path | None, bank: Path, now: dt.datetime | None = None) -> list[Finding]:
    now = now or dt.datetime.now()
    mconf = parse_config(_read(master) or "") if master is not None else {}
    overdue: list[tuple[str, str]] = []
    never: list[str] = []
    rules = bool(mconf.get("expire-default") or mconf.get("expire-rule"))
    for conf_path in sorted(bank.glob("*/dirvish/default.conf")):
        vconf = parse_config(_read(conf_path) or "")
        rules = rules or bool(vconf.get("expire-default") or vconf.get("expire-rule") or vconf.get("expire"))
    for summary in sorted(bank.glob("*/*/summary")):
        image = summary.parent
        value = _expiry(image)
        if value is None:
            continue
        if value.lower() == "never":
            never.append(f"{image.parent.name}/{image.name}")
            continue
        m = re.search(r"== (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)", value)
        if m and dt.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S") < now:
            overdue.append((f"{image.parent.name}/{image.name}", m.group(1)))
    out = []
    if overdue:
        oldest = min(overdue, key=lambda x: x[1])
        out.append(Finding(
            code="expire-not-running",
            what=f"bank {bank}: {len(overdue)} image(s) kept past their expiry: dirvish-expire does not run",
            evidence=f"{oldest[0]} expired on {oldest[1]} (its summary's Expire:)",
            fix="run dirvish-expire nightly before dirvish-runall (Debian's /etc/cron.d/dirvish does)",
        ))
    if never and not rules:
        out.append(Finding(
            code="never-expire",
            what=f"bank {bank}: images never expire, so the bank only grows",
            evidence=f"{len(never)} image(s) say Expire: Never, e.g. {never[-1]}; no expire-default or expire-rule",
            fix="add 'expire-default: +30 days' (and expire-rule lines to keep monthlies) to master.conf",
        ))
    return out


# --------------------------------------------------------------------------- the backup disk


def mount_top(path: Path) -> Path:
    """The mount point of the filesystem holding path."""
    p = path.resolve()
    while not os.path.ismount(p) and p != p.parent:
        p = p.parent
    return p


@dataclass(frozen=True)
class BackupDisk:
    """Which backup disk holds a bank, and when a backup last wrote to it (its newest image)."""

    bank: str
    disklabel: str | None  # the first line of DISKLABEL on the bank's filesystem
    last_written: str | None  # ISO: the newest image's creation time


def backup_disk(bank: Path, newest: str | None) -> BackupDisk:
    text = _read(mount_top(bank) / "DISKLABEL", limit=4096)
    label = text.strip().splitlines()[0].strip() if text and text.strip() else None
    return BackupDisk(bank=str(bank), disklabel=label, last_written=newest)


def disklabel_findings(bank: Path) -> list[Finding]:
    """The nightly job logs which backup disk was in the cage from its DISKLABEL file."""
    top = mount_top(bank)
    if (top / "DISKLABEL").is_file():
        return []
    return [Finding(
        code="no-disklabel",
        what=f"bank {bank}: its backup filesystem ({top}) has no DISKLABEL file",
        evidence=f"{top / 'DISKLABEL'} does not exist",
        fix=f"write the disk's name into {top / 'DISKLABEL'} (rescue prepare-disk does), so the drive log "
            "tells which disk holds which nights",
    )]


def unheld_findings(client: str, unheld: Sequence[str]) -> list[Finding]:
    if not unheld:
        return []
    return [Finding(
        code="mount-not-backed-up",
        what=f"machine {client}: {len(unheld)} mount point(s) of its captured layout are in no vault",
        evidence=f"mount points without a vault: {', '.join(unheld)} (a vault with xdev stops at a mount point)",
        fix="add a vault for each (dirvish: tree: MOUNTPOINT), or drop xdev where that is meant",
    )]


def subvolume_findings(client: str, unheld: Sequence[str], vaults: Sequence[tuple[str, str, bool | None]],
                       root: str = "/") -> list[Finding]:
    """btrfs subvolumes no vault holds. vaults: (name, source as the machine names it, xdev) of
    the machine's vaults, to name the one that skips each subvolume and show the fix."""
    if not unheld:
        return []
    skipped, excludes = [], []
    for path in unheld:
        above = [v for v in vaults if path.startswith(v[1].rstrip("/") + "/") or v[1] == "/"]
        by = max(above, key=lambda v: len(v[1]), default=None)
        if by is None:
            skipped.append(f"{path} (inside no vault)")
            continue
        skipped.append(f"{path} (inside vault {by[0]}, tree {by[1]}, xdev {'on' if by[2] else 'unknown'})")
        excludes.append(f"'exclude: {path[len(by[1].rstrip('/')):]}/' in vault {by[0]}")
    base = root.rstrip("/")
    examples = "; ".join(f"a vault {_vault_name(p)} with 'tree: {base}{p}' and 'xdev: 1'" for p in unheld)
    leave = (f"; one meant to stay out of the backup: exclude it in the vault above ({'; '.join(excludes)}), "
             "and it is no longer reported") if excludes else ""
    return [Finding(
        code="subvolume-not-backed-up",
        what=f"machine {client}: {len(unheld)} btrfs subvolume(s) are in no vault, so its backup is incomplete",
        evidence=f"subvolumes the captured layout shows, not mounted of their own: {'; '.join(skipped)}. "
                 "rsync -x (dirvish's xdev) does not cross into a subvolume: it is another st_dev, and its "
                 "folder is copied empty",
        fix=f"add a vault per subvolume: {examples} (rescue's README shows one){leave}",
    )]


def _vault_name(path: str) -> str:
    """A vault name for a subvolume's path: /var/lib/machines -> var-lib-machines."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", path.strip("/")) or "root"
