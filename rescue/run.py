"""The one gateway from rescue to the operating system's commands.

argv lists only (never a shell string), a fixed environment, every command
logged as a `+ cmd` line, and one typed error carrying argv, exit code and
stderr. Nothing else in rescue calls subprocess directly.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from rescue.errors import RescueError

log = logging.getLogger("rescue.run")

Arg = str | os.PathLike[str]

# A fixed, predictable environment: C locale so tools print what parsers expect.
BASE_ENV: Mapping[str, str] = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "HOME": "/root",
}


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


class CommandError(RescueError):
    """A command exited non-zero (or could not start)."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str) -> None:
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stderr = stderr
        tail = stderr.strip().splitlines()[-5:]
        super().__init__(
            f"command failed (exit {returncode}): {shlex.join(self.argv)}",
            why="\n       ".join(tail) if tail else None,
        )


class CommandNotFound(CommandError):
    def __init__(self, argv: Sequence[str]) -> None:
        super().__init__(argv, 127, f"{argv[0]}: not found")
        self.fix = f"install the package that provides {argv[0]} (scripts/setup.sh installs all of them)"


class CommandTimedOut(CommandError):
    def __init__(self, argv: Sequence[str], timeout: float, stderr: str) -> None:
        super().__init__(argv, 124, stderr or f"no answer within {timeout:g} s")
        self.what = f"command did not finish within {timeout:g} s: {shlex.join(self.argv)}"
        self.fix = "check that the device or host it talks to still answers"


def _argv(argv: Sequence[Arg]) -> list[str]:
    if isinstance(argv, (str, bytes)):
        raise TypeError("run() takes an argv list, never a shell string")
    return [os.fspath(a) for a in argv]


def _env(extra: Mapping[str, str] | None) -> dict[str, str]:
    env = dict(BASE_ENV)
    if extra:
        env.update(extra)
    return env


def run(
    argv: Sequence[Arg],
    *,
    input: str | bytes | None = None,
    check: bool = True,
    env: Mapping[str, str] | None = None,
    cwd: Arg | None = None,
    timeout: float | None = None,
    binary: bool = False,
) -> Result:
    """Run a command to completion and return its output.

    check=True raises CommandError on a non-zero exit. binary=True keeps
    stdout as latin-1 decoded text so no byte is lost (raw dumps).
    """
    args = _argv(argv)
    log.debug("+ %s", shlex.join(args))
    data = input.encode() if isinstance(input, str) else input
    try:
        proc = subprocess.run(
            args,
            input=data,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=_env(env),
            cwd=os.fspath(cwd) if cwd is not None else None,
            timeout=timeout,
            stdin=None if data is not None else subprocess.DEVNULL,
        )
    except FileNotFoundError:
        raise CommandNotFound(args) from None
    except subprocess.TimeoutExpired as e:
        err = (e.stderr or b"").decode("utf-8", errors="replace")
        raise CommandTimedOut(args, timeout or 0, err) from None
    enc = "latin-1" if binary else "utf-8"
    result = Result(
        tuple(args),
        proc.returncode,
        proc.stdout.decode(enc, errors="surrogateescape"),
        proc.stderr.decode("utf-8", errors="replace"),
    )
    if check and proc.returncode != 0:
        raise CommandError(args, proc.returncode, result.stderr)
    return result


def spawn(
    argv: Sequence[Arg],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Arg | None = None,
    stdout: int | None = subprocess.PIPE,
    stderr: int | None = subprocess.PIPE,
    stdin: int | IO[bytes] | None = subprocess.DEVNULL,  # a file: another child's output (a pipe)
) -> subprocess.Popen[bytes]:
    """Start a long-running command (copy, qemu) whose output is streamed."""
    args = _argv(argv)
    log.debug("+ %s &", shlex.join(args))
    try:
        return subprocess.Popen(
            args,
            env=_env(env),
            cwd=os.fspath(cwd) if cwd is not None else None,
            stdout=stdout,
            stderr=stderr,
            stdin=stdin,
            start_new_session=True,
        )
    except FileNotFoundError:
        raise CommandNotFound(args) from None


def interactive(argv: Sequence[Arg], *, cwd: Arg, env: Mapping[str, str] | None = None) -> int:
    """Hand this terminal to a person's program (the rescue shell) until it ends.

    Unlike spawn(), it stays in this session so the terminal is its controlling
    terminal (job control works), and it keeps the terminal's TERM (a fixed
    environment has none: a shell with TERM=dumb cannot edit a line)."""
    args = _argv(argv)
    log.debug("+ %s (interactive)", shlex.join(args))
    term = os.environ.get("TERM", "")
    extra = {"TERM": term if term and term != "dumb" else "linux", "HOME": os.fspath(cwd), **(env or {})}
    try:
        return subprocess.run(args, env=_env(extra), cwd=os.fspath(cwd), check=False).returncode
    except FileNotFoundError:
        raise CommandNotFound(args) from None


def which(name: str) -> Path | None:
    """Where a command lives on rescue's fixed PATH, or None."""
    for d in BASE_ENV["PATH"].split(":"):
        p = Path(d) / name
        if p.is_file() and os.access(p, os.X_OK):
            return p
    return None
