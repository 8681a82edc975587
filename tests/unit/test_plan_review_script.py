"""The review a person reads and the restore.sh a person could run."""

from __future__ import annotations

import dataclasses
import shutil

from plan_fixtures import GIB, image, images, layout, target, used_target

from rescue.plan import PlanOptions, build_plan
from rescue.plan.script import marker_name
from rescue.run import run


def gpt_plan(size=20 * GIB, tgt=None, **opts):
    lay = layout("gpt")
    imgs = tuple(i for i in images(lay) if i.vault != "tmp")
    return build_plan(lay, imgs, tgt or used_target(size), PlanOptions(**opts))


def test_review_fits_an_80_column_console_and_says_what_matters():
    text = gpt_plan(grow="/home").review()
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 79
    assert "WILL BE DESTROYED on /dev/sdb:" in text
    assert "/dev/sdb1: 5 GiB ntfs label DATA" in text
    assert "/home grows from 6.7 GiB to 14.7 GiB (as asked with --grow)" in " ".join(text.split())
    assert "label-id 3C6A2B8E-1D4F-4E5A-9B7C-2F8E1A9D0C11" in text
    assert "UUID 00000006-1111-4222-8333-000000000006; copy 2 GiB from" in text
    assert "no vault holds /tmp" in text
    assert "Data to copy: 5 GiB from 2 vaults" in text
    table = [line for line in lines if line.startswith("   6 ")]
    assert table == ["   6 Linux         5.3 GiB  6.7 GiB     5.3 GiB 14.7 GiB  /home xfs"]


def test_review_of_an_equal_disk_says_the_table_is_replayed():
    lay = layout("dos")
    text = build_plan(lay, images(lay), target(8 * GIB)).review()
    assert "none: every partition keeps its start and size" in text
    assert "nothing: no partitions or signatures were found on /dev/sdb" in text


def test_script_is_valid_bash_with_every_step_guarded(monkeypatch):
    monkeypatch.delenv("RESCUE_STATE_DIR", raising=False)  # the default the rescue system's script has
    plan = gpt_plan()
    text = plan.script()
    bash = shutil.which("bash")
    assert bash
    run([bash, "-n", "-c", text])
    assert text.startswith("#!/bin/bash\n")
    assert "set -euo pipefail" in text
    assert "TARGET=/dev/sdb\n" in text and f"check_target /dev/sdb {20 * GIB} N1\n" in text
    assert "STATE=${RESCUE_STATE:-/var/lib/rescue/sdb}" in text
    for i, step in enumerate(plan.steps, 1):
        assert f"# ---- step {i}/{len(plan.steps)}: {step.describe()}" in text
        if step.kind == "mount":
            assert "if mountpoint -q \"$ROOT\"" in text
        elif not step.persistent:  # runs again on every rerun (unmount)
            assert f"mark {marker_name(step.key)}" not in text
        elif step.kind in ("wipe", "partition"):  # the marker records the table id it left
            assert f"mark_seen {marker_name(step.key)} /dev/sdb PTUUID" in text
            assert f"expect {marker_name(step.key)} /dev/sdb PTUUID" in text
        elif step.kind in ("mkfs", "mkswap"):  # ... or the filesystem's UUID
            assert f"mark_seen {marker_name(step.key)} {step.device} UUID" in text
        else:
            assert f"mark {marker_name(step.key)}" in text
    assert "is mounted at" in text and "/proc/swaps" in text


def test_marker_names_are_distinct_file_names():
    keys = ["mount:/a_b", "mount:/a/b", "copy:it's odd", "copy:it's%27odd", "mkfs:/dev/sdb1"]
    names = [marker_name(k) for k in keys]
    assert len(set(names)) == len(names)
    assert all("/" not in n for n in names)


def test_odd_vault_names_are_quoted_not_executed(tmp_path):
    lay = layout("dos")
    odd = "root $(touch PWNED) `x` 'q' \"d\""
    imgs = (dataclasses.replace(image(odd, "/"), client="demo"),)
    tgt = target(8 * GIB, device="/nonexistent/rescue-test-disk")
    plan = build_plan(lay, imgs, tgt, PlanOptions(state_dir=str(tmp_path / "state")))
    script = tmp_path / "restore.sh"
    script.write_text(plan.script())
    run(["bash", "-n", str(script)])
    # run it for real: it must refuse at its safety checks, write nothing, and run nothing it quotes
    r = run(["bash", str(script)], check=False, cwd=str(tmp_path))
    assert r.returncode == 1
    assert "run me as root" in r.stderr or "is not a block device" in r.stderr
    assert not (tmp_path / "PWNED").exists() and not (tmp_path / "state").exists()


def test_client_name_cannot_break_out_of_the_script():
    lay = layout("dos", client='x"; touch /tmp/rescue-pwned; echo "')
    plan = build_plan(lay, tuple(dataclasses.replace(i, client=lay.client) for i in images(lay)), target(8 * GIB))
    text = plan.script()
    run(["bash", "-n", "-c", text])
    assert "say 'restore of x\"; touch /tmp/rescue-pwned; echo \"'\" onto /dev/sdb finished\"" in text


def test_script_refuses_a_disk_with_another_serial(tmp_path):
    """A /dev name can point at another disk after a reboot: the serial is checked when known."""
    text = gpt_plan(tgt=target(20 * GIB, serial="N1 X")).script()
    assert f"check_target /dev/sdb {20 * GIB} N1X\n" in text
    run(["bash", "-n", "-c", text])
    assert f"check_target /dev/sdb {20 * GIB} ''\n" in gpt_plan(tgt=target(20 * GIB, serial=None)).script()
    review = gpt_plan(tgt=target(20 * GIB, by_id=("/dev/disk/by-id/ata-NEW_DISK_N1",))).review()
    assert "/dev/disk/by-id/ata-NEW_DISK_N1" in review


def test_planning_again_after_a_partial_run_keeps_the_fingerprint():
    """The target's old contents change as the restore runs; the work to do does not."""
    before = gpt_plan(tgt=used_target(20 * GIB))
    during = gpt_plan(tgt=target(20 * GIB, pttype="gpt", signatures=("gpt",)))
    assert before.destroyed != during.destroyed
    assert before.fingerprint == during.fingerprint
    assert gpt_plan(tgt=target(21 * GIB)).fingerprint != before.fingerprint
    assert gpt_plan(tgt=target(20 * GIB), grow="/").fingerprint != before.fingerprint
