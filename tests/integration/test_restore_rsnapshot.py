"""Restore the demo machine from real rsnapshot snapshots and from a plain folder, onto loop disks.

rsnapshot runs with its own config in the test's folder (hourly twice, with a
night's change between, then daily), `rescue capture` as its backup_script,
so each snapshot carries the layout of its night in .rescue/localhost/. One
snapshot's localhost/ holds every filesystem of the machine; the restore must
put /home's files on the /home filesystem, not into the root's /home folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from rescue.backups import choose_images
from rescue.backups.source import ImageSource
from rescue.cli import main
from rescue.demo import DemoMachine, diff_trees
from rescue.demo.rsnapshot import make_snapshots
from rescue.devices import loop_disk
from rescue.engine.journal import Journal
from rescue.errors import Exit
from rescue.run import run

GiB = 1 << 30
NIGHT2 = "night2-report.txt"


@pytest.fixture(scope="module")
def snaps(tmp_path_factory):
    """Two nights of hourly snapshots and a daily one, a plain copy with its layout; then the disk dies."""
    tmp = tmp_path_factory.mktemp("rsnap")
    with DemoMachine(tmp / "machine") as m:
        def night2() -> None:
            (m.dir_of("/home") / NIGHT2).write_text("written on the second night\n")

        snapshots = make_snapshots(m, tmp / "snapshots", runs=("hourly", "hourly", "daily"), between=(night2,))
        plain = tmp / "copy" / "tree"  # a copy made by hand: FOLDER/tree, its layout in FOLDER/rescue
        plain.mkdir(parents=True)
        run(["rsync", "-aHAX", "--numeric-ids", f"{m.root}/", f"{plain}/"])
        assert main(["capture", "--disk", m.disk, "--root", str(m.root), "--client", "copied",
                     "--out", str(tmp / "copy" / "rescue")]) == Exit.OK
        parts = {p.mountpoint or "swap": p for p in m.partitions}
        m.detach_keep_image()
        yield {"snaps": snapshots, "parts": parts, "plain": plain, "tmp": tmp}


def test_real_rsnapshot_made_both_intervals_each_with_its_layout(snaps):
    s = snaps["snaps"]
    # retain hourly 2: the daily run moved the oldest hourly (the first night) to daily.0
    assert sorted(p.name for p in s.root.iterdir() if not p.name.startswith(".")) == ["daily.0", "hourly.0"]
    for name in ("daily.0", "hourly.0"):
        assert (s.layout_dir(name) / "layout.json").is_file(), name
    assert (s.tree("hourly.0") / "home" / NIGHT2).is_file()
    assert not (s.tree("daily.0") / "home" / NIGHT2).exists()  # daily.0 is the first night, rotated


def test_newest_is_hourly0_and_daily0_is_chosen_by_name(snaps):
    source = ImageSource(rsnapshot_roots=(snaps["snaps"].root,))
    picked = source.select("localhost")
    assert [i.name for i in picked.images] == ["hourly.0"]
    assert picked.layout is not None and picked.layout.filesystem_at("/home") is not None
    machine = source.find().machine("localhost")
    assert [i.name for i in choose_images(machine, "daily.0")] == ["daily.0"]


def compare(dev: str, parts: dict, tree: Path, where: Path) -> list[str]:
    """Each restored filesystem against its folder of the whole-machine tree."""
    problems: list[str] = []
    where.mkdir(exist_ok=True)
    children = [mp.strip("/") for mp in parts if mp.startswith("/") and mp != "/"]
    for mp, p in sorted(((k, v) for k, v in parts.items() if k.startswith("/")), key=lambda kv: len(kv[0])):
        opts = "ro,nouuid" if p.fstype == "xfs" else "ro"
        run(["mount", "-t", p.fstype, "-o", opts, f"{dev}p{p.number}", str(where)])
        try:
            exclude = ["lost+found"]
            if mp == "/":
                exclude += ["proc", "sys", "dev", "run", "var", *children]  # fixups; their own filesystems
                for child in children:  # the child's files went to its filesystem, not here
                    if os.listdir(where / child):
                        problems.append(f"/{child} in the root filesystem is not empty: {os.listdir(where / child)}")
            src = tree / mp.lstrip("/") if mp != "/" else tree
            problems += [f"{mp}: {d}" for d in diff_trees(src, where, times=True, top=False, exclude=exclude)]
        finally:
            run(["umount", str(where)])
    return problems


def test_restore_from_rsnapshot_fills_every_filesystem(snaps, tmp_path, capsys):
    s = snaps["snaps"]
    with loop_disk(tmp_path / "t.img", GiB) as dev:
        code = main(["restore", "--rsnapshot", str(s.root), "--client", "localhost", "--target", dev,
                     "--state-dir", str(tmp_path / "state"), "--yes", "--log", str(tmp_path / "r.log")])
        out = capsys.readouterr().out
        assert code == Exit.OK, out
        assert "result:   OK" in out
        assert compare(dev, snaps["parts"], s.tree("hourly.0"), tmp_path / "mnt") == []
        for p in snaps["parts"].values():
            found = run(["blkid", "-p", "-o", "value", "-s", "UUID", f"{dev}p{p.number}"]).stdout.strip()
            assert found == p.uuid, p
    log = (tmp_path / "r.log").read_text()
    assert "--exclude=/home/*" in log and "--exclude=/tmp/*" in log


def test_plan_of_the_daily_snapshot_and_restore_sh(snaps, tmp_path, capsys):
    s = snaps["snaps"]
    with loop_disk(tmp_path / "t.img", GiB) as dev:
        script = tmp_path / "restore.sh"
        code = main(["plan", "--rsnapshot", str(s.root), "--client", "localhost", "--image", "daily.0",
                     "--target", dev, "--json", "--script", str(script)])
        plan = json.loads(capsys.readouterr().out)
    assert code == Exit.OK
    copies = {st["mountpoint"]: st for st in plan["steps"] if st["kind"] == "copy"}
    assert set(copies) == {"/", "/home", "/tmp"}
    assert {c["image"] for c in copies.values()} == {"daily.0"}
    assert copies["/home"]["source"] == str(s.tree("daily.0") / "home")
    assert sorted(copies["/"]["skip"]) == ["home", "tmp"]
    assert "--exclude=/home/*" in script.read_text()


def test_restore_from_a_plain_folder(snaps, tmp_path, capsys):
    with loop_disk(tmp_path / "t.img", GiB) as dev:
        code = main(["restore", "--tree", str(snaps["plain"]), "--client", "copied", "--target", dev,
                     "--state-dir", str(tmp_path / "state"), "--yes"])
        out = capsys.readouterr().out
        assert code == Exit.OK, out
        assert compare(dev, snaps["parts"], snaps["plain"], tmp_path / "mnt") == []


def test_bad_sources_are_refused_with_what_to_do(snaps, tmp_path, capsys):
    code = main(["restore", "--rsnapshot", str(tmp_path / "nope"), "--client", "localhost",
                 "--target", "/dev/null", "--yes"])
    err = capsys.readouterr().err
    assert code == Exit.ERROR
    assert "rsnapshot root" in err and "is not a folder" in err and "--rsnapshot DIR" in err
    code = main(["plan", "--rsnapshot", str(snaps["snaps"].root), "--client", "nobody", "--target", "/dev/null"])
    err = capsys.readouterr().err
    assert code != Exit.OK and "no backups of a machine named" in err and "localhost" in err


def test_refuses_the_disk_holding_the_rsnapshot_root(snaps, tmp_path, capsys):
    def sha256(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    img = tmp_path / "backup-disk.img"
    with loop_disk(img, 512 * (1 << 20)) as dev:
        run(["mkfs.ext4", "-q", "-F", dev])
        mnt = tmp_path / "backup"
        mnt.mkdir()
        run(["mount", dev, str(mnt)])
        run(["cp", "-a", str(snaps["snaps"].root), str(mnt / "rsnapshot")])
        run(["umount", str(mnt)])
        run(["mount", "-o", "ro,noload", dev, str(mnt)])  # as the rescue system mounts the backup
        try:
            before = sha256(img)
            code = main(["restore", "--rsnapshot", str(mnt / "rsnapshot"), "--client", "localhost",
                         "--target", dev, "--state-dir", str(tmp_path / "state"), "--yes"])
            err = capsys.readouterr().err
        finally:
            run(["umount", str(mnt)])
        assert code == Exit.UNSAFE, err
        assert "holds the backup being restored" in err
        assert sha256(img) == before


# A restore in a child process that kills itself with SIGKILL while the copy of / (rsync, leaving
# the child mount points' files out) runs: the rerun resumes it with the same exclusions.
KILLER = r"""
import os, signal, sys, time
import rescue.engine.context as context
from rescue.cli import main

real_spawn = context.EngineContext.spawn
def spawn(self, argv, **kw):
    proc = real_spawn(self, argv, **kw)
    if argv[0] == "rsync" and "--dry-run" not in argv and self.key == "copy:localhost:/":
        time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGKILL)
    return proc
context.EngineContext.spawn = spawn
sys.exit(main(sys.argv[1:]))
"""


def test_killed_in_the_copy_of_root_resumes_and_matches(snaps, tmp_path):

    s = snaps["snaps"]
    state = tmp_path / "state"
    with loop_disk(tmp_path / "t.img", GiB) as dev:
        argv = ["restore", "--rsnapshot", str(s.root), "--client", "localhost", "--target", dev,
                "--state-dir", str(state), "--yes"]
        proc = subprocess.run([sys.executable, "-c", KILLER, *argv], capture_output=True, text=True, timeout=300)
        assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr
        journal = Journal.load(next(state.glob("*/journal.json")))
        assert journal.was_started("copy:localhost:/") and not journal.is_done("copy:localhost:/")
        rerun = subprocess.run([sys.executable, "-m", "rescue", *argv], capture_output=True, text=True, timeout=300)
        assert rerun.returncode == Exit.OK, rerun.stdout + rerun.stderr
        assert "resuming an earlier run" in rerun.stdout and "finishing it with rsync" in rerun.stdout
        assert compare(dev, snaps["parts"], s.tree("hourly.0"), tmp_path / "mnt") == []
