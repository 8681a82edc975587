"""Integration tier: root, real loop devices, real tools. It fails, never skips."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest_ssh import SSHD, Sshd, free_port, keygen

NEEDED = ("losetup", "sfdisk", "mkfs.ext4", "mkfs.xfs", "mkfs.btrfs", "rsync", "dirvish", "blkid")


@pytest.fixture(scope="session", autouse=True)
def _integration_tier_can_run() -> None:
    problems = []
    if os.geteuid() != 0:
        problems.append("not root")
    if not Path("/dev/loop-control").exists():
        problems.append("no /dev/loop-control (loop devices)")
    missing = [t for t in NEEDED if shutil.which(t, path="/usr/sbin:/usr/bin:/sbin:/bin") is None]
    if missing:
        problems.append("missing tools: " + ", ".join(missing) + " (run scripts/setup.sh)")
    if problems:
        pytest.fail("integration tier cannot run: " + "; ".join(problems), pytrace=False)


@pytest.fixture
def sshd_extra() -> str:
    """More sshd_config lines for a test module's sshd (override the fixture there)."""
    return ""


@pytest.fixture
def sshd(tmp_path: Path, sshd_extra: str) -> Iterator[Sshd]:
    """The real sshd (openssh-server) with a config of its own: a throwaway host key, a throwaway
    user key in its own authorized_keys, on a free port of the loopback address only. The client
    side is the real ssh with a config file of the test's (port, key, known_hosts), passed by a
    two-line wrapper given as --ssh-command, because ssh reads ~/.ssh/config from the passwd home,
    not from $HOME. Nothing of the host's own ssh configuration or keys is read or written."""
    if not os.path.exists(SSHD):
        pytest.fail("sshd missing (package openssh-server; scripts/setup.sh installs it)", pytrace=False)
    d = tmp_path / "ssh"
    d.mkdir()
    keygen(d / "host_key")
    keygen(d / "user_key")
    (d / "authorized_keys").write_text((d / "user_key.pub").read_text())
    port = free_port()
    (d / "sshd_config").write_text(f"""\
ListenAddress 127.0.0.1
Port {port}
HostKey {d / 'host_key'}
AuthorizedKeysFile {d / 'authorized_keys'}
PidFile {d / 'sshd.pid'}
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
{sshd_extra}""")
    known = d / "known_hosts"
    known.write_text(f"laptop {(d / 'host_key.pub').read_text().split(' ', 2)[0]} "
                     f"{(d / 'host_key.pub').read_text().split()[1]}\n")
    (d / "ssh_config").write_text(f"""\
Host laptop
  HostName 127.0.0.1
  Port {port}
  User root
  HostKeyAlias laptop
  IdentityFile {d / 'user_key'}
  IdentitiesOnly yes
  UserKnownHostsFile {known}
  GlobalKnownHostsFile /dev/null
""")
    ssh = d / "ssh"
    ssh.write_text(f'#!/bin/sh\nexec ssh -F {d / "ssh_config"} "$@"\n')
    ssh.chmod(0o755)
    os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege separation folder
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(d / "sshd_config")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"sshd did not start: {proc.stdout.read().decode() if proc.stdout else ''}")
            time.sleep(0.1)
        yield Sshd(port, ssh, known, d / "host_key", d)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def rescue_image() -> Path:
    """The rescue root image, built once and cached (/var/cache/rescue/image) for prepare-disk's tests."""
    from rescue.image.build import ensure_image

    image, _ = ensure_image()
    return image
