"""A target disk that stops answering during a step is named as the cause (root, loop devices).

A loop device detached while the Executor runs a step is what a pulled cable
looks like to the engine: the step's command fails with an I/O error, and
/sys shows the disk with no medium. The restore must fail with TargetLost
(what: the disk and the step; why: what happened to it; fix: reattach and
rerun, or choose another disk), exit code 6, and the journal must keep the
step as started and the earlier one as done. The qemu hot-unplug test
(tests/vm/test_faults_unplug.py) covers a disk that vanishes from /dev.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from rescue.devices import attach, detach, make_image_file
from rescue.engine.context import DiskIdentity, TargetLost
from rescue.engine.executor import Executor
from rescue.engine.journal import Journal
from rescue.errors import Exit, StepFailed
from rescue.run import run
from rescue.steps.base import Step


@dataclass(frozen=True)
class Write(Step):
    kind = "test-write"
    disk: str
    pull: bool = False  # detach the disk first, as if its cable came out

    @property
    def key(self) -> str:
        return f"write:{self.pull}"

    def describe(self) -> str:
        return f"write 1 MiB to {self.disk}" + (" (the disk goes away)" if self.pull else "")

    def script(self) -> list[str]:
        return []

    def run(self, ctx) -> None:
        if self.pull:
            detach(self.disk)
        ctx.run(["dd", "if=/dev/zero", f"of={self.disk}", "bs=1M", "count=1", "oflag=direct", "status=none"])


def test_a_target_detached_mid_step_fails_with_target_lost(tmp_path: Path) -> None:
    image = make_image_file(tmp_path / "target.img", 64 << 20)
    dev = attach(image)
    try:
        ident = DiskIdentity.of(dev)
        assert ident is not None and ident.lost() is None and ident.sectors == (64 << 20) // 512
        ex = Executor(target=dev, state_dir=tmp_path / "state", mount_dir=tmp_path / "mnt", recheck=lambda: None)
        with pytest.raises(StepFailed) as caught:
            ex.run([Write(dev), Write(dev, pull=True)])
        e = caught.value
        assert isinstance(e.__cause__, TargetLost) or isinstance(e, TargetLost), repr(e)
        assert e.exit_code == Exit.FAILED
        assert e.what.startswith(f"the target disk {dev} disappeared during step 2 (write 1 MiB to {dev}"), e.what
        assert "no medium" in (e.why or ""), e.why
        assert "reattach" in (e.fix or "") and "choose another disk" in (e.fix or ""), e.fix
        journal = Journal.for_target(tmp_path / "state", dev)
        assert journal.state("write:False") == "done" and journal.state("write:True") == "started"
    finally:
        run(["losetup", "-d", dev], check=False)


def test_an_identity_is_lost_when_the_disk_is_gone_or_another(tmp_path: Path) -> None:
    image = make_image_file(tmp_path / "d.img", 8 << 20)
    dev = attach(image)
    try:
        ident = DiskIdentity.of(dev)
        assert ident is not None and ident.lost() is None
        other = DiskIdentity(ident.device, ident.name, ident.devnum, ident.sectors * 2, ident.serial)
        assert "is now another disk" in (other.lost() or "")
        gone = DiskIdentity("/dev/rescue-no-such-disk", "rescue-no-such-disk", "1:1", 8, "x")
        assert "is gone" in (gone.lost() or "")
    finally:
        detach(dev)
