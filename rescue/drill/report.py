"""The drill's record: phases with their time, what each checked, pass or fail.

Printed at the end of `rescue drill` and saved as report.json beside the
serial logs, so a failed drill leaves its evidence behind.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rescue.errors import RescueError
from rescue.qemu import plain

Say = Callable[[str], None]


@dataclass(frozen=True)
class Check:
    what: str
    ok: bool
    expected: str = ""
    got: str = ""

    def line(self) -> str:
        mark = "ok  " if self.ok else "FAIL"
        detail = "" if self.ok or not (self.expected or self.got) else \
            f" (expected {self.expected or '-'}, got {self.got or 'nothing'})"
        return f"{mark} {self.what}{detail}"


@dataclass
class Phase:
    name: str
    seconds: float = 0.0
    ok: bool = True
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None

    def check(self, what: str, ok: bool, expected: str = "", got: str = "") -> Check:
        c = Check(what, ok, expected, got)
        self.checks.append(c)
        if not ok:
            self.ok = False
        return c


@dataclass
class Run:
    """One drill: a firmware (or a real bank) and its phases."""

    title: str
    phases: list[Phase] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)  # serial logs and other evidence

    @property
    def ok(self) -> bool:
        return bool(self.phases) and all(p.ok for p in self.phases)

    @property
    def seconds(self) -> float:
        return sum(p.seconds for p in self.phases)

    @contextlib.contextmanager
    def phase(self, name: str, say: Say) -> Iterator[Phase]:
        """Time a phase; a RescueError inside marks it failed and is re-raised as PhaseFailed."""
        ph = Phase(name)
        self.phases.append(ph)
        say(f"[{self.title}] {name} ...")
        start = time.monotonic()
        try:
            yield ph
        except RescueError as e:
            ph.ok = False
            ph.error = str(e)
            say(f"[{self.title}] {name}: FAILED")
            raise PhaseFailed(self.title, name, str(e)) from e
        except Exception as e:  # noqa: BLE001 - a drill reports every failure, never a traceback
            ph.ok = False
            ph.error = f"unexpected error: {e!r}"
            say(f"[{self.title}] {name}: FAILED")
            raise PhaseFailed(self.title, name, ph.error) from e
        finally:
            ph.seconds = time.monotonic() - start
        if not ph.ok:
            bad = [c.line() for c in ph.checks if not c.ok]
            say(f"[{self.title}] {name}: FAILED after {ph.seconds:.0f} s")
            raise PhaseFailed(self.title, name, "; ".join(bad))
        say(f"[{self.title}] {name}: ok ({ph.seconds:.0f} s)")


class PhaseFailed(RescueError):
    def __init__(self, title: str, phase: str, why: str) -> None:
        super().__init__(f"drill {title}: {phase} failed", why=why)


@dataclass
class Report:
    runs: list[Run] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        ran = [r for r in self.runs if r.phases]
        return bool(ran) and all(r.ok for r in ran)

    def render(self) -> str:
        out = []
        for r in self.runs:
            if not r.phases:
                continue
            out.append(f"drill {r.title}: {'PASSED' if r.ok else 'FAILED'} in {r.seconds:.0f} s")
            for p in r.phases:
                out.append(f"  {'ok  ' if p.ok else 'FAIL'} {p.name:<28} {p.seconds:7.1f} s")
                for n in p.notes:
                    out.append(f"         {n}")
                for c in p.checks:
                    out.append(f"         {c.line()}")
                if p.error:
                    for line in plain(p.error).splitlines()[:12]:
                        out.append(f"         ! {line}")
            if not r.ok and r.logs:
                out.append("  evidence kept:")
                out.extend(f"    {log}" for log in r.logs)
        out.append(f"rescue drill: {'all passed' if self.ok else 'FAILED'}")
        # errors, notes and checks quote serial consoles: their colours and cursor moves stay there
        return plain("\n".join(out))

    def save(self, path: Path) -> None:
        path.write_text(json.dumps([_plain(asdict(r)) for r in self.runs], indent=2) + "\n")


def _plain(value: Any) -> Any:
    """Every string in a report record without terminal escapes (see plain)."""
    if isinstance(value, str):
        return plain(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
