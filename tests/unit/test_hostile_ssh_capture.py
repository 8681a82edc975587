"""Capture over ssh from a client that lies: its output is data, never a command.

The gateway is replaced by a recorder that plays a client (no sshd here; the
integration tier runs a stand-in ssh through a real shell). Checked for every
command the capture sends:
- ssh runs with BatchMode=yes and StrictHostKeyChecking=yes, the host, `--`,
  and exactly one remote string;
- that string, split as the client's shell would split it, is one of the
  fixed commands with its fixed options, followed only by device paths and
  mount points the client reported, each as one word;
- client output holding `$(...)`, backticks, `;` or newlines in mount points
  goes back quoted; a device name that is not a plain /dev path, or an
  argument that would read as an option, is refused before it is sent.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from rescue.capture.collect import collect_running
from rescue.capture.probe import SshRunner
from rescue.errors import RescueError
from rescue.run import Result

DEMO = Path(__file__).parent / "layout_samples" / "capture-demo"
FIXED = {
    "hostname": [], "cat": [], "lsblk": ["-J", "-b", "-O"], "findmnt": ["-J", "-o", "TARGET,SOURCE,FSTYPE,OPTIONS"],
    "test": ["-d"], "sfdisk": ["--dump"], "blkid": ["-p", "-o", "export"],
    "df": ["-B1", "--output=source,fstype,size,used,avail,target"], "stat": ["-c", "%a %u %g %n"],
}
EVIL_HOME = "/mnt/demo/home $(touch /tmp/PWNED) `id`;reboot"


def findmnt_json(home: str) -> bytes:
    data = json.loads((DEMO / "findmnt.json").read_text())
    data["filesystems"][0]["children"][0]["target"] = home
    return json.dumps(data).encode()


def lsblk_json(rename: dict[str, str] | None = None) -> bytes:
    """The demo capture's lsblk, its loop device shown as a disk (what a real client has)."""
    data = json.loads((DEMO / "lsblk.json").read_text())
    data["blockdevices"][0]["type"] = "disk"
    text = json.dumps(data)
    for old, new in (rename or {}).items():
        text = text.replace(json.dumps(old)[1:-1], json.dumps(new)[1:-1])
    return text.encode()


class Client:
    """Answers the fixed commands from the demo capture, with whatever lies it is given."""

    def __init__(self, findmnt: bytes, lsblk: bytes) -> None:
        self.findmnt, self.lsblk = findmnt, lsblk
        self.sent: list[list[str]] = []

    def __call__(self, argv, **kw) -> Result:
        self.sent.append(list(argv))
        remote = shlex.split(argv[-1])
        cmd = remote[0]
        out, rc = b"", 0
        if cmd == "hostname":
            out = b"demo\n"
        elif cmd == "lsblk":
            out = self.lsblk
        elif cmd == "findmnt":
            out = self.findmnt
        elif cmd == "cat":
            p = DEMO / {"/etc/os-release": "os-release", "/etc/fstab": "fstab"}.get(remote[1], "-")
            out, rc = (p.read_bytes(), 0) if p.is_file() else (b"", 1)
            if remote[1] == "/proc/swaps":
                out, rc = b"Filename Type Size Used Priority\n", 0
        elif cmd == "test":
            rc = 1
        elif cmd == "sfdisk":
            out = (DEMO / "sfdisk-loop9.dump").read_bytes()
        elif cmd == "blkid":
            p = DEMO / f"blkid-{remote[-1].rsplit('/', 1)[-1]}.txt"
            out, rc = (p.read_bytes(), 0) if p.is_file() else (b"", 2)
        elif cmd == "df":
            out = (DEMO / "df.txt").read_bytes()
        elif cmd == "stat":
            out = "".join(f"755 0 0 {t}\n" for t in remote[3:]).encode()
        return Result(tuple(argv), rc, out.decode("latin-1"), "")


def check_sent(sent: list[list[str]], allowed_words: set[str]) -> None:
    assert sent
    for argv in sent:
        assert argv[:5] == ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"], argv
        assert argv[-3:-1] == ["demo", "--"], argv
        remote = shlex.split(argv[-1])
        cmd, rest = remote[0], remote[1:]
        assert cmd in FIXED, f"not a fixed command: {argv[-1]}"
        fixed = FIXED[cmd]
        assert rest[:len(fixed)] == fixed, argv[-1]
        for word in rest[len(fixed):]:
            assert not word.startswith("-"), f"an argument that reads as an option: {argv[-1]}"
            assert word.startswith("/") and (word in allowed_words or word.startswith("/dev/")
                                              or word.startswith(("/etc/", "/usr/lib/", "/proc/", "/sys/",
                                                                  "/boot/"))), word
        assert shlex.join(remote) == argv[-1], "the remote string is exactly the quoted argv"


def test_capture_sends_only_fixed_commands_and_quotes_what_the_client_said(monkeypatch):
    client = Client(findmnt_json(EVIL_HOME), lsblk_json())
    monkeypatch.setattr("rescue.capture.probe.run", client)
    raw = collect_running(SshRunner("demo"))
    check_sent(client.sent, {"/mnt/demo", EVIL_HOME, "/mnt/demo/tmp"})
    stat = [a for a in client.sent if a[-1].startswith("stat ")]
    assert stat and shlex.split(stat[0][-1])[-3:] == sorted(["/mnt/demo", EVIL_HOME, "/mnt/demo/tmp"])
    assert shlex.quote(EVIL_HOME) in stat[0][-1]
    assert EVIL_HOME.encode() in raw.files["roots.txt"]  # kept as data, for the layout


@pytest.mark.parametrize("evil", ["/dev/loop9p5;reboot", "/dev/../etc/shadow", "/dev/loop9 $(id)", "-rf",
                                  "/dev/loop9p5\nreboot"])
def test_odd_device_names_from_the_client_are_refused_before_use(monkeypatch, evil):
    client = Client(findmnt_json("/mnt/demo/home"), lsblk_json({"/dev/loop9p4": evil}))
    monkeypatch.setattr("rescue.capture.probe.run", client)
    with pytest.raises(RescueError) as e:
        collect_running(SshRunner("demo"))
    assert "rescue will not use" in str(e.value) or "lsblk" in str(e.value)
    assert not any(evil in a[-1] for a in client.sent), "the odd name was sent to the client"


def test_mount_point_that_reads_as_an_option_is_never_an_argument(monkeypatch):
    client = Client(findmnt_json("--files0-from=/etc/shadow"), lsblk_json())
    monkeypatch.setattr("rescue.capture.probe.run", client)
    try:
        collect_running(SshRunner("demo"))
    except RescueError:
        pass  # refusing the capture is as good as leaving the mount out
    for argv in client.sent:
        assert "--files0-from" not in shlex.split(argv[-1])[1:] or argv[-1].startswith("findmnt")
