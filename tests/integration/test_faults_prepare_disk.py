"""kill -9 of `rescue prepare-disk` at a handful of moments, then the same command again.

The rerun resumes (steps the killed run finished are skipped, a mount it
left is released) and the disk then is what an uninterrupted run makes:
the same partitions, filesystems, labels, boot code, rescue image, bank and
DISKLABEL. Disk image files only; the journal lives in the test's folder.
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from rescue import bootcode
from rescue.devices import attached, detach, make_image_file, partition_path
from rescue.engine.journal import Journal
from rescue.errors import Exit
from rescue.image import bmap as bmapmod
from rescue.run import run

REPO = Path(__file__).resolve().parents[2]
GIB = 1 << 30


def argv(disk: Path, image: Path, state: Path) -> list[str]:
    return [sys.executable, "-u", "-m", "rescue", "prepare-disk", str(disk), "--image", str(image), "--yes",
            "--state-dir", str(state)]


def loops_of(disk: Path) -> list[str]:
    return run(["losetup", "--noheadings", "--output", "NAME", "--associated", str(disk)]).stdout.split()


def probe(dev: str) -> dict[str, str]:
    out = run(["blkid", "-p", "-o", "export", dev], check=False).stdout
    return {k: v for k, v in (line.split("=", 1) for line in out.splitlines() if "=" in line)
            if k in ("TYPE", "LABEL", "PART_ENTRY_NAME", "PART_ENTRY_TYPE", "PART_ENTRY_SIZE", "PART_ENTRY_OFFSET")}


def facts(disk: Path, image: Path, mnt: Path) -> dict:
    """What an uninterrupted prepare-disk leaves, without what is random per run (ids, UUIDs)."""
    with attached(disk) as dev:
        parts = {n: probe(partition_path(dev, n)) for n in (1, 2, 3, 4)}
        bmapmod.verify_target(partition_path(dev, 3), bmapmod.load(image.with_suffix(".bmap")))
        ptuuid = run(["blkid", "-p", "-s", "PTUUID", "-o", "value", dev]).stdout.strip()
        esp = sorted(bootcode.esp_listing(partition_path(dev, 2)))
        mnt.mkdir(exist_ok=True)
        run(["mount", "-o", "ro", partition_path(dev, 4), str(mnt)])
        try:
            top, bank = os.stat(mnt), os.stat(mnt / "dirvish")
            label = (mnt / "DISKLABEL").read_text()
            backup = {"top": oct(stat.S_IMODE(top.st_mode)), "bank": oct(stat.S_IMODE(bank.st_mode)),
                      "owners": (top.st_uid, bank.st_uid),
                      "disklabel_is_label_and_disk_id": label == f"BACKUP-{ptuuid.split('-')[0]}\n",
                      "files": sorted(os.listdir(mnt))}
        finally:
            run(["umount", str(mnt)])
        return {"parts": parts, "bios_core_lba": bootcode.read_bios_boot(dev), "esp": esp, "backup": backup}


class Prepare:
    """prepare-disk in a child process whose step lines are read as they come."""

    def __init__(self, cmd: list[str]) -> None:
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.out: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            self.lines.put(line)
        self.lines.put(None)

    def kill_in_step(self, number: int, delay: float) -> bool:
        """SIGKILL `delay` seconds after step `number` starts. True only if it died in that step:
        False if the run ended first or had gone on to the next step (a fast machine with the
        image in the page cache writes the rescue image in well under a second)."""
        while True:
            line = self.lines.get(timeout=300)
            if line is None:
                self.proc.wait(timeout=60)
                return False
            self.out.append(line)
            if line.startswith(f"[{number}/"):
                time.sleep(delay)
                self.proc.send_signal(signal.SIGKILL)  # a no-op once it has exited
                self.proc.wait(timeout=60)
                while (rest := self.lines.get(timeout=60)) is not None:
                    self.out.append(rest)
                later = any(x.startswith(f"[{number + 1}/") for x in self.out)
                return self.proc.returncode == -signal.SIGKILL and not later


# Dies as the bank step starts, while the backup filesystem is mounted by the killed run.
KILL_WHILE_MOUNTED = r"""
import os, signal, sys
from rescue.steps.bank import MakeBank
MakeBank.run = lambda self, ctx: os.kill(os.getpid(), signal.SIGKILL)
from rescue.cli import main
sys.exit(main(sys.argv[1:]))
"""

# (step number, seconds after it started): the partition table, halfway through the rescue image,
# the boot code, the backup mkfs; the last moment is the bank step with the backup filesystem mounted
MOMENTS = [(2, 0.0), (3, 1.0), (5, 0.0), (6, 0.0), ("mounted", 0.0)]


@pytest.fixture(scope="module")
def reference(rescue_image: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("reference")
    disk = make_image_file(tmp / "ref.img", 2 * GIB)
    p = subprocess.run(argv(disk, rescue_image, tmp / "state"), capture_output=True, text=True, cwd=REPO,
                       timeout=900, stdin=subprocess.DEVNULL)
    assert p.returncode == Exit.OK, p.stdout + p.stderr
    assert loops_of(disk) == [], "an uninterrupted run detaches the loop device it attached"
    # a finished preparation is never resumed: the same command prepares the disk again, every step
    again = subprocess.run(argv(disk, rescue_image, tmp / "state"), capture_output=True, text=True, cwd=REPO,
                           timeout=900, stdin=subprocess.DEVNULL)
    assert again.returncode == Exit.OK, again.stdout + again.stderr
    assert "an earlier prepare-disk onto this disk finished" in again.stdout and "done already" not in again.stdout
    found = facts(disk, rescue_image, tmp / "mnt")
    assert [found["parts"][n]["PART_ENTRY_NAME"] for n in (1, 2, 3, 4)] == ["bios-boot", "esp", "rescue", "backup"]
    assert found["backup"]["disklabel_is_label_and_disk_id"] and found["backup"]["top"] == "0o700"
    disk.unlink()
    return found


@pytest.mark.parametrize(("step", "delay"), MOMENTS, ids=[f"step{s}+{d}s" for s, d in MOMENTS])
def test_kill9_then_rerun_resumes_and_makes_the_same_backup_disk(step, delay, rescue_image: Path, reference: dict,
                                                                tmp_path: Path):
    disk = make_image_file(tmp_path / "backup.img", 2 * GIB)
    state = tmp_path / "state"
    cmd = argv(disk, rescue_image, state)
    try:
        if step == "mounted":
            p = subprocess.run([sys.executable, "-c", KILL_WHILE_MOUNTED, *cmd[4:]], capture_output=True, text=True,
                               cwd=REPO, timeout=900)
            assert p.returncode == -signal.SIGKILL, p.stdout + p.stderr
            loop = loops_of(disk)[0]
            assert partition_path(loop, 4) in Path("/proc/self/mountinfo").read_text() or any(
                f" {partition_path(loop, 4)} " in line for line in Path("/proc/self/mounts").read_text().splitlines()
            ), "the killed run left the backup filesystem mounted"
        else:
            for wait in (delay, delay / 4, 0.0):
                killed = Prepare(cmd)
                if killed.kill_in_step(step, wait):
                    break
                # it got past the moment: everything it left is let go of, and the run made again, sooner
                _release(disk)
                shutil.rmtree(state, ignore_errors=True)
            else:
                pytest.fail(f"prepare-disk never died inside step {step}:\n" + "".join(killed.out))
            assert loops_of(disk), "".join(killed.out) + run(["losetup", "-l"]).stdout
        journal = Journal.load(next(state.glob("*/journal.json")))
        # finished steps whose work stays on the disk (a mount is made again by every run)
        done = [k for k, v in journal.steps.items() if v.get("state") == "done" and not k.startswith(("mount", "unmount"))]
        assert loops_of(disk), "the killed run's loop device is still attached"
        rerun = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=900, stdin=subprocess.DEVNULL)
        out = rerun.stdout + rerun.stderr
        assert rerun.returncode == Exit.OK, out
        if done:
            assert "resuming an earlier run" in out, out
            # the steps the killed run finished are not done again (all of them, as the disk still shows them)
            assert out.count("done already:") == len(done), out
        if step == "mounted":
            assert "released the mounts of an earlier run" in out, out
        assert not any(partition_path(loop, 4) in line.split()[:1]
                       for loop in loops_of(disk) for line in Path("/proc/self/mounts").read_text().splitlines())
        for loop in loops_of(disk):  # the killed run's loop device, reused by the rerun
            detach(loop)
        assert facts(disk, rescue_image, tmp_path / "mnt") == reference
    finally:
        _release(disk)


def _release(disk: Path) -> None:
    """Unmount and detach what a run onto `disk` left attached."""
    for loop in loops_of(disk):
        for line in Path("/proc/self/mounts").read_text().splitlines():
            if line.split()[0].startswith(loop + "p"):
                run(["umount", line.split()[1]], check=False)
        detach(loop)
