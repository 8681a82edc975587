"""`rescue plan` against real dirvish banks made with the capture hook, onto real loop disks.

The demo machines (gpt, and dos with logical partitions) are backed up twice
by real dirvish with `rescue capture` as the post-server hook; then the
disaster: the machine's disk is detached. `rescue plan` probes fresh loop
disks of other sizes, prints the review, writes restore.sh and JSON, and
refuses a disk that is too small and a disk with a mounted filesystem.
The target is never written: its image file stays all zeros.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from rescue.cli import main
from rescue.demo import DemoMachine, diff_trees, make_bank
from rescue.devices import loop_disk
from rescue.errors import Exit
from rescue.plan import Plan
from rescue.plan.migrate import check_fits
from rescue.run import run

MiB = 1 << 20
GiB = 1 << 30


def _machine(tmp: Path, **kw):
    with DemoMachine(tmp / "machine", **kw) as m:
        bank = make_bank(m, tmp / "bank")
        parts = {p.mountpoint or "swap": p for p in m.partitions}
        table = m.table
        m.detach_keep_image()
        yield {"bank": bank, "parts": parts, "table": table, "tmp": tmp}


@pytest.fixture(scope="module")
def gpt_demo(tmp_path_factory):
    yield from _machine(tmp_path_factory.mktemp("plan-gpt"))


@pytest.fixture(scope="module")
def dos_demo(tmp_path_factory):
    yield from _machine(tmp_path_factory.mktemp("plan-dos"), label="dos", logical=True, home_fs="btrfs")


def plan_cmd(demo, dev: str, *extra: str) -> list[str]:
    return ["plan", "--bank", str(demo["bank"].bank), "--client", demo["bank"].client, "--target", dev, *extra]


def untouched(image: Path) -> bool:
    with open(image, "rb") as f:
        return f.read(2 * MiB) == bytes(2 * MiB) and (f.seek(-MiB, 2) or True) and f.read() == bytes(MiB)


def plan_onto(demo, size: int, tmp_path: Path, capsys, *extra: str) -> tuple[Plan, str, str]:
    img = tmp_path / "target.img"
    script = tmp_path / "restore.sh"
    with loop_disk(img, size) as dev:
        code = main(plan_cmd(demo, dev, "--script", str(script), *extra))
        out = capsys.readouterr()
        assert code == Exit.OK, out.err
        code = main(plan_cmd(demo, dev, "--json", *extra))
        data = json.loads(capsys.readouterr().out)
        assert code == Exit.OK
    assert untouched(img), "rescue plan wrote to the target"
    plan = Plan.from_json(data)
    assert data["fingerprint"] == plan.fingerprint
    assert plan.target.device == dev and plan.target.size == size
    check_fits(plan.new_table, size // 512)
    run(["bash", "-n", str(script)])
    assert script.stat().st_mode & 0o111
    text = script.read_text()
    assert f"TARGET={dev}\n" in text and f"check_target {dev} {size} " in text
    return plan, out.out, text


def kept_identity(demo, plan: Plan) -> None:
    """PARTUUIDs, label-id, filesystem and swap UUIDs and labels as the capture recorded them."""
    assert plan.new_table.label_id == demo["table"].label_id
    for p in plan.new_table.partitions:
        old = next(q for q in demo["table"].partitions if q.number == p.number)
        assert (p.type, p.uuid, p.name) == (old.type, old.uuid, old.name)
    made = {f.mountpoint: f for f in plan.filesystems}
    for mp, part in demo["parts"].items():
        if mp == "swap":
            assert [(s.uuid, s.label) for s in plan.swaps] == [(part.uuid, part.label)]
        elif mp in made:
            assert (made[mp].uuid, made[mp].label, made[mp].fstype) == (part.uuid, part.label, part.fstype)
    assert {c.mountpoint for c in plan.copies} == {mp for mp in demo["parts"] if mp != "swap"}


def test_plan_onto_a_bigger_disk_shares_the_growth_among_the_restored_filesystems(gpt_demo, tmp_path, capsys):
    plan, review, script = plan_onto(gpt_demo, 2 * GiB, tmp_path, capsys)
    kept_identity(gpt_demo, plan)
    grown = {m.mountpoint: m.new_size - m.old_size for m in plan.migrations if m.change == "grows"}
    assert set(grown) == {c.mountpoint for c in plan.copies}  # each restored one grows, nothing else
    assert sum(grown.values()) == GiB // 512  # what the disk grew
    assert "/home grows from 320 MiB to" in review and "its share of the new space" in review
    assert "WILL BE DESTROYED" in review and "nothing: no partitions or signatures" in review
    assert max(len(line) for line in review.splitlines()) <= 79
    assert "copy vault home image" in script and "mark copy:home" in script


def test_plan_onto_a_bigger_disk_can_grow_a_chosen_partition(gpt_demo, tmp_path, capsys):
    plan, review, _ = plan_onto(gpt_demo, 2 * GiB, tmp_path, capsys, "--grow", "/home")
    home = next(m for m in plan.migrations if m.mountpoint == "/home")
    assert home.change == "grows" and "/home grows from 320 MiB to 1.3 GiB (as asked with --grow)" in review
    assert next(m for m in plan.migrations if m.mountpoint == "/tmp").change == "moves"


def test_plan_onto_a_smaller_disk_shrinks_when_the_data_fits(gpt_demo, tmp_path, capsys):
    plan, review, _ = plan_onto(gpt_demo, 800 * MiB, tmp_path, capsys)
    kept_identity(gpt_demo, plan)
    assert any(m.change == "shrinks" for m in plan.migrations) and " shrinks from " in review
    for f in plan.filesystems:
        if f.used is not None and f.vault:
            assert f.size >= f.used * 1.1 + 64 * MiB
    assert max(p.end for p in plan.new_table.partitions) <= plan.new_table.last_lba + 1


def test_plan_refuses_a_disk_that_is_too_small_and_says_by_how_much(gpt_demo, tmp_path, capsys):
    img = tmp_path / "small.img"
    with loop_disk(img, 100 * MiB) as dev:
        code = main(plan_cmd(gpt_demo, dev, "--script", str(tmp_path / "restore.sh")))
    err = capsys.readouterr().err
    assert code == Exit.REFUSED
    assert "MiB short: the filesystems need" in err and "the disk holds 100 MiB" in err
    assert "/tmp (ext4)" in err and "what to do:" in err
    assert not (tmp_path / "restore.sh").exists()
    assert untouched(img)


def test_plan_refuses_a_target_with_a_mounted_filesystem(gpt_demo, tmp_path, capsys):
    img = tmp_path / "busy.img"
    where = tmp_path / "busy"
    where.mkdir()
    with loop_disk(img, 2 * GiB) as dev:
        run(["mkfs.ext4", "-q", "-F", dev])
        run(["mount", dev, str(where)])
        try:
            code = main(plan_cmd(gpt_demo, dev))
        finally:
            run(["umount", str(where)])
    err = capsys.readouterr().err
    assert code == Exit.UNSAFE
    assert str(where) in err and "umount" in err


def test_plan_of_dos_logical_partitions_grows_the_extended_one_too(dos_demo, tmp_path, capsys):
    plan, review, _ = plan_onto(dos_demo, 2 * GiB, tmp_path, capsys)
    kept_identity(dos_demo, plan)
    changes = {m.number: m.change for m in plan.migrations}
    grown = [m for m in plan.migrations if m.change == "grows" and not m.container]
    assert grown and all(m.mountpoint for m in grown), changes
    ext = next(m for m in plan.migrations if m.container)
    inside = sum(m.new_size - m.old_size for m in grown if m.number >= 5)
    assert inside and ext.change == "grows" and ext.new_size - ext.old_size == inside
    assert "extended partition" in review


def test_plan_of_dos_logical_partitions_onto_a_smaller_disk(dos_demo, tmp_path, capsys):
    plan, review, _ = plan_onto(dos_demo, 900 * MiB, tmp_path, capsys)
    assert max(p.end for p in plan.new_table.partitions) <= 900 * MiB // 512
    assert any(m.change == "shrinks" for m in plan.migrations)


def _compare(demo, dev: str, where: Path) -> list[str]:
    """Each restored filesystem against its image tree (mounted read-only); empty when equal."""
    problems: list[str] = []
    where.mkdir(exist_ok=True)
    for mp, p in demo["parts"].items():
        if mp == "swap":
            continue
        node = f"{dev}p{p.number}"
        found = dict(line.split("=", 1) for line in
                     run(["blkid", "-p", "-o", "export", node]).stdout.splitlines() if "=" in line)
        if (found.get("TYPE"), found.get("UUID"), found.get("LABEL")) != (p.fstype, p.uuid, p.label):
            problems.append(f"{mp}: blkid says {found}")
        if found.get("PART_ENTRY_UUID", "").lower() != (p.partuuid or "").lower():
            problems.append(f"{mp}: PARTUUID {found.get('PART_ENTRY_UUID')} is not {p.partuuid}")
        run(["mount", "-t", p.fstype, "-o", "ro,nouuid" if p.fstype == "xfs" else "ro", node, str(where)])
        try:
            exclude = ["lost+found"] if p.fstype.startswith("ext") else []
            if mp == "/":
                exclude += ["proc", "sys", "dev", "run", "tmp", "var"]  # made by the fixups step
            tree = demo["bank"].image_dir(p.vault) / "tree"
            problems += [f"{mp}: {d}" for d in diff_trees(tree, where, times=True, exclude=exclude)]
            if mp == "/tmp" and os.stat(where).st_mode & 0o7777 != 0o1777:
                problems.append("/tmp: root mode is not 1777")
        finally:
            run(["umount", str(where)])
    return problems


def _unmount_under(top: Path) -> None:
    """Whatever a failed restore.sh left mounted under `top`, deepest first."""
    out = run(["findmnt", "-rn", "-o", "TARGET"]).stdout.split()
    for t in sorted((t for t in out if t == str(top) or t.startswith(str(top) + "/")), reverse=True):
        run(["umount", t], check=False)


def test_restore_sh_run_by_hand_restores_and_resumes_after_a_failure(gpt_demo, tmp_path, capsys):
    """The person's path: rescue plan --script, run it, it stops (the backup tree is not
    there: say the backup disk was not mounted), fix that, run it again: it resumes."""
    img = tmp_path / "target.img"
    script = tmp_path / "restore.sh"
    env = dict(os.environ, RESCUE_STATE=str(tmp_path / "state"), RESCUE_ROOT=str(tmp_path / "root"),
               RESCUE_WORK=str(tmp_path / "work"))
    tmp_vault = gpt_demo["parts"]["/tmp"].vault
    tree = gpt_demo["bank"].image_dir(tmp_vault) / "tree"
    hidden = tree.with_name("tree.hidden")
    with loop_disk(img, 2 * GiB) as dev:
        try:
            assert main(plan_cmd(gpt_demo, dev, "--script", str(script))) == Exit.OK
            capsys.readouterr()
            tree.rename(hidden)
            try:
                first = run(["bash", str(script)], env=env, check=False, timeout=600)
            finally:
                hidden.rename(tree)
            assert first.returncode != 0
            assert "stopped in step: 12/15: copy vault tmp" in first.stderr, first.stderr[-2000:]
            done = sorted(os.listdir(tmp_path / "state"))
            assert "done-copy:root" in done and "done-copy:tmp" not in done and "finished" not in done

            second = run(["bash", str(script)], env=env, check=False, timeout=600)
            assert second.returncode == 0, second.stderr[-3000:]
            assert "step 3/15: make ext4 on" in second.stderr and ": done already" in second.stderr
            assert "step 10/15: copy vault root image" in second.stderr
            assert "copy vault root" not in second.stderr.split("done already")[-1]
            assert "step 12/15: copy vault tmp" in second.stderr
            assert not [line for line in run(["findmnt", "-rn", "-o", "TARGET"]).stdout.split()
                        if line.startswith(str(tmp_path / "root"))], "restore.sh left mounts behind"
            assert "do not match this disk" not in second.stderr  # the same disk: its markers resume
            # a finished restore's markers never make a new run skip a step (issue 14, point 4)
            third = run(["bash", str(script)], env=env, check=False, timeout=600)
            assert third.returncode == 0, third.stderr[-3000:]
            assert "finished earlier; this is a new restore, so every step runs again: starting over" in third.stderr
            assert "done already" not in third.stderr and "step 1/15: erase old signatures" in third.stderr
            assert _compare(gpt_demo, dev, tmp_path / "check") == []
        finally:
            _unmount_under(tmp_path)


def test_restore_sh_markers_of_another_disk_under_the_same_name_are_not_followed(gpt_demo, tmp_path, capsys):
    """restore.sh stops after the partition table and two filesystems were made; the disk is then
    swapped for a blank one the kernel calls by the same name. The markers' table id is not on it:
    the rerun says so and runs every step (issue 14, point 4)."""
    from test_restore_demo import swap_for_blank

    script = tmp_path / "restore.sh"
    env = dict(os.environ, RESCUE_STATE=str(tmp_path / "state"), RESCUE_ROOT=str(tmp_path / "root"),
               RESCUE_WORK=str(tmp_path / "work"))
    root_vault = gpt_demo["parts"]["/"].vault
    tree = gpt_demo["bank"].image_dir(root_vault) / "tree"
    hidden = tree.with_name("tree.hidden")
    with loop_disk(tmp_path / "target.img", 2 * GiB) as dev:
        try:
            assert main(plan_cmd(gpt_demo, dev, "--script", str(script))) == Exit.OK
            capsys.readouterr()
            tree.rename(hidden)
            try:
                first = run(["bash", str(script)], env=env, check=False, timeout=600)
            finally:
                hidden.rename(tree)
            assert first.returncode != 0 and "stopped in step: 10/15: copy vault root" in first.stderr, \
                first.stderr[-2000:]
            table_marker = (tmp_path / "state" / f"done-partition:%2Fdev%2F{Path(dev).name}").read_text()
            assert table_marker.startswith(f"{dev} PTUUID=") and len(table_marker.strip()) > len(dev) + 8
            _unmount_under(tmp_path)
            swap_for_blank(dev, tmp_path / "blank.img", 2 * GiB)
            second = run(["bash", str(script)], env=env, check=False, timeout=600)
            assert second.returncode == 0, second.stderr[-3000:]
            assert ("do not match this disk (partition table id differs" in second.stderr
                    and "starting over" in second.stderr), second.stderr[-3000:]
            assert "done already" not in second.stderr
            assert _compare(gpt_demo, dev, tmp_path / "check") == []
        finally:
            _unmount_under(tmp_path)
