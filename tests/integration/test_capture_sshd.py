"""`rescue capture --ssh` against a real sshd on 127.0.0.1.

The sshd fixture (tests/integration/conftest.py) runs the real sshd with a
throwaway host key and user key on a free loopback port; nothing of the
host's own ssh configuration or keys is read or written.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from conftest_ssh import Sshd, keygen

from rescue.layout import Layout


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
    keygen(other)
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
