"""The throwaway sshd's facts and helpers (the fixture is in conftest.py)."""

from __future__ import annotations

import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

SSHD = "/usr/sbin/sshd"


@dataclass(frozen=True)
class Sshd:
    port: int
    ssh: Path  # the ssh wrapper: real ssh with the test's config
    known_hosts: Path
    host_key: Path
    folder: Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "rescue-test", "-f", str(path)],
                   check=True)
