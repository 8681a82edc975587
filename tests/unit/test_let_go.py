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
