"""The wizard driven with Pilot against the real engine: a real restore onto loop disks.

The demo machine (rescue.demo: a loop disk with ext4 /, /home, /tmp and swap,
a fidelity corpus) is backed up by real dirvish with the capture hook into a
bank on a mounted backup loop disk, then detached (the disaster). The wizard
is driven screen by screen; the restore runs through rescue.engine, and the
result is checked as for the unattended restore (every tree against its
image, UUIDs, labels, PARTUUIDs). A wrong typed name must leave the target's
checksum unchanged; a restore cancelled during the copy must be offered for
resume on the next start and then finish equal.

Only disks made here are offered (probed by rescue.probe), so no test can
pick a disk of this machine. The result screen's reboot key is never pressed.
"""

from __future__ import annotations

import asyncio
import functools
import os
import shlex
import sys
import threading
import time
from pathlib import Path

import pytest
from textual.widgets import DataTable

from rescue.formats.units import sha256_file
from rescue.demo import DemoMachine, diff_trees, make_bank
from rescue.devices import loop_disk
from rescue.engine.journal import Journal
from rescue.errors import Exit
from rescue.events import StepStarted
from rescue.probe import probe_disk
from rescue.run import run
from rescue.tui import RealEngine, make_app
from rescue.tui.screens.common import ConfirmScreen
from rescue.tui.screens.run import FailedScreen, ProgressScreen, ResultScreen, ResumeScreen
from rescue.tui.screens.target import ReviewScreen, TargetScreen

MiB = 1 << 20
GiB = 1 << 30
SIZE = (80, 24)


def aio(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return asyncio.run(fn(*args, **kwargs))

    return wrapper


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """A bank on a mounted backup disk holding the demo machine's backups; the machine then detached."""
    tmp = tmp_path_factory.mktemp("wizard")
    backup = tmp / "backup"
    backup.mkdir()
    with loop_disk(tmp / "backup.img", 1 * GiB) as backup_disk:
        run(["mkfs.ext4", "-q", "-L", "backup", backup_disk])
        run(["mount", backup_disk, str(backup)])
        try:
            with DemoMachine(tmp / "machine") as m:
                bulk = m.dir_of("/home") / "bulk"
                bulk.mkdir()
                for i in range(40):  # a copy that takes a moment
                    (bulk / f"f{i:03}").write_bytes(os.urandom(256 * 1024))
                # confdir off the backup disk: rescue.demo.nsrun would drop a bind of a loop fs
                bank = make_bank(m, backup / "bank", confdir=tmp / "etc-dirvish")
                parts = {p.mountpoint or "swap": p for p in m.partitions}
                m.detach_keep_image()
            yield {"bank": bank, "parts": parts, "backup_disk": backup_disk, "tmp": tmp}
        finally:
            run(["umount", str(backup)], check=False)


class OwnDisks(RealEngine):
    """RealEngine that probes only the disks this test made (never another disk of this machine).

    With hold_at a step key, the run waits when that step starts until `release`
    is set, so the test can press keys in the middle of it.
    """

    def __init__(self, devices, hold_at=None, **kw):
        super().__init__(**kw)
        self.devices = tuple(devices)
        self.hold_at = hold_at
        self.holding = threading.Event()
        self.release = threading.Event()

    def disks(self):
        return tuple(probe_disk(d, backup_sources=self._sources()) for d in self.devices)

    def run(self, review, emit, cancel):
        def held(e):
            emit(e)
            if isinstance(e, StepStarted) and e.key == self.hold_at and not self.holding.is_set():
                self.holding.set()
                self.release.wait(60)

        return super().run(review, held, cancel)


def engine_for(demo, tmp_path, target, **kw) -> OwnDisks:
    return OwnDisks([demo["backup_disk"], target], banks=[demo["bank"].bank], state_dir=tmp_path / "state",
                    log_dir=tmp_path / "logs", **kw)


def sha256(device: str) -> str:
    return sha256_file(device)


async def settle(pilot) -> None:
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


async def to_review(pilot, target: str) -> None:
    await settle(pilot)
    await pilot.press("enter")  # the machine
    await settle(pilot)
    await pilot.press("n")  # its newest good images
    await settle(pilot)
    screen = pilot.app.screen
    assert isinstance(screen, TargetScreen)
    screen.query_one("#disks", DataTable).move_cursor(row=[d.device for d in screen.disks].index(target))
    await pilot.press("enter")
    await settle(pilot)
    assert isinstance(pilot.app.screen, ReviewScreen)
    assert pilot.app.screen.review is not None, str(pilot.app.screen.query_one("#body").render())


async def confirm(pilot, typed: str) -> None:
    await pilot.press("n")
    await pilot.pause()
    assert isinstance(pilot.app.screen, ConfirmScreen)
    await pilot.press(*list(typed), "enter")
    await pilot.pause()


async def run_to_end(pilot, seconds: float = 300) -> None:
    for _ in range(int(seconds * 5)):
        await pilot.pause(0.2)
        if not isinstance(pilot.app.screen, ProgressScreen):
            return
    raise AssertionError("the restore did not end in time")


def compare_disk(demo, dev: str, where: Path) -> list[str]:
    """Every restored filesystem against its image tree, as the unattended restore's tests do."""
    problems: list[str] = []
    where.mkdir(exist_ok=True)
    for mp, p in sorted(((p.mountpoint, p) for p in demo["parts"].values() if p.mountpoint),
                        key=lambda x: len(x[0])):
        run(["mount", "-t", p.fstype, "-o", "ro", f"{dev}p{p.number}", str(where)])
        try:
            exclude = ["lost+found"] if p.fstype.startswith("ext") else []
            if mp == "/":
                exclude += ["proc", "sys", "dev", "run", "tmp", "var"]  # made by the fixups
            tree = demo["bank"].image_dir(p.vault) / "tree"
            problems += [f"{mp}: {d}" for d in diff_trees(tree, where, times=True, sparse=True, top=True,
                                                          exclude=exclude)]
        finally:
            run(["umount", str(where)])
    return problems


def check_identity(demo, dev: str) -> None:
    for key, p in demo["parts"].items():
        out = run(["blkid", "-p", "-o", "export", f"{dev}p{p.number}"]).stdout
        found = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        assert found["UUID"] == p.uuid, key
        assert found.get("LABEL") == p.label, key
        assert found["PART_ENTRY_UUID"].lower() == p.partuuid.lower(), key


@aio
async def test_restore_through_the_wizard_onto_a_bigger_loop_disk(demo, tmp_path):
    with loop_disk(tmp_path / "new.img", 2 * GiB) as dev:
        engine = engine_for(demo, tmp_path, dev)
        app = make_app(engine)
        async with app.run_test(size=SIZE) as pilot:
            await to_review(pilot, dev)
            review = app.screen.review
            assert review.target == dev
            assert any(r.note == "grows" for r in review.rows)
            # the backup disk is listed but cannot be chosen
            await pilot.press("escape")
            await settle(pilot)
            screen = app.screen
            assert isinstance(screen, TargetScreen)
            backup = [d.device for d in screen.disks].index(demo["backup_disk"])
            assert screen.disks[backup].holds_backup
            screen.query_one("#disks", DataTable).move_cursor(row=backup)
            await pilot.press("enter")
            await settle(pilot)
            assert app.screen is screen
            screen.query_one("#disks", DataTable).move_cursor(row=[d.device for d in screen.disks].index(dev))
            await pilot.press("enter")
            await settle(pilot)
            await confirm(pilot, dev)
            await run_to_end(pilot)
            result = app.screen
            assert isinstance(result, ResultScreen), getattr(result, "error", None)
            assert result.done.ok and not result.done.incomplete
            assert "result:   OK" in result.done.summary
            assert "tree /home: equal to vault home" in result.done.summary
            await pilot.press("q")
            await settle(pilot)
        assert app.return_code == Exit.OK
        # the same checks as after an unattended restore
        assert compare_disk(demo, dev, tmp_path / "mnt") == []
        check_identity(demo, dev)
        reports = list((tmp_path / "state").glob("*/restore-*.txt"))
        assert len(reports) == 1 and "tree /home: equal to vault home" in reports[0].read_text()
        assert engine.last_log is not None and "+ sfdisk" in engine.last_log.read_text()
        assert engine.interrupted() is None  # finished: nothing to offer


@aio
async def test_a_wrong_typed_name_leaves_the_target_unchanged(demo, tmp_path):
    with loop_disk(tmp_path / "new.img", 1536 * MiB) as dev:
        run(["sfdisk", "-q", dev], input="label: dos\n,64M,83\n")  # something that must survive
        before = sha256(dev)
        engine = engine_for(demo, tmp_path, dev)
        app = make_app(engine)
        async with app.run_test(size=SIZE) as pilot:
            await to_review(pilot, dev)
            for typed in ("yes", dev + "1", os.path.basename(dev)[:-1]):
                await confirm(pilot, typed)
                assert isinstance(app.screen, ReviewScreen)
            await pilot.press("q")
            await settle(pilot)
        assert app.return_code == Exit.ABORTED
        assert sha256(dev) == before
        assert not list((tmp_path / "state").glob("*/journal.json"))


@aio
async def test_cancel_during_the_copy_is_offered_for_resume_on_the_next_start(demo, tmp_path):
    with loop_disk(tmp_path / "new.img", 1536 * MiB) as dev:
        engine = engine_for(demo, tmp_path, dev, hold_at="copy:home")
        app = make_app(engine)
        async with app.run_test(size=SIZE) as pilot:
            await to_review(pilot, dev)
            await confirm(pilot, os.path.basename(dev))
            assert engine.holding.wait(120)
            await pilot.press("c")  # while /home is being copied
            await pilot.pause()
            await pilot.press("y")  # c asks first
            await pilot.pause()
            engine.release.set()
            await run_to_end(pilot)
            screen = app.screen
            assert isinstance(screen, FailedScreen) and screen.cancelled
            await pilot.press("a")
            await settle(pilot)
        assert app.return_code == Exit.ABORTED
        journals = list((tmp_path / "state").glob("*/journal.json"))
        assert len(journals) == 1
        journal = Journal.load(journals[0])
        assert journal.is_done("copy:root")
        assert journal.was_started("copy:home") or journal.is_done("copy:home")
        assert journal.state("copy:tmp") is None  # nothing after the cancelled step ran

        again = engine_for(demo, tmp_path, dev)  # a new start: nothing known but the state folder
        offered = again.interrupted()
        assert offered is not None and offered.target == dev
        assert offered.why.startswith("it was cancelled"), offered.why
        app = make_app(again)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            assert isinstance(app.screen, ResumeScreen)
            await pilot.press("r")
            await pilot.pause()
            assert isinstance(app.screen, ConfirmScreen) and app.screen.resume
            await pilot.press(*list(dev), "enter")
            await run_to_end(pilot)
            assert isinstance(app.screen, ResultScreen), getattr(app.screen, "error", None)
            assert app.screen.done.ok
            log = "\n".join(app.log_lines)
            assert "(resuming)" in log and "skip (done earlier): copy vault root" in log
            assert "skip (done earlier): copy vault home" not in log
            await pilot.press("q")
            await settle(pilot)
        assert app.return_code == Exit.OK
        assert compare_disk(demo, dev, tmp_path / "mnt") == []
        check_identity(demo, dev)
        assert again.interrupted() is None


@aio
async def test_a_second_console_cannot_restore_onto_a_disk_being_restored(demo, tmp_path):
    """The rescue console runs a wizard on tty1 and on the serial line; one disk, one restore."""
    from rescue.engine.lock import DiskLock

    with loop_disk(tmp_path / "new.img", 1536 * MiB) as dev:
        before = sha256(dev)
        with DiskLock(dev, "rescue wizard"):  # as the other console's restore holds it
            app = make_app(engine_for(demo, tmp_path, dev))
            async with app.run_test(size=SIZE) as pilot:
                await to_review(pilot, dev)
                await confirm(pilot, dev)
                await run_to_end(pilot)
                screen = app.screen
                assert isinstance(screen, FailedScreen)
                assert "another restore onto" in str(screen.error)
                assert f"rescue wizard, pid {os.getpid()}" in str(screen.error)
        assert sha256(dev) == before
        assert not list((tmp_path / "state").glob("*/plan.json"))  # nothing written beside the journal


@aio
async def test_a_vault_left_out_is_not_copied_in_the_real_plan(demo, tmp_path):
    with loop_disk(tmp_path / "new.img", 1536 * MiB) as dev:
        app = make_app(engine_for(demo, tmp_path, dev))
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await pilot.press("enter")
            await settle(pilot)
            screen = app.screen
            tmp_row = next(i for i, image in enumerate(screen.images) if image.vault == demo["parts"]["/tmp"].vault)
            screen.query_one("#images", DataTable).move_cursor(row=tmp_row)
            await pilot.press("x", "n")
            await settle(pilot)
            target = app.screen
            target.query_one("#disks", DataTable).move_cursor(row=[d.device for d in target.disks].index(dev))
            await pilot.press("enter")
            await settle(pilot)
            review = app.screen.review
            assert review is not None
            assert [c.mountpoint for c in review.copies] == ["/", "/home"]
            assert any("left out" in w for w in review.warnings)
            assert any(fs.mountpoint == "/tmp" for fs in review.filesystems)  # still made, empty


class Tmux:
    """A terminal of 80x24 with TERM=linux, in a tmux server of the test's own (its own socket)."""

    def __init__(self, name: str, command: str) -> None:
        self.base = ["tmux", "-L", name]
        run([*self.base, "-f", "/dev/null", "new-session", "-d", "-s", "wiz", "-x", "80", "-y", "24", command])

    def screen(self) -> str:
        return run([*self.base, "capture-pane", "-p", "-t", "wiz"]).stdout

    def keys(self, *keys: str) -> None:
        run([*self.base, "send-keys", "-t", "wiz", *keys])

    def wait_for(self, text: str, seconds: float = 60) -> str:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            shown = self.screen()
            if text in shown:
                return shown
            time.sleep(0.3)
        raise AssertionError(f"{text!r} did not appear within {seconds:g} s; the screen:\n{self.screen()}")

    def close(self) -> None:
        run([*self.base, "kill-server"], check=False)


def test_a_new_user_in_tmux_restores_onto_a_smaller_disk_with_no_option(demo, tmp_path):
    """From the first screen to the result of a real restore at 80x24, TERM=linux, keys only, onto a
    loop disk smaller than the captured 1 GiB one: the plan shrinks what has room by itself."""
    with loop_disk(tmp_path / "small.img", 800 * MiB) as target:
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in os.environ.items() if k.startswith("RESCUE_"))
        command = (f"env TERM=linux {env} {shlex.quote(sys.executable)} -m rescue wizard "
                   f"--bank {shlex.quote(str(demo['bank'].bank))} --state-dir {shlex.quote(str(tmp_path / 'state'))}"
                   f"; echo WIZARD-EXIT=$?; sleep 600")
        term = Tmux(f"rescue-wizard-test-{os.getpid()}", command)
        try:
            term.wait_for("1/7 Backups found")
            term.wait_for("Banks: ")  # the search is done, its machine listed
            time.sleep(0.5)
            term.keys("Enter")
            term.wait_for("2/7 Images")
            term.keys("n")
            shown = term.wait_for("can hold this restore")
            # walk the '>' marker to the disk made here (other disks of this machine may be listed)
            lines = shown.splitlines()
            marked = next(i for i, line in enumerate(lines) if line.lstrip().startswith(">"))
            ours = next(i for i, line in enumerate(lines) if f" {target} " in f" {line} ")
            assert "NO FIT" not in lines[ours] and "UNSAFE" not in lines[ours], lines[ours]
            if ours != marked:
                term.keys(*(["Down"] if ours > marked else ["Up"]) * abs(ours - marked))
            time.sleep(0.5)
            assert any(line.lstrip().startswith(">") and target in line for line in term.screen().splitlines())
            term.keys("Enter")
            review = term.wait_for("In short:")
            assert f"On {target} now: nothing, the disk is blank." in review  # what is destroyed comes first
            assert "shrinks from" in review  # onto a smaller disk, with no option given
            assert "More below" in review
            term.keys("n")
            term.wait_for("5/7 Confirm")
            term.keys("-l", target)
            term.keys("Enter")
            term.wait_for("6/7 Restoring")
            result = term.wait_for("7/7 Result", seconds=600)
            assert f"is restored onto {target}" in result
            assert "result:   OK" in term.wait_for("result:")
            term.keys("q")
            end = term.wait_for("WIZARD-EXIT=")
            assert "WIZARD-EXIT=0" in end
            assert f"is restored onto {target}; take out the backup disk and reboot" in end.replace("\n", "")
        finally:
            term.close()
        out = run(["blkid", "-p", "-o", "value", "-s", "PTTYPE", target], check=False).stdout.strip()
        assert out  # the disk holds the restored partition table


@aio
async def test_a_disk_a_killed_restore_left_mounted_can_be_chosen_again(demo, tmp_path):
    """`rescue restore` killed (-9) once its copy has begun leaves the target mounted in the
    runtime folder (and a copy process, if still at it). Before the wizard lists the disks it releases them (only what that
    run's journal names, under the disk's lock) and says so: the disk is not UNSAFE because
    of rescue's own leftovers, and the restore can start again (before, only a restore
    already started onto that disk released them, and the wizard could not start one)."""
    import re
    import signal
    import subprocess

    with loop_disk(tmp_path / "again.img", 1536 * MiB) as dev:
        argv = [sys.executable, "-u", "-m", "rescue", "restore", "--bank", str(demo["bank"].bank),
                "--client", demo["bank"].client, "--target", dev, "--state-dir", str(tmp_path / "state"),
                "--yes"]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            for line in proc.stdout:
                if re.match(r"^\[\d+/\d+\] copy vault", line):
                    break
            # the step's line comes before its mount: wait for the mount itself (a busy
            # machine took more than 0.3 s), then kill
            deadline = time.monotonic() + 60
            while not _mounted_from(dev) and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.05)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        try:
            await _choose_again_after_the_kill(demo, tmp_path, dev)
        finally:  # a failure here must not leave the killed run's mounts (and the loop device) behind
            for target in sorted(_mounted_from(dev), key=len, reverse=True):
                run(["umount", "-l", target], check=False)


def _mounted_from(dev: str) -> list[str]:
    """Mount points of the partitions of `dev` (mountinfo: fields after ' - ' are type, source)."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        head, _, tail = line.partition(" - ")
        if tail.split()[1].startswith(f"{dev}p"):
            points.append(head.split()[4])
    return points


async def _choose_again_after_the_kill(demo, tmp_path, dev: str) -> None:
    left = probe_disk(dev, backup_sources=(demo["bank"].bank,))
    assert left.unsafe_reasons, "the killed restore left nothing mounted: the test proves nothing"
    app = make_app(engine_for(demo, tmp_path, dev))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert isinstance(app.screen, ResumeScreen)  # offered first; the person starts anew
        await pilot.press("n")
        await settle(pilot)
        await pilot.press("enter")  # the machine
        await settle(pilot)
        await pilot.press("n")  # its newest good images
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, TargetScreen)
        disk = next(d for d in screen.disks if d.device == dev)
        assert not disk.unsafe_reasons, disk.unsafe_reasons
        status = str(screen.query_one("#status").render())
        assert f"{dev}: released the mounts of an earlier run" in status, status
    assert _mounted_from(dev) == [], "a partition of the target is still mounted"
