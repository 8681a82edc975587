"""The wizard's shell (s): a real terminal session in root's home, the target's filesystems mounted
by the engine's own mount step where the person is told, and unmounted when the shell ends."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from rescue.devices import loop_disk
from rescue.engine.mounts import is_mountpoint
from rescue.run import run
from rescue.steps.mount import MountFilesystem
from rescue.tui import RealEngine
from rescue.tui.real import mount_for_shell

MiB = 1 << 20


@dataclass(frozen=True)
class Plan:  # what the shell reads of a plan: its mount steps and its target
    steps: tuple
    target: object


@dataclass(frozen=True)
class Target:
    device: str


def test_the_shell_mounts_the_target_says_where_and_unmounts_on_return(tmp_path, monkeypatch, capsys):
    with loop_disk(tmp_path / "a.img", 64 * MiB) as made, loop_disk(tmp_path / "b.img", 64 * MiB) as blank:
        run(["mkfs.ext4", "-q", made])
        plan = Plan((MountFilesystem(made, "/", "ext4"), MountFilesystem(blank, "/home", "ext4")), Target(made))
        base = tmp_path / "target"
        assert mount_for_shell(plan, base) == ["/"]  # /home's mkfs never ran: left out, said so
        assert is_mountpoint(base)
        assert "not mounted: " + blank in capsys.readouterr().out
        run(["umount", str(base)])

        engine = RealEngine(banks=[tmp_path])
        engine.shell_mount = tmp_path / "shell-target"
        review = object()
        engine.plans[review] = plan  # type: ignore[index]
        seen = tmp_path / "seen"
        monkeypatch.setenv("HOME", str(tmp_path))
        monkeypatch.setenv("TERM", "dumb")
        # the "shell": what a person would see inside it, written down
        script = tmp_path / "sh"
        script.write_text(f"#!/bin/sh\n{{ pwd; echo \"$TERM\"; ps -o sid= -p $$; "
                          f"findmnt -no SOURCE {engine.shell_mount}; }} > {seen}\n")
        script.chmod(0o755)
        monkeypatch.setenv("SHELL", str(script))
        engine.shell(review)  # type: ignore[arg-type]
        pwd, term, sid, source = seen.read_text().split("\n")[:4]
        assert pwd == str(tmp_path)  # home, not the wizard's working folder
        assert term == "linux"  # a real terminal type, never dumb
        assert int(sid) == os.getsid(0)  # the same session: the terminal is its own, job control works
        assert source == made
        out = capsys.readouterr().out
        assert f"{made} is mounted at {engine.shell_mount}: /" in out
        assert not engine.shell_mount.exists() or not is_mountpoint(engine.shell_mount)  # unmounted on return
