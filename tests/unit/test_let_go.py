"""Deactivating a VG right after its LVs were unmounted: udev's probe may hold one open a moment.

Seen in the lvm drill: `vgchange -an demo` said "Logical volume demo/root contains a
filesystem in use" just after the unmount step, and the whole restore was reported FAILED.
The context here is a stand-in that records commands (the real race needs device-mapper,
which this host's kernel lacks; the vm tier's drills run the real thing)."""

from __future__ import annotations

import pytest

from rescue.run import CommandError, Result
from rescue.steps.base import let_go

BUSY = ('  Logical volume demo/root contains a filesystem in use.\n'
        '  Can\'t deactivate volume group "demo" with 1 open logical volume(s)\n')


class FakeCtx:
    def __init__(self, failures: list[str]) -> None:
        self.failures = failures
        self.ran: list[list[str]] = []
        self.notes: list[str] = []

    def note(self, text: str) -> None:
        self.notes.append(text)

    def run(self, argv, check: bool = True, **_kw) -> Result:
        self.ran.append(list(argv))
        if argv[0] != "udevadm" and self.failures:
            raise CommandError(argv, 5, self.failures.pop(0))
        return Result(list(argv), 0, "", "")


def test_a_group_held_a_moment_by_a_probe_is_deactivated_on_a_later_try(monkeypatch) -> None:
    monkeypatch.setattr("time.sleep", lambda s: None)
    ctx = FakeCtx([BUSY, BUSY])
    let_go(ctx, ["vgchange", "-an", "demo"])  # type: ignore[arg-type]
    tries = [a for a in ctx.ran if a[0] == "vgchange"]
    assert len(tries) == 3
    assert ctx.ran[0][:2] == ["udevadm", "settle"]  # udev is waited for before each try


def test_any_other_failure_is_reported_at_once(monkeypatch) -> None:
    monkeypatch.setattr("time.sleep", lambda s: None)
    ctx = FakeCtx(['  Volume group "demo" not found\n'])
    with pytest.raises(CommandError):
        let_go(ctx, ["vgchange", "-an", "demo"])  # type: ignore[arg-type]
    assert len([a for a in ctx.ran if a[0] == "vgchange"]) == 1


def test_a_group_that_stays_in_use_fails_after_the_last_try(monkeypatch) -> None:
    monkeypatch.setattr("time.sleep", lambda s: None)
    ctx = FakeCtx([BUSY] * 20)
    with pytest.raises(CommandError):
        let_go(ctx, ["vgchange", "-an", "demo"], tries=4)  # type: ignore[arg-type]
    assert len([a for a in ctx.ran if a[0] == "vgchange"]) == 4
    assert ctx.notes and ctx.notes[0].startswith("vgchange: still in use after 4 tries")  # and who holds it


def test_who_holds_a_layer_names_a_mount_in_another_namespace_and_an_open_device(tmp_path) -> None:
    """A /proc of two processes, written here: one with its own mount namespace holding an LV
    mounted, one with an array open."""
    import os

    def proc(pid: str, comm: str, ns: str, mountinfo: str, fds: dict[str, str]) -> None:
        d = tmp_path / pid
        (d / "ns").mkdir(parents=True)
        (d / "fd").mkdir()
        (d / "comm").write_text(comm + "\n")
        os.symlink(ns, d / "ns" / "mnt")
        (d / "mountinfo").write_text(mountinfo)
        for fd, target in fds.items():
            os.symlink(target, d / "fd" / fd)

    proc("self", "rescue", "mnt:[1]", "", {})
    proc("270", "systemd-udevd", "mnt:[2]",
         "900 30 252:0 / /run/rescue/target-x/root rw - ext4 /dev/mapper/demo-root rw\n", {})
    proc("301", "blkid", "mnt:[1]", "", {"3": "/dev/md127", "4": "/dev/null"})
    from rescue.steps.base import who_holds_layers

    who = who_holds_layers(tmp_path)
    assert ("systemd-udevd (pid 270, its own mount namespace) has /dev/mapper/demo-root mounted at "
            "/run/rescue/target-x/root") in who
    assert "blkid (pid 301) has /dev/md127 open" in who and len(who) == 2
