"""rescue capture against a real machine on a loop disk (root, loop devices, real tools)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rescue.demo import DemoMachine
from rescue.layout import BootMode, Layout, parse_sfdisk

RESCUE = [sys.executable, "-m", "rescue"]


def rescue(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RESCUE, *args], capture_output=True, text=True, env=env, timeout=120)


def listing_digest(top: Path) -> str:
    """Names, sizes, modes and contents of everything under top: any change shows."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in sorted(os.walk(top)):
        dirnames.sort()
        for n in sorted(dirnames + filenames):
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            h.update(f"{p} {st.st_mode:o} {st.st_size} {st.st_mtime_ns}\n".encode())
            if os.path.isfile(p) and not os.path.islink(p):
                with open(p, "rb") as f:
                    h.update(f.read())
    return h.hexdigest()


@pytest.mark.parametrize("label,home_fs,logical", [("gpt", "xfs", False), ("dos", "btrfs", True)])
def test_offline_capture_matches_what_was_built(tmp_path: Path, label: str, home_fs: str, logical: bool) -> None:
    with DemoMachine(tmp_path / "m", label=label, home_fs=home_fs, logical=logical, corpus=False) as m:
        out = tmp_path / "cap"
        r = rescue("capture", "--disk", m.disk, "--root", str(m.root), "--out", str(out))
        assert r.returncode == 0, r.stderr
        lay = Layout.loads((out / "layout.json").read_text())

        assert lay.root == str(m.root) and lay.client == "demo" and lay.source == "capture"
        (disk,) = lay.disks
        assert disk.device == m.disk and disk.size == m.size
        # the table is exactly the one written (and read back with sfdisk -d when it was made)
        assert disk.table == m.table
        assert parse_sfdisk((out / f"sfdisk-{m.disk[5:]}.dump").read_bytes(), "dump") == m.table
        fs = {f.device: f for f in lay.filesystems}
        for p in m.partitions:
            got = fs[p.node]
            assert (got.fstype, got.uuid, got.label, got.partuuid, got.mountpoint) == \
                (p.fstype, p.uuid, p.label, p.partuuid, p.mountpoint), p
        tmp = lay.filesystem_at("/tmp")
        assert tmp is not None and tmp.root is not None
        assert (tmp.root.mode, tmp.root.uid, tmp.root.gid) == (0o1777, 0, 0)
        assert lay.filesystem_at("/").root.mode == 0o755
        assert all(f.used is not None and f.size for f in lay.filesystems if f.mountpoint)
        (swap,) = lay.swaps
        assert (swap.device, swap.uuid, swap.label) == (m.swap.node, m.swap.uuid, "demo-swap")
        assert [(mt.target, mt.fstype) for mt in lay.mounts] == [("/", "ext4"), ("/home", home_fs), ("/tmp", "ext4")]
        assert {(e.spec, e.file) for e in lay.fstab} == {(f"UUID={p.uuid}", p.mountpoint or "none") for p in m.partitions}
        assert lay.boot.mode is BootMode.BIOS and lay.boot.grub_disk == m.disk
        if home_fs == "btrfs":  # mounted whole (its top level): no subvolume, one mount
            [vol] = lay.btrfs
            assert (vol.device, vol.uuid, vol.subvolumes, vol.default_id) == (m.partition("/home").node,
                                                                              m.partition("/home").uuid, (), 5)
            assert [(mt.target, mt.subvol, mt.subvolid, mt.mounted) for mt in vol.mounts] == [("/home", "/", 5, True)]
        else:
            assert lay.btrfs == ()
        for raw in ("lsblk.json", "findmnt.json", "fstab", "df.txt", "roots.txt", "os-release", "hostname"):
            assert (out / raw).is_file(), raw


def test_capture_of_this_running_machine(tmp_path: Path) -> None:
    r = rescue("capture", "--out", str(tmp_path / "cap"))
    assert r.returncode == 0, r.stderr
    lay = Layout.loads((tmp_path / "cap" / "layout.json").read_text())
    assert lay.root == "/" and lay.hostname == os.uname().nodename
    root = lay.filesystem_at("/")
    assert root is not None and root.fstype and root.root is not None and root.used
    assert lay.boot.mode is (BootMode.UEFI if Path("/sys/firmware/efi").is_dir() else BootMode.BIOS)


def test_hook_mode_writes_beside_tree_and_failures_leave_the_image_untouched(tmp_path: Path) -> None:
    with DemoMachine(tmp_path / "m", corpus=False) as m:
        image = tmp_path / "bank" / "root" / "2026-1126-0300"
        (image / "tree").mkdir(parents=True)
        (image / "summary").write_text("client: localhost\n")
        env = {
            "PATH": os.environ["PATH"], "DIRVISH_SERVER": os.uname().nodename, "DIRVISH_CLIENT": "localhost",
            "DIRVISH_DEST": str(image / "tree"), "DIRVISH_IMAGE": "root:default:2026-1126-0300", "DIRVISH_STATUS": "success",
        }
        r = rescue("capture", "--disk", m.disk, "--root", str(m.root), env=env)
        assert r.returncode == 0, r.stderr
        assert (image / "rescue" / "layout.json").is_file()
        assert Layout.loads((image / "rescue" / "layout.json").read_text()).client == "localhost"

        before = listing_digest(image)
        for bad in (
            ["--disk", "/dev/loop-does-not-exist", "--root", str(m.root)],
            ["--disk", m.disk, "--root", str(tmp_path / "nothing-mounted-here")],
            ["--disk", m.partition("/").node, "--root", str(m.root)],  # a partition, not a disk
        ):
            (tmp_path / "nothing-mounted-here").mkdir(exist_ok=True)
            r = rescue("capture", *bad, env=env)
            assert r.returncode == 1, (bad, r.stdout, r.stderr)
            assert r.stderr.startswith("rescue capture: ") and "Traceback" not in r.stderr
            assert "what to do" in r.stderr or "why" in r.stderr
            assert listing_digest(image) == before
        assert sorted(p.name for p in image.iterdir()) == ["rescue", "summary", "tree"]


def test_usage_without_out_or_hook_is_refused() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIRVISH_")}
    r = rescue("capture", env=env)
    assert r.returncode == 2 and "--out" in r.stderr


FAKE_SSH = """#!/bin/sh
# Stands in for ssh where the test needs to see which hosts were asked (hook mode,
# an unreachable client): insists on BatchMode, then does what sshd does with the
# command: hands the one string to the login shell. test_capture_sshd.py runs a real sshd.
[ "$1" = -o ] && [ "$2" = BatchMode=yes ] || { echo "no BatchMode" >&2; exit 99; }
shift 10  # the 5 "-o X" pairs
echo "$1" >> "$(dirname "$0")/hosts"
shift
[ "$1" = -- ] && shift
exec sh -c "$1"
"""


def test_remote_capture_runs_the_same_plain_commands_through_ssh(tmp_path: Path) -> None:
    """--ssh and hook mode with a remote client: commands cross a shell as one quoted string."""
    ssh = tmp_path / "bin" / "ssh"
    ssh.parent.mkdir()
    ssh.write_text(FAKE_SSH)
    ssh.chmod(0o755)
    r = rescue("capture", "--ssh", "laptop", "--ssh-command", str(ssh), "--out", str(tmp_path / "remote"))
    assert r.returncode == 0, r.stderr
    r = rescue("capture", "--out", str(tmp_path / "local"))
    assert r.returncode == 0, r.stderr
    remote = Layout.loads((tmp_path / "remote" / "layout.json").read_text())
    local = Layout.loads((tmp_path / "local" / "layout.json").read_text())
    assert remote.client == "laptop" and local.client == local.hostname
    assert (remote.disks, remote.fstab, remote.boot, remote.os_release) == (local.disks, local.fstab, local.boot, local.os_release)
    assert [f.device for f in remote.filesystems] == [f.device for f in local.filesystems]
    assert set((ssh.parent / "hosts").read_text().split()) == {"laptop"}

    # hook mode: a client that is not this host is read over ssh
    image = tmp_path / "bank" / "laptop-root" / "2026-1126-0300"
    (image / "tree").mkdir(parents=True)
    env = {"PATH": os.environ["PATH"], "DIRVISH_SERVER": os.uname().nodename, "DIRVISH_CLIENT": "laptop2",
           "DIRVISH_DEST": str(image / "tree"), "DIRVISH_IMAGE": "laptop-root:default:2026-1126-0300",
           "DIRVISH_STATUS": "success"}
    r = rescue("capture", "--ssh-command", str(ssh), env=env)
    assert r.returncode == 0, r.stderr
    assert Layout.loads((image / "rescue" / "layout.json").read_text()).client == "laptop2"
    assert "laptop2" in (ssh.parent / "hosts").read_text().split()

    # an unreachable client: ssh exits 255, capture fails clearly, the image keeps what it had
    before = listing_digest(image)
    ssh.write_text("#!/bin/sh\necho 'ssh: connect to host laptop2 port 22: Connection refused' >&2\nexit 255\n")
    r = rescue("capture", "--ssh-command", str(ssh), env=env)
    assert r.returncode == 1 and "Connection refused" in r.stderr and "Traceback" not in r.stderr
    assert listing_digest(image) == before
