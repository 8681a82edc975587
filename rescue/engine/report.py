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
    lines = [
        "rescue restore report",
        "=====================",
        f"what:     {title}" if title else "what:     restore",
        f"target:   {target}",
        f"finished: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        f"result:   {'OK' if ok else 'FAILED'}" + (f" ({failure})" if failure else ""),
        f"time:     {_duration(seconds)} this run; runs so far: {journal.runs}",
        "",
        "steps:",
    ]
    for i, step in enumerate(steps, 1):
        entry = journal.steps.get(step.key, {})
        state = entry.get("state") or "not run"
        extra = ""
        if step.kind == "copy" and entry.get("data", {}).get("method"):
            d = entry["data"]
            extra = f" [{d['method']}, {_size(d.get('copied_bytes', 0))}, {d.get('copied_files', 0)} inodes]"
        lines.append(f"  {i:2}. {state:8} {step.describe()}{extra}")
    notes = journal.all_notes()
    if notes:
        lines += ["", "notes:"]
        lines += [f"  - {n}" for n in notes]
    lines.append("")
    return "\n".join(lines)


def write_report(log_dir: Path, text: str, stamp: str | None = None) -> Path:
    log_dir.mkdir(parents=True, exist_ok=True)
    stamp = stamp or time.strftime("%Y%m%d-%H%M%S")
    path = log_dir / f"restore-{stamp}.txt"
    path.write_text(text)
    os.chmod(path, 0o644)
    return path


def _duration(s: float) -> str:
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02}m{s % 60:02}s" if s >= 3600 else f"{s // 60}m{s % 60:02}s"


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)
