"""`rescue drill --bank DIR --client NAME --image DATE` on a real bank, end to end.

The bank is made on this host the way a user's is: the drill's demo machine
(a bootable Debian on a loop disk, dos table, BIOS) is backed up twice by
real dirvish with `rescue capture` as post-server hook into a plain folder.
Each image's tree then gets a file naming the image, so the restored disk can
tell which night it came from. The original disk is detached and deleted
(the disaster), and the real command runs as a subprocess with --image set
to the older night. It must pass every phase: its rescue VM restores a copy
of the chosen images onto a blank disk, and the restored disk boots alone to
multi-user with /, /home, swap and /tmp as captured. The bank must be exactly
as it was, and nothing may appear outside the drill's work folder.
One rescue boot and one restored boot (TCG: about 5-10 min on a busy host).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from rescue.demo.dirvish import make_bank
from rescue.devices import attached, partition_path
from rescue.drill import demo_os
from rescue.drill.demo_disk import DemoDisk, DemoFacts
from rescue.qemu import Firmware
from rescue.demo.trees import tree_digest as bank_digest
from rescue.run import run

STAMP = "etc/rescue-drill-night"  # in every image's root tree: the image's name




def make_machine_bank(tmp_path: Path) -> tuple[Path, DemoFacts, tuple[str, ...]]:
    """A bootable machine backed up twice by dirvish + capture; its disk then thrown away."""
    tarball = demo_os.build(progress=print).tarball
    with DemoDisk(tmp_path / "machine", Firmware.BIOS, tarball) as machine:
        facts = machine.build()
        bank = make_bank(machine, tmp_path / "bank", confdir=tmp_path / "etc-dirvish")  # type: ignore[arg-type]
        image = machine.image
    image.unlink()
    for name in bank.images:
        stamp = bank.image_dir("root", name) / "tree" / STAMP
        stamp.write_text(name + "\n")
    return bank.bank, facts, bank.images


def loops_of(top: Path) -> list[str]:
    return [line for line in run(["losetup", "-a"]).stdout.splitlines() if str(top) in line]


def mounts_below(top: Path) -> list[str]:
    return [line for line in Path("/proc/self/mounts").read_text().splitlines()
            if line.split()[1].startswith(str(top))]


@pytest.mark.slow
def test_a_real_bank_restores_the_chosen_older_image_and_boots(tmp_path: Path, record_property, run_drill) -> None:
    start = time.monotonic()
    bank, facts, (older, newer) = make_machine_bank(tmp_path)
    record_property("bank made (s)", round(time.monotonic() - start))
    before = bank_digest(bank)
    entries = set(os.listdir(tmp_path))
    var_tmp = set(Path("/var/tmp").glob("rescue-drill-*"))
    work = tmp_path / "work"

    drill_start = time.monotonic()
    code, text = run_drill(["--bank", str(bank), "--client", "localhost", "--image", older,
                            "--workdir", str(work), "--keep"])
    record_property("drill (s)", round(time.monotonic() - drill_start))
    try:
        assert code == 0, text[-6000:]
        assert "rescue drill: all passed" in text

        runs = json.loads((work / "report.json").read_text())
        drill = runs[-1]
        assert drill["title"] == "bank localhost"
        phases = {p["name"]: p for p in drill["phases"]}
        for p in drill["phases"]:
            record_property(p["name"], round(p["seconds"], 1))
        assert list(phases) == ["choose images", "backup disk with copies of the images",
                                "restore inside the rescue VM", "boot the restored disk"]
        assert all(p["ok"] and all(c["ok"] for c in p["checks"]) for r in runs for p in r["phases"])

        # --image chose the older night in every vault, and only that was copied
        notes = "\n".join(phases["choose images"]["notes"])
        assert f"root/{older}" in notes and f"home/{older}" in notes and newer not in notes
        assert "for bios" in notes

        booted = {c["what"]: c for c in phases["boot the restored disk"]["checks"]}
        assert {"reached multi-user (report service ran)", "hostname", "/tmp mode 1777",
                "swap active with its UUID", "report complete, powered off"} <= set(booted)
        assert booted["swap active with its UUID"]["expected"] == facts.swap_uuid
        for fs in facts.filesystems:  # the UUIDs the original machine had, before its disk was deleted
            check = booted[f"{fs.mountpoint} mounted, {fs.fstype}, UUID as captured"]
            assert check["expected"].split()[0] == fs.uuid
        assert {fs.mountpoint for fs in facts.filesystems} == {"/", "/home", "/tmp"}

        # the restored disk holds the older night (read without replaying its journal)
        with attached(work / "bank" / "new-disk.img") as disk:
            where = tmp_path / "check"
            where.mkdir()
            run(["mount", "-o", "ro,noload", partition_path(disk, 1), str(where)])
            try:
                assert (where / STAMP).read_text() == older + "\n"
            finally:
                run(["umount", str(where)])
            where.rmdir()

        # the bank was only read; nothing appeared outside the drill's work folder
        assert bank_digest(bank) == before
        assert set(os.listdir(tmp_path)) - entries == {"work"}
        assert set(Path("/var/tmp").glob("rescue-drill-*")) == var_tmp
        assert loops_of(tmp_path) == [] and mounts_below(tmp_path) == []
        assert (work / "bank" / "restored-serial.log").is_file()
    finally:
        for img in (work / "bank").glob("*.img"):
            img.unlink()
    record_property("test (s)", round(time.monotonic() - start))
