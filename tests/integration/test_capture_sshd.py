"""`rescue capture --ssh` against a real sshd on 127.0.0.1.

The sshd (openssh-server) runs with a config of its own: a throwaway host
key, a throwaway user key in its own authorized_keys, on a free port of the
loopback address only. The client side is the real ssh with a config file of
the test's (port, key, known_hosts), passed by a two-line wrapper given as
--ssh-command, because ssh reads ~/.ssh/config from the passwd home, not from
$HOME. Nothing of the host's own ssh configuration or keys is read or written.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from rescue.layout import Layout

SSHD = "/usr/sbin/sshd"


@dataclass(frozen=True)
class Sshd:
    port: int
    ssh: Path  # the ssh wrapper: real ssh with the test's config
    known_hosts: Path
    host_key: Path
    folder: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "rescue-test", "-f", str(path)],
                   check=True)


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[Sshd]:
    if not os.path.exists(SSHD):
        pytest.fail("sshd missing (package openssh-server; scripts/setup.sh installs it)", pytrace=False)
    d = tmp_path / "ssh"
    d.mkdir()
    _keygen(d / "host_key")
    _keygen(d / "user_key")
    (d / "authorized_keys").write_text((d / "user_key.pub").read_text())
    port = _free_port()
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
""")
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


def rescue(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rescue", *args], capture_output=True, text=True,
                          env=env, timeout=180)


def test_capture_over_a_real_sshd_equals_the_local_capture(sshd: Sshd, tmp_path: Path) -> None:
    r = rescue("capture", "--ssh", "laptop", "--ssh-command", str(sshd.ssh), "--out", str(tmp_path / "remote"))
    assert r.returncode == 0, r.stderr
    r = rescue("capture", "--out", str(tmp_path / "local"))
    assert r.returncode == 0, r.stderr
    remote = Layout.loads((tmp_path / "remote" / "layout.json").read_text())
    local = Layout.loads((tmp_path / "local" / "layout.json").read_text())
    assert remote.client == "laptop" and local.client == local.hostname
    assert (remote.disks, remote.fstab, remote.boot, remote.os_release) == \
        (local.disks, local.fstab, local.boot, local.os_release)
    assert [f.device for f in remote.filesystems] == [f.device for f in local.filesystems]


def test_a_changed_host_key_is_refused_clearly_and_nothing_is_written(sshd: Sshd, tmp_path: Path) -> None:
    other = tmp_path / "other_key"
    _keygen(other)
    kind, key = other.with_suffix(".pub").read_text().split()[:2]
    sshd.known_hosts.write_text(f"laptop {kind} {key}\n")
    out = tmp_path / "remote"
    started = time.monotonic()
    r = rescue("capture", "--ssh", "laptop", "--ssh-command", str(sshd.ssh), "--out", str(out))
    assert r.returncode == 1, r.stderr
    assert "rescue capture: the ssh host key of laptop is not the one this backup server knows" in r.stderr
    assert "what to do:" in r.stderr and "ssh-keygen -R laptop" in r.stderr
    assert "Traceback" not in r.stderr
    assert not out.exists()
    assert time.monotonic() - started < 60  # BatchMode: no prompt waits for an answer


def test_an_unknown_host_key_and_a_refused_user_key_end_without_a_prompt(sshd: Sshd, tmp_path: Path) -> None:
    sshd.known_hosts.write_text("")
    r = rescue("capture", "--ssh", "laptop", "--ssh-command", str(sshd.ssh), "--out", str(tmp_path / "a"))
    assert r.returncode == 1 and "the ssh host key of laptop is not known" in r.stderr, r.stderr
    assert not (tmp_path / "a").exists()

    pub = (sshd.host_key.with_suffix(".pub")).read_text().split()
    sshd.known_hosts.write_text(f"laptop {pub[0]} {pub[1]}\n")
    (sshd.folder / "authorized_keys").write_text("")  # this backup server's key is no longer accepted
    r = subprocess.run([sys.executable, "-m", "rescue", "capture", "--ssh", "laptop", "--ssh-command",
                        str(sshd.ssh), "--out", str(tmp_path / "b")],
                       capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert r.returncode == 1 and "Permission denied" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "b").exists()
