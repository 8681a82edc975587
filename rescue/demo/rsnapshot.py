"""A demo machine backed up by real rsnapshot, with `rescue capture` as its backup_script.

rsnapshot reads the config file it is given with -c (never /etc/rsnapshot.conf);
the config, the lock file and the snapshot root all live in the caller's folder.
The machine's filesystems, mounted under its root, are one backup point
(one_fs 0 crosses into /home, /tmp, ...), so each snapshot's `localhost/` holds
the whole machine, as `backup / localhost/` does on a real server.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rescue.demo.dirvish import rescue_command
from rescue.demo.machine import DemoMachine
from rescue.errors import RescueError
from rescue.run import run

HOST = "localhost"


@dataclass(frozen=True)
class DemoSnapshots:
    """An rsnapshot snapshot root made from a demo machine."""

    root: Path  # snapshot_root: hourly.0, daily.0, ...
    config: Path  # the rsnapshot.conf used
    client: str  # the host folder in each snapshot

    def tree(self, snapshot: str) -> Path:
        return self.root / snapshot / self.client

    def layout_dir(self, snapshot: str) -> Path:
        return self.root / snapshot / ".rescue" / self.client


def capture_line(machine: DemoMachine) -> str:
    """The backup_script command: capture the (not running) demo machine into rsnapshot's cwd."""
    if machine.disk is None:
        raise RescueError("the demo machine is not attached; back it up before detaching it")
    argv = [*rescue_command(), "capture", "--disk", machine.disk, "--root", str(machine.root),
            "--client", HOST, "--out", "."]
    if any(" " in a or "\t" in a for a in argv):
        raise RescueError("rsnapshot splits a backup_script at blanks: the demo's paths must have none",
                          fix="run the demo in a folder whose path has no spaces")
    return " ".join(argv)


def write_config(machine: DemoMachine, root: Path, config: Path, *,
                 retain: Sequence[tuple[str, int]] = (("hourly", 2), ("daily", 2)),
                 capture: bool = True) -> Path:
    """An rsnapshot.conf (tab-separated, as rsnapshot demands) in the caller's folder."""
    lines = [
        ("config_version", "1.2"),
        ("snapshot_root", f"{root}/"),
        ("cmd_cp", shutil.which("cp") or "/bin/cp"),
        ("cmd_rm", shutil.which("rm") or "/bin/rm"),
        ("cmd_rsync", shutil.which("rsync") or "/usr/bin/rsync"),
        ("lockfile", str(config.with_suffix(".pid"))),
        ("logfile", str(config.with_suffix(".log"))),
        ("link_dest", "1"),
        ("one_fs", "0"),
        # no --relative: the machine is mounted under a test folder, and its / is localhost/
        ("rsync_long_args", "--delete --numeric-ids --delete-excluded --acls --xattrs"),
    ]
    lines += [("retain", f"{name}\t{count}") for name, count in retain]
    lines.append(("backup", f"{machine.root}/\t{HOST}/"))
    if capture:
        lines.append(("backup_script", f"{capture_line(machine)}\t.rescue/{HOST}/"))
    config.write_text("".join(f"{k}\t{v}\n" for k, v in lines))
    return config


def rsnapshot(config: Path, interval: str) -> None:
    """One real rsnapshot run; a warning (exit 2) or error (1) raises CommandError."""
    run(["rsnapshot", "-c", str(config), interval], timeout=600)


def make_snapshots(machine: DemoMachine, root: Path, config: Path | None = None,
                   runs: Sequence[str] = ("hourly", "hourly", "daily"),
                   between: Sequence[object] = ()) -> DemoSnapshots:
    """Back `machine` up with real rsnapshot, one run per interval named in `runs`.

    `between`: callables run after each run but the last (a night's changes)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o700)
    config = config or root.parent / (root.name + "-rsnapshot.conf")
    write_config(machine, root, config)
    for i, interval in enumerate(runs):
        rsnapshot(config, interval)
        if i < len(between):
            between[i]()  # type: ignore[operator]
    return DemoSnapshots(root=root, config=config, client=HOST)
