"""md RAID arrays made again with the identity they had: UUID, name, metadata, level, chunk,
layout, bitmap, data offset; members named one by one, never found by a scan.

The failing old disks may still be attached and carry the same array UUID: nothing here
assembles by UUID alone or reads mdadm.conf's ARRAY lines; every command names the new
members. `--assume-clean` is given for mirrors (raid1, raid10) only: the members are new
disks, every block the restore writes goes to each of them, and the blocks never written
hold nothing; a resync would copy the whole member again for nothing (hours on big disks).
Parity levels (raid4/5/6) resync: their parity must be right before a member can fail.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rescue.errors import UnsafeTarget
from rescue.layout.stack import md_members, parse_export
from rescue.steps.base import Context, Step, let_go, sh

MIRRORS = ("raid1", "raid10")


def _kib(nbytes: int) -> str:
    return f"{nbytes // 1024}K"


def mdadm_layout(shown: str) -> str:
    """`mdadm --detail`'s layout as --create takes it: raid10's "near=2" is "n2"."""
    for word, letter in (("near", "n"), ("far", "f"), ("offset", "o")):
        if shown.startswith(word + "="):
            return letter + shown.split("=", 1)[1]
    return shown


@dataclass(frozen=True)
class MakeArray(Step):
    """`mdadm --create` of one array from named members (None: a slot left empty, degraded)."""

    kind = "md-create"
    # run again on a resume: after a reboot the array must be assembled before anything uses it
    # (run() finds it made and assembles it from the named members)
    persistent = False
    device: str  # /dev/md0, /dev/md/root: as the restored system knows it
    uuid: str  # mdadm's colon form
    level: str  # raid1, raid5, ...
    members: tuple[str | None, ...]  # by role (slot 0 first); None: "missing"
    metadata: str = "1.2"
    name: str | None = None  # "host:name" as captured
    chunk: int | None = None  # bytes (striped levels)
    layout: str | None = None
    bitmap: str | None = None  # "internal", "none"
    data_offset: int | None = None  # sectors

    @property
    def key(self) -> str:
        return f"md-create:{self.uuid}"

    @property
    def present(self) -> tuple[str, ...]:
        return tuple(m for m in self.members if m)

    @property
    def degraded(self) -> bool:
        return len(self.present) < len(self.members)

    @property
    def assume_clean(self) -> bool:
        return self.level in MIRRORS

    def describe(self) -> str:
        slots = ", ".join(m or "missing" for m in self.members)
        what = f"make md {self.level} {self.device} (UUID {self.uuid}) from {slots}"
        if self.degraded:
            what += f": degraded, {len(self.present)} of {len(self.members)} members"
        return what

    def create_argv(self) -> list[str]:
        argv = ["mdadm", "--create", self.device, "--run", f"--level={self.level}",
                f"--raid-devices={len(self.members)}", f"--metadata={self.metadata}", f"--uuid={self.uuid}"]
        if self.name and not self.metadata.startswith("0"):  # 0.90 superblocks have no name
            argv.append(f"--name={self.name}")
        if self.chunk and self.level not in ("raid1",):
            argv.append(f"--chunk={_kib(self.chunk)}")
        if self.layout and self.level not in ("raid1",):
            argv.append(f"--layout={mdadm_layout(self.layout)}")
        if self.bitmap in ("internal", "none"):
            argv.append(f"--bitmap={self.bitmap}")
        if self.data_offset is not None and self.metadata.startswith("1"):
            argv.append(f"--data-offset={_kib(self.data_offset * 512)}")
        if self.assume_clean:
            argv.append("--assume-clean")
        if len(self.members) == 1:
            argv.append("--force")  # mdadm asks for it for a one-member array
        return argv + [m or "missing" for m in self.members]

    def assemble_argv(self) -> list[str]:
        """Start the array again from its named members (a resumed restore, after a reboot)."""
        return ["mdadm", "--assemble", self.device, "--run", f"--uuid={self.uuid}", *self.present]

    def script(self) -> list[str]:
        first = self.present[0]
        made = f"mdadm --examine --export {sh(first)} 2>/dev/null | grep -qx {sh('MD_UUID=' + self.uuid)}"
        running = f"mdadm --detail --export {sh(self.device)} 2>/dev/null | grep -qx {sh('MD_UUID=' + self.uuid)}"
        return [
            f"if ! {made}; then",
            f"  {sh(*self.create_argv())}",
            f"elif ! {running}; then",
            f"  {sh(*self.assemble_argv())}",
            "fi",
        ]

    def run(self, ctx: Context) -> None:
        # noted first: a run killed from here on leaves an array the next run stops (and only it)
        ctx.data()["array"] = {"device": self.device, "uuid": self.uuid}
        ctx.save()
        if self._running(ctx):
            return
        if all(self._made_on(ctx, m) for m in self.present):
            ctx.run(self.assemble_argv())
        else:
            for member in self.present:  # old signatures (a previous array, a filesystem) go first
                ctx.run(["wipefs", "-a", "-q", member])
            ctx.run(self.create_argv())
        ctx.run(["udevadm", "settle", "--timeout=30"], check=False)

    def _running(self, ctx: Context) -> bool:
        """True when this array already runs from these members (a resumed restore).

        One that runs under that name from other devices is the old array (someone assembled
        the old disks): the restore stops there rather than write onto it."""
        found = ctx.run(["mdadm", "--detail", "--export", self.device], check=False)
        if found.returncode != 0:
            return False
        export = parse_export(found.stdout, f"mdadm --detail --export {self.device}")
        members = {os.path.realpath(m) for m in md_members(export)}
        ours = {os.path.realpath(m) for m in self.present}
        if export.get("MD_UUID") == self.uuid and members <= ours:
            return True
        raise UnsafeTarget(
            f"{self.device} is already running, from {', '.join(sorted(members)) or 'no members'}",
            why="those are not the new members this restore makes the array from: it may be the old "
                "array, and nothing may be written onto the old disks",
            fix=f"stop it (mdadm --stop {self.device}) or detach the old disks, then rerun the same command",
        )

    def _made_on(self, ctx: Context, member: str) -> bool:
        found = ctx.run(["mdadm", "--examine", "--export", member], check=False)
        return found.returncode == 0 and f"MD_UUID={self.uuid}" in found.stdout.splitlines()


@dataclass(frozen=True)
class StopArrays(Step):
    """Stop the arrays the restore made, once everything on them is unmounted and closed,
    so the disks can be pulled (or the machine rebooted) with clean superblocks."""

    kind = "md-stop"
    persistent = False  # a rerun stops them again
    devices: tuple[str, ...]

    @property
    def key(self) -> str:
        return "md-stop:" + ",".join(self.devices)

    def describe(self) -> str:
        return "stop md " + ", ".join(self.devices)

    def script(self) -> list[str]:
        return [f"mdadm --stop {sh(d)} 2>/dev/null || true" for d in reversed(self.devices)]

    def run(self, ctx: Context) -> None:
        for device in reversed(self.devices):  # an array built on another stops first
            let_go(ctx, ["mdadm", "--stop", device], check=False)


def stop_left_array(run: Callable[..., Any], device: str, uuid: str) -> bool:
    """Stop an array an earlier, killed run made (the journal names it), if it still runs with
    that UUID. Any other array under that name is not this restore's and is left alone."""
    found = run(["mdadm", "--detail", "--export", device], check=False)
    if found.returncode != 0 or f"MD_UUID={uuid}" not in found.stdout.splitlines():
        return False
    return run(["mdadm", "--stop", device], check=False).returncode == 0
