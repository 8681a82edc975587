"""Plans from a whole-machine image (an rsnapshot snapshot, a plain folder): one tree, every filesystem."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from plan_fixtures import GIB, SIZES, images, layout, target

from rescue.backups.model import Image, ImageStatus, SourceKind
from rescue.plan import PlanOptions, build_plan
from rescue.steps import CopyTree

SNAP = Path("/backup/rsnapshot/daily.0")


def snapshot(kind: SourceKind = SourceKind.RSNAPSHOT) -> Image:
    return Image(kind=kind, bank=SNAP.parent, vault="demo", name="daily.0", path=SNAP, tree=SNAP / "demo",
                 client="demo", source="/", status=ImageStatus.SUCCESS, layout_dir=SNAP / ".rescue" / "demo")


def copies(plan) -> dict[str, CopyTree]:
    return {s.mountpoint: s for s in plan.steps if isinstance(s, CopyTree)}


def test_each_filesystem_is_copied_from_its_folder_of_the_snapshot():
    lay = dataclasses.replace(layout("gpt"), root="/mnt/captured")  # capture --root: not part of the tree
    plan = build_plan(lay, (snapshot(),), target(SIZES["gpt"]), PlanOptions())
    found = copies(plan)
    assert set(found) == {"/", "/home", "/tmp"}  # not the ESP: grub-install fills it
    assert found["/home"].source == SNAP / "demo" / "home" and found["/"].source == SNAP / "demo"
    assert found["/"].skip == ("boot/efi", "home", "tmp")  # their files belong on their own filesystems
    assert found["/home"].skip == () and found["/tmp"].skip == ()
    assert len({c.key for c in found.values()}) == 3  # one journal entry each
    assert not any("no vault holds /home" in w for w in plan.warnings)
    script = plan.script()
    assert "--exclude=/home/*" in script and "--exclude=/tmp/*" in script


def test_a_plain_folder_is_a_whole_machine_too():
    plan = build_plan(layout("gpt"), (snapshot(SourceKind.PLAIN),), target(20 * GIB), PlanOptions())
    assert set(copies(plan)) == {"/", "/home", "/tmp"}


def test_dirvish_vaults_keep_one_copy_each_without_excludes():
    lay = layout("gpt")
    plan = build_plan(lay, images(lay), target(SIZES["gpt"]), PlanOptions())
    assert all(c.skip == () and c.key == f"copy:{c.vault}" for c in copies(plan).values())
