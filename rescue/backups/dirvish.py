"""Dirvish banks read as data: bank/vault/image/{summary,tree/,log,rescue/}.

A bank is read, never trusted: names may hold newlines or shell
metacharacters, a summary may hold `$(...)`, links may point out of the
bank. Nothing read here is executed, a link is followed only when its target
stays inside the bank, and names are shown escaped (see `shown`).

Reading is cheap on purpose (one directory listing per image, the summary,
and the last few KiB of the log for rsync's statistics) so that `rescue
list` over a thousand images stays well under a second.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from rescue.backups.model import Image, ImageStatus, SourceKind, Vault
from rescue.errors import BackupError

SUMMARY_MAX = 1 << 20  # a real summary is a few KiB; anything bigger is not read past this
LOG_TAIL = 4096  # rsync --stats is the last ~1 KiB of an image's log
LAYOUT_FILE = "layout.json"


# --------------------------------------------------------------------------- names and paths


def shown(name: str) -> str:
    """A name made safe to print on one console line: control characters and
    undecodable bytes escaped, anything a shell would treat specially quoted."""
    text = printable(name)
    if text and re.fullmatch(r"[\w@%+=:,./-]+", text):
        return text
    return "'" + text.replace("'", "'\\''") + "'"


def printable(name: str) -> str:
    """Text with control characters and undecodable bytes escaped, nothing quoted."""
    out = []
    for ch in name:
        o = ord(ch)
        if 0xDC80 <= o <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
            out.append(f"\\x{o - 0xDC00:02x}")
        elif ch == "\\":
            out.append("\\\\")
        elif ch.isprintable():
            out.append(ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif o < 0x100:
            out.append(f"\\x{o:02x}")
        else:
            out.append(f"\\u{o:04x}")
    return "".join(out)


def within(root: Path, path: Path) -> Path | None:
    """`path` with links resolved, or None when it leaves `root` (already resolved)."""
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if real == root or root in real.parents:
        return real
    return None


@dataclass
class Notes:
    """What discovery skipped or could not read, told to the person, never fatal."""

    lines: list[str] = field(default_factory=list)

    def add(self, text: str) -> None:
        self.lines.append(text)


# --------------------------------------------------------------------------- config files


_COMMENT = re.compile(r"\s*#.*$")
_KEY = re.compile(r"([A-Za-z][\w-]*):\s*(.*)$")


def parse_config(text: str) -> dict[str, str | list[str]]:
    """Dirvish's `key: value` / `key:` + indented list format (summary,
    default.conf, master.conf). SET/UNSET lines become lists under 'SET'/'UNSET'.
    Later scalars win; comments (#) are dropped as dirvish does."""
    data: dict[str, str | list[str]] = {}
    current: list[str] | None = None
    for raw in text.splitlines():
        if raw[:1] in (" ", "\t"):
            value = raw.strip()
            if current is not None and value and not value.startswith("#"):
                current.append(value)
            continue
        current = None
        line = _COMMENT.sub("", raw) if "#" in raw and not raw.startswith(("ACTION:", "Status:")) else raw
        line = line.rstrip()
        if not line:
            continue
        if line.startswith(("SET ", "UNSET ")):
            word, _, rest = line.partition(" ")
            data[word] = rest.split()
            continue
        m = _KEY.match(line)
        if not m:
            continue
        key, value = m.group(1), m.group(2)
        if value:
            data[key] = value
        else:
            current = []
            data[key] = current
    return data


def _scalar(data: dict[str, str | list[str]], key: str) -> str:
    v = data.get(key)
    return v if isinstance(v, str) else ""


def _listed(data: dict[str, str | list[str]], key: str) -> tuple[str, ...]:
    v = data.get(key)
    if isinstance(v, list):
        return tuple(v)
    return (v,) if v else ()


def banks_from_master(config: Path) -> tuple[Path, ...]:
    """The `bank:` list of a dirvish master.conf (/etc/dirvish/master.conf)."""
    try:
        text = _read(config, SUMMARY_MAX)
    except OSError as e:
        raise BackupError(
            f"cannot read the dirvish configuration {shown(str(config))}",
            why=e.strerror or str(e),
            fix="give the bank folders with --bank DIR, or the config with --config FILE",
        ) from None
    banks = tuple(Path(b) for b in _listed(parse_config(text), "bank"))
    if not banks:
        raise BackupError(
            f"{shown(str(config))} names no bank",
            why="dirvish's master.conf lists its banks under 'bank:'",
            fix="give the bank folders with --bank DIR",
        )
    return banks


def _read(path: Path, limit: int) -> str:
    with open(path, "rb") as f:
        return f.read(limit).decode("utf-8", errors="surrogateescape")


# --------------------------------------------------------------------------- dates


_DATE_FORMS = tuple(re.compile(r) for r in (
    r"(\d{4})-(\d\d)(\d\d)(?:-(\d\d)(\d\d)(\d\d)?)?",  # dirvish names: 2026-1126-0300
    r"(\d{4})(\d\d)(\d\d)(?:(\d\d)(\d\d)(\d\d)?)?",  # 20261126030000 (dirvish's default)
    r"(\d{4})-(\d\d)-(\d\d)(?:[T _](\d\d)[:-](\d\d)(?:[:-](\d\d))?)?",  # ISO, Image-now
))


def parse_date(text: str) -> tuple[datetime, bool] | None:
    """A dirvish image name (2026-1126-0300) or an ISO date/time -> (moment, has_time).

    A date without a time means the whole day, so callers compare against its end.
    Regular expressions, not strptime: this runs for every image of a bank."""
    text = text.strip()
    for form in _DATE_FORMS:
        m = form.fullmatch(text)
        if m:
            try:
                moment = datetime(*(int(g) for g in m.groups() if g is not None))
            except (TypeError, ValueError):
                return None
            return moment, m.group(4) is not None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment.replace(tzinfo=None), ("T" in text or " " in text)


def expires(value: str | None) -> str | None:
    """The summary's Expire: ('+15 days == 2026-12-10 03:00:00' or 'Never') as ISO, "never" or None."""
    if not value:
        return None
    if value.strip().lower() == "never":
        return "never"
    parsed = parse_date(value.rpartition("==")[2].strip())
    return parsed[0].isoformat(timespec="seconds") if parsed else None


def _created(summary: dict[str, str | list[str]], name: str, path: Path) -> str | None:
    now = _scalar(summary, "Image-now")
    if now:
        parsed = parse_date(now)
        if parsed:
            return parsed[0].isoformat(timespec="seconds")
    parsed = parse_date(name)
    if parsed:
        return parsed[0].isoformat(timespec="seconds")
    try:
        return datetime.fromtimestamp(path.lstat().st_mtime).isoformat(timespec="seconds")
    except OSError:
        return None


# --------------------------------------------------------------------------- rsync statistics


def rsync_stats(text: str) -> tuple[int | None, int | None]:
    """(Total file size, Number of files) from the tail of rsync --stats output."""
    size = files = None
    for m in re.finditer(r"^Total file size: (\d[\d,.]*) bytes", text, re.M):
        size = int(re.sub(r"[,.]", "", m.group(1)))
    for m in re.finditer(r"^Number of files: (\d[\d,.]*)", text, re.M):
        files = int(re.sub(r"[,.]", "", m.group(1)))
    return size, files


def _log_stats(path: Path) -> tuple[int | None, int | None]:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            end = f.tell()
            f.seek(max(0, end - LOG_TAIL))
            return rsync_stats(f.read(LOG_TAIL).decode("utf-8", errors="replace"))
    except OSError:
        return None, None


# --------------------------------------------------------------------------- images and vaults


def read_image(bank: Path, vault: str, image_dir: Path, default_client: str = "",
               default_source: str = "", notes: Notes | None = None) -> Image | None:
    """One dirvish image folder as an Image (None when the folder has neither
    a summary nor a tree/, so is no image). `bank` must be resolved;
    `image_dir` must already be known to lie inside it."""
    notes = notes or Notes()
    name = image_dir.name
    entries: dict[str, os.DirEntry[str]] = {}
    try:
        with os.scandir(image_dir) as it:
            for e in it:
                entries[e.name] = e
    except OSError as e:
        notes.add(f"{shown(str(image_dir))}: cannot be read ({e.strerror})")
    if "summary" not in entries and "tree" not in entries:
        return None

    def inside(entry_name: str) -> Path | None:
        e = entries.get(entry_name)
        if e is None:
            return None
        p = image_dir / entry_name
        if e.is_symlink():
            real = within(bank, p)
            if real is None:
                notes.add(f"{shown(str(p))}: a link out of the bank, not followed")
            return real
        return p

    def kind(entry_name: str, path: Path | None) -> str:
        """'dir', 'file' or '' without a second stat when the listing already says."""
        if path is None:
            return ""
        e = entries[entry_name]
        if e.is_symlink():
            return "dir" if path.is_dir() else "file" if path.is_file() else ""
        return "dir" if e.is_dir(follow_symlinks=False) else "file" if e.is_file(follow_symlinks=False) else ""

    summary: dict[str, str | list[str]] = {}
    summary_path = inside("summary")
    has_summary = False
    if kind("summary", summary_path) == "file":
        try:
            summary = parse_config(_read(summary_path, SUMMARY_MAX))
            has_summary = True
        except OSError as e:
            notes.add(f"{shown(str(summary_path))}: cannot be read ({e.strerror})")

    tree = inside("tree")
    tree_ok = kind("tree", tree) == "dir"
    status_text = _scalar(summary, "Status")
    if not has_summary:
        status, status_text = ImageStatus.INCOMPLETE, "no summary: still being written, or the run died"
    elif not status_text:
        status, status_text = ImageStatus.INCOMPLETE, "summary has no Status: still running, or the run died"
    elif status_text.strip() != "success" and not status_text.startswith("warning (24)"):
        status = ImageStatus.FAILED
    elif not tree_ok:
        status, status_text = ImageStatus.FAILED, f"{status_text.strip()}, but the image has no tree/"
    elif status_text.startswith("warning"):
        status = ImageStatus.WARNING
    else:
        status = ImageStatus.SUCCESS

    layout_dir = None
    rescue_dir = inside("rescue")
    if kind("rescue", rescue_dir) == "dir" and _layout_inside(bank, rescue_dir / LAYOUT_FILE):
        layout_dir = rescue_dir
    elif any(_LEGACY_DF.fullmatch(n) for n in entries):
        layout_dir = image_dir  # the original hand-written hook's df.N files

    size = files = None
    log = inside("log")
    if log is not None:
        size, files = _log_stats(log)

    reference = _scalar(summary, "Reference") or None
    return Image(
        kind=SourceKind.DIRVISH,
        bank=bank,
        vault=vault,
        name=name,
        path=image_dir,
        tree=tree if tree is not None else image_dir / "tree",
        client=_scalar(summary, "client") or default_client,
        source=_scalar(summary, "tree") or default_source,
        status=status,
        status_text=status_text,
        created=_created(summary, name, image_dir),
        expires=expires(_scalar(summary, "Expire")),
        reference=reference,
        rsync_options=_listed(summary, "rsync-option"),
        excludes=_listed(summary, "exclude"),
        layout_dir=layout_dir,
        flags=_listed(summary, "SET"),
        size=size,
        files=files,
    )


_LEGACY_DF = re.compile(r"df\.\w+")


def _layout_inside(bank: Path, path: Path) -> bool:
    try:
        st = os.lstat(path)
    except OSError:
        return False
    if stat.S_ISLNK(st.st_mode):
        return within(bank, path) is not None
    return stat.S_ISREG(st.st_mode)


def _image_key(image: Image) -> tuple[str, str]:
    return (image.created or "", image.name)


def read_vault(bank: Path, vault_dir: Path, notes: Notes | None = None) -> Vault | None:
    """A vault folder (resolved, inside `bank`), or None when it is not a vault."""
    notes = notes or Notes()
    conf: dict[str, str | list[str]] = {}
    conf_path = vault_dir / "dirvish" / "default.conf"
    real_conf = within(bank, conf_path) if os.path.lexists(conf_path) else None
    if real_conf is not None and real_conf.is_file():
        try:
            conf = parse_config(_read(real_conf, SUMMARY_MAX))
        except OSError:
            pass
    elif os.path.lexists(conf_path):
        notes.add(f"{shown(str(conf_path))}: a link out of the bank, not followed")
    images = []
    try:
        entries = sorted(os.scandir(vault_dir), key=lambda e: e.name)
    except OSError as e:
        notes.add(f"{shown(str(vault_dir))}: cannot be read ({e.strerror})")
        return None
    for e in entries:
        if e.name == "dirvish":
            continue
        path = vault_dir / e.name
        if e.is_symlink():
            if within(bank, path) is None:
                notes.add(f"{shown(str(path))}: a link out of the bank, not followed")
                continue
            notes.add(f"{shown(str(path))}: a link, not followed (an image is listed under its own name)")
            continue
        if not e.is_dir(follow_symlinks=False):
            continue
        image = read_image(bank, vault_dir.name, path, _scalar(conf, "client"), _scalar(conf, "tree"), notes)
        if image is not None:
            images.append(image)
    if not images and not conf:
        return None
    return Vault(
        bank=bank,
        name=vault_dir.name,
        images=tuple(sorted(images, key=_image_key)),
        kind=SourceKind.DIRVISH,
        configured_client=_scalar(conf, "client") or None,
        configured_source=_scalar(conf, "tree") or None,
        configured_xdev=_flag(_scalar(conf, "xdev")),
    )


def _flag(value: str) -> bool | None:
    """A dirvish boolean option: 1/true/yes or 0/false/no; None when not given."""
    v = value.strip().lower()
    return True if v in ("1", "true", "yes", "on") else False if v in ("0", "false", "no", "off") else None


def scan_bank(bank: Path, notes: Notes | None = None) -> tuple[Vault, ...]:
    """Every vault of one dirvish bank, sorted by name."""
    notes = notes or Notes()
    try:
        root = bank.resolve(strict=True)
    except (OSError, RuntimeError):
        raise BackupError(
            f"bank {shown(str(bank))} does not exist",
            why="a dirvish bank is the folder that holds the vaults",
            fix="check the path (is the backup disk mounted?), or give another with --bank DIR",
        ) from None
    if not root.is_dir():
        raise BackupError(f"bank {shown(str(bank))} is not a folder",
                          fix="give the folder that holds the vaults with --bank DIR")
    vaults = []
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError as e:
        raise BackupError(f"bank {shown(str(bank))} cannot be read", why=e.strerror,
                          fix="run rescue as root, or check the backup disk") from None
    for e in entries:
        path = root / e.name
        if e.is_symlink():
            notes.add(f"{shown(str(path))}: a link in the bank, not followed")
            continue
        if not e.is_dir(follow_symlinks=False):
            continue
        vault = read_vault(root, path, notes)
        if vault is not None:
            vaults.append(vault)
    return tuple(vaults)


def scan_banks(banks: Iterable[Path], notes: Notes | None = None) -> tuple[Vault, ...]:
    notes = notes or Notes()
    out: list[Vault] = []
    for bank in banks:
        out.extend(scan_bank(bank, notes))
    return tuple(out)
