"""What a person keeps after a restore: the summary text.

The summary says what was restored where, what verification found, and
everything a person must know before booting (UUID changes, a bootloader
that was not installed, files the backup could not give back).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rescue.formats.units import duration, human
from rescue.engine.copyerrors import counted
from rescue.engine.journal import Journal


def summary_text(
    *,
    title: str,
    target: str,
    steps: Sequence[Any],
    journal: Journal,
    ok: bool,
    seconds: float,
    failure: str | None = None,
) -> str:
    missing = unreadable_files(steps, journal)
    names = [p for _, v in missing for p in v]
    count = counted(names)
    if not ok:
        result = "FAILED" + (f" ({failure})" if failure else "")
    elif missing:
        result = (f"INCOMPLETE: {count} could not be read from the backup and are not restored "
                  "(listed below); everything else is restored and verified")
    else:
        result = "OK"
    lines = [
        "rescue restore report",
        "=====================",
        f"what:     {title}" if title else "what:     restore",
        f"target:   {target}",
        f"finished: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        f"result:   {result}",
        f"time:     {duration(seconds)} this run; runs so far: {journal.runs}",
        "",
        "steps:",
    ]
    for i, step in enumerate(steps, 1):
        entry = journal.steps.get(step.key, {})
        state = entry.get("state") or "not run"
        data = entry.get("data") if isinstance(entry.get("data"), dict) else {}
        extra = ""
        if step.kind == "copy" and data.get("method"):
            extra = f" [{data['method']}, {human(data.get('copied_bytes', 0))}, {data.get('copied_files', 0)} inodes]"
        if state == "done" and data.get("attempted") is False:
            # a step that ended without doing its work (no grub to install) is not "done"
            state, extra = "skipped", f"{extra} (not done: {data.get('reason') or 'see the notes'})"
        lines.append(f"  {i:2}. {state:8} {step.describe()}{extra}")
    if missing:
        folders = ("; a name ending in / is a folder, nothing under it restored"
                   if any(p.endswith("/") for p in names) else "")
        lines += ["", f"not restored, the backup could not be read ({count}; paths relative to "
                      f"each filesystem{folders}):"]
        for where, paths in missing:
            lines.append(f"  {where}")
            lines += [f"    {_printable(p)}" for p in paths[:MAX_SHOWN]]
            if len(paths) > MAX_SHOWN:
                lines.append(f"    ... and {len(paths) - MAX_SHOWN} more (all in the journal)")
    notes = journal.all_notes()
    if notes:
        lines += ["", "notes:"]
        lines += [f"  - {n}" for n in notes]
    lines.append("")
    return "\n".join(lines)


MAX_SHOWN = 200  # unreadable files printed per filesystem


def unreadable_files(steps: Sequence[Any], journal: Journal) -> list[tuple[str, list[str]]]:
    """Per restored filesystem ("/home (vault home, image ...)"), the files the backup could not give.

    The copy step lists what cp/rsync could not read; verify adds what it found
    unreadable on its own (a list cut short, a file that failed later).
    """
    out: list[tuple[str, list[str]]] = []
    found = journal.steps.get("verify", {}).get("data", {}).get("unreadable")
    if not isinstance(found, dict):
        found = {}
    for step in steps:
        if getattr(step, "kind", "") != "copy":
            continue
        listed = journal.steps.get(step.key, {}).get("data", {}).get("unreadable")
        where = getattr(step, "mountpoint", step.key)
        extra = found.get(where)
        paths: list[str] = []
        for some in (listed, extra):  # a journal from a damaged disk may hold anything
            if isinstance(some, list):
                paths += [str(p) for p in some if str(p) not in paths]
        if paths:
            out.append((f"{where} (vault {getattr(step, 'vault', '?')}, image {getattr(step, 'image', '?')}):",
                        sorted(dict.fromkeys(paths))))
    return out


def _printable(path: str) -> str:
    """A name as one readable line: control characters shown as \\n, \\t or \\xHH."""
    if path.isprintable():
        return path
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in path)


def write_report(log_dir: Path, text: str, stamp: str | None = None) -> Path:
    log_dir.mkdir(parents=True, exist_ok=True)
    stamp = stamp or time.strftime("%Y%m%d-%H%M%S")
    path = log_dir / f"restore-{stamp}.txt"
    path.write_text(text)
    os.chmod(path, 0o644)
    return path


