"""What cp and rsync said went wrong, as paths a person can read.

A backup disk with bad sectors (or a damaged filesystem) makes some files
unreadable. cp and rsync then print lines such as

    cp: error reading '/backup/dirvish/home/2026-1126-0300/tree/./corpus/a b': Input/output error
    rsync: [sender] read errors mapping "/backup/dirvish/home/.../tree/corpus/a b": Input/output error (5)
    ERROR: corpus/a b failed verification -- update discarded.

The restore report wants `corpus/a b` (relative to the filesystem it belongs
to), once. A line about the target (a mkdir that failed on a disk pulled
out) is not the backup's fault and is kept apart. rsync writes odd bytes as
\\#ooo, cp quotes names like a shell would ('it'\\''s', $'\\n'); both are
decoded back to the real name.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

# Lines that name no file: the summary rsync prints last, and its note that
# --delete was skipped because of the errors above.
NOISE = ("rsync error:", "IO error encountered", "rsync warning:")
_VERIFY = re.compile(r"^ERROR: (?P<rel>.+) failed verification -- update (?:discarded|retained)")
_RSYNC_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
_RSYNC_ESCAPE = re.compile(rb"\\#([0-7]{3})")


@dataclass(frozen=True)
class CopyErrors:
    unreadable: tuple[str, ...]  # paths relative to the image tree that could not be read
    target: tuple[str, ...]  # lines about the target side (write errors): not the backup's fault
    other: tuple[str, ...]  # lines naming no path rescue can place


def classify(lines: Iterable[str], source: Path | str, dest: Path | str) -> CopyErrors:
    """Sort cp/rsync error lines into unreadable backup paths, target problems and the rest."""
    sources = _prefixes(source)
    dests = _prefixes(dest)
    unreadable: list[str] = []
    target: list[str] = []
    other: list[str] = []
    for line in lines:
        line = line.rstrip("\n")
        if not line.strip() or line.startswith(NOISE):
            continue
        m = _VERIFY.match(line)
        if m:
            rel = _clean_rel(rsync_unescape(m.group("rel")))
            (unreadable.append(rel) if rel else other.append(line))
            continue
        names = _names_in(line)
        placed = False
        for name in names:
            rel = _relative(name, dests)
            if rel is not None:
                target.append(line)
                placed = True
                break
            rel = _relative(name, sources)
            if rel is not None and rel:
                unreadable.append(rel)
                placed = True
                break
        if not placed:
            other.append(line)
    return CopyErrors(tuple(dict.fromkeys(unreadable)), tuple(target), tuple(other))


def _names_in(line: str) -> list[str]:
    """The file names quoted in one cp or rsync line (decoded)."""
    if line.startswith("cp: "):
        return [n for n in _shell_words(line[4:]) if n]
    return [rsync_unescape(m.group(1)) for m in _RSYNC_QUOTED.finditer(line)]


def rsync_unescape(text: str) -> str:
    """rsync's \\#ooo escapes (bytes it will not print) back to the real name."""
    raw = text.encode("utf-8", "surrogateescape")
    return os.fsdecode(_RSYNC_ESCAPE.sub(lambda m: bytes([int(m.group(1), 8)]), raw))


_C_ESCAPES = {"n": b"\n", "t": b"\t", "r": b"\r", "a": b"\a", "b": b"\b", "f": b"\f", "v": b"\v",
              "e": b"\x1b", "\\": b"\\", "'": b"'", '"': b'"', "?": b"?"}


def _shell_words(text: str) -> list[str]:
    """Every shell-quoted word in a cp message ('a b', 'it'\\''s', 'x'$'\\n''y'), decoded."""
    words: list[str] = []
    i, n = 0, len(text)
    while i < n:
        if text[i] == "'" or text.startswith("$'", i):
            word = bytearray()
            while i < n and (text[i] == "'" or text.startswith("$'", i) or text.startswith("\\'", i)):
                if text.startswith("\\'", i):
                    word += b"'"
                    i += 2
                elif text[i] == "'":
                    j = text.find("'", i + 1)
                    if j < 0:
                        return words
                    word += text[i + 1:j].encode("utf-8", "surrogateescape")
                    i = j + 1
                else:  # $'...' with C escapes
                    i += 2
                    while i < n and text[i] != "'":
                        if text[i] == "\\" and i + 1 < n:
                            c = text[i + 1]
                            octal = re.match(r"[0-7]{1,3}", text[i + 1:i + 4])
                            if octal:
                                word.append(int(octal.group(0), 8) & 0xFF)
                                i += 1 + len(octal.group(0))
                            elif c == "x" and re.match(r"[0-9a-fA-F]{1,2}", text[i + 2:i + 4]):
                                hx = re.match(r"[0-9a-fA-F]{1,2}", text[i + 2:i + 4]).group(0)  # type: ignore[union-attr]
                                word.append(int(hx, 16))
                                i += 2 + len(hx)
                            else:
                                word += _C_ESCAPES.get(c, c.encode())
                                i += 2
                        else:
                            word += text[i].encode("utf-8", "surrogateescape")
                            i += 1
                    i += 1
            words.append(os.fsdecode(bytes(word)))
        else:
            i += 1
    return words


def _prefixes(path: Path | str) -> list[str]:
    p = str(path).rstrip("/") or "/"
    out = [p]
    real = os.path.realpath(p)
    if real != p:
        out.append(real)
    return out


def _relative(name: str, prefixes: list[str]) -> str | None:
    """name relative to one of the prefixes ("" for the top itself), or None if outside all."""
    for pre in prefixes:
        if name == pre:
            return ""
        if name.startswith(pre + "/"):
            return _clean_rel(name[len(pre) + 1:])
    return None


def _clean_rel(rel: str) -> str:
    """'./a//b/' -> 'a/b'; '' for the top. Never leads out ('..' parts are dropped)."""
    parts = [p for p in rel.split("/") if p not in ("", ".", "..")]
    return "/".join(parts)


def drop_partial_copies(dest: Path, rels: Iterable[str]) -> list[str]:
    """Remove what a failed copy left at `dest` of files it could not read, hard links included.

    A half-written file is worse than a missing one (a program reads garbage
    without a word); the report lists what is missing. Only regular files
    inside `dest` are removed (never through a symlink). Returns what was removed,
    relative to dest.
    """
    top = os.path.realpath(dest)
    removed: list[str] = []
    inodes: set[tuple[int, int]] = set()
    times: dict[str, tuple[int, int]] = {}  # folder -> (atime, mtime) as the copy set them

    def unlink(path: str) -> None:
        parent = os.path.dirname(path)
        if parent not in times:
            st = os.lstat(parent)
            times[parent] = (st.st_atime_ns, st.st_mtime_ns)
        os.unlink(path)
        removed.append(os.path.relpath(path, top))

    for rel in rels:
        rel = _clean_rel(rel)
        if not rel:
            continue
        path = os.path.join(top, rel)
        parent = os.path.realpath(os.path.dirname(path))
        if parent != top and not parent.startswith(top + "/"):
            continue
        path = os.path.join(parent, os.path.basename(path))
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if not _is_reg(st.st_mode):
            continue
        if st.st_nlink > 1:
            inodes.add((st.st_dev, st.st_ino))
        unlink(path)
    if inodes:
        # cp linked the other names of a hard-linked file to its partial copy: find them.
        dev = os.lstat(top).st_dev
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = [d for d in dirnames if os.lstat(os.path.join(dirpath, d)).st_dev == dev]
            for f in filenames:
                p = os.path.join(dirpath, f)
                try:
                    st = os.lstat(p)
                except OSError:
                    continue
                if _is_reg(st.st_mode) and (st.st_dev, st.st_ino) in inodes:
                    unlink(p)
    for folder, (atime, mtime) in times.items():  # the folder's time stays the backup's
        os.utime(folder, ns=(atime, mtime), follow_symlinks=False)
    return removed


def _is_reg(mode: int) -> bool:
    import stat

    return stat.S_ISREG(mode)


def mark_folders(tree: Path | str, rels: Iterable[str]) -> list[str]:
    """The names with a "/" after each that is a folder of `tree` (a folder the backup
    cannot give back loses everything under it: the report should say so). Its parent's
    listing says so without looking at the folder itself, which may fail."""
    out = []
    kinds: dict[str, dict[str, bool]] = {}
    for rel in rels:
        if rel.endswith("/") or rel.startswith("(not a file name)"):
            out.append(rel)
            continue
        parent, _, name = rel.rpartition("/")
        if parent not in kinds:
            try:
                with os.scandir(os.path.join(tree, parent)) as it:
                    kinds[parent] = {e.name: e.is_dir(follow_symlinks=False) for e in it}
            except OSError:
                kinds[parent] = {}
        out.append(rel + "/" if kinds[parent].get(name) else rel)
    return out


def unmarked(rel: str) -> str:
    """A name as mark_folders got it."""
    return rel[:-1] if rel.endswith("/") else rel


def counted(rels: list[str]) -> str:
    """"3 file(s)", "1 folder(s)" or "3 file(s) and 1 folder(s)" for marked names."""
    folders = sum(1 for r in rels if r.endswith("/"))
    files = len(rels) - folders
    words = [f"{files} file(s)"] if files or not folders else []
    return " and ".join(words + ([f"{folders} folder(s)"] if folders else []))
