"""A machine that mounts btrfs subvolumes (Ubuntu's @ at / and @home at /home) is restored
with its subvolumes: made at their paths, the default set by path, nocow folders marked
before the copy, each mounted with subvol= and filled from its vault; snapshots left out by default
(test_plan_btrfs_snapshots has the choice)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from plan_fixtures import GIB, image, target

from rescue.layout.model import Layout
from rescue.plan import build_plan
from rescue.plan.script import render_script
from rescue.steps import CopyTree, MakeFilesystem, MakeSubvolumes, MountFilesystem

SAMPLE = Path(__file__).parent / "layout_samples" / "btrfs-capture" / "layout.json"


def sample() -> Layout:
    return Layout.loads(SAMPLE.read_text())


def vaults():
    root = sample().root.rstrip("/")
    return (image("root", root + "/", client=sample().client), image("home", root + "/home", client=sample().client))


def test_subvolumes_are_made_once_then_mounted_by_subvol_and_filled_from_their_vaults():
    plan = build_plan(sample(), vaults(), target(64 * GIB))
    kinds = [s.kind for s in plan.steps]
    mkfs = [s for s in plan.steps if isinstance(s, MakeFilesystem)]
    assert len(mkfs) == 1 and mkfs[0].uuid == "a80de8cf-a33a-47ee-9949-0b7ee0fb44e0" and mkfs[0].label == "machine"
    [sub] = [s for s in plan.steps if isinstance(s, MakeSubvolumes)]
    assert sub.device == mkfs[0].device
    assert sub.subvolumes == ("@", "@home", "@/var/lib/machines")  # parents first, no snapshots
    assert sub.default is None  # captured: the top level (5)
    assert sub.nocow == ("@/srv/vm", "@/var/lib/machines/images")
    assert kinds.index("mkfs") < kinds.index("subvolumes") < kinds.index("mount") < kinds.index("copy")
    mounts = [(m.mountpoint, m.device, m.options) for m in plan.steps if isinstance(m, MountFilesystem)]
    assert mounts == [("/", sub.device, "subvol=@"), ("/home", sub.device, "subvol=@home")]
    copies = {c.mountpoint: c.vault for c in plan.steps if isinstance(c, CopyTree)}
    assert copies == {"/": "root", "/home": "home"}
    assert plan.mount_order == ("/", "/home")


def test_snapshots_are_left_out_and_listed_and_a_subvolid_fstab_line_is_named():
    plan = build_plan(sample(), vaults(), target(64 * GIB))
    [snap] = [w for w in plan.warnings if "snapshots" in w]
    assert "@/.snapshots/1" in snap and "@home-2026-1201" in snap and "left out" in snap
    assert not any("copies into the top level" in w for w in plan.warnings)


def test_a_subvolid_fstab_line_is_named_with_the_subvol_to_use():
    lay = sample()
    vol = lay.btrfs[0]
    home = dataclasses.replace(vol.mounts[1], fstab_options="subvolid=257,compress=zstd")
    lay = dataclasses.replace(lay, btrfs=(dataclasses.replace(vol, mounts=(vol.mounts[0], home, vol.mounts[2])),))
    plan = build_plan(lay, vaults(), target(64 * GIB))
    [w] = [w for w in plan.warnings if "subvolume id" in w]
    assert "/home" in w and "subvol=@home" in w


def test_the_default_subvolume_is_set_by_path():
    lay = sample()
    lay = dataclasses.replace(lay, btrfs=(dataclasses.replace(lay.btrfs[0], default_id=256),))
    [sub] = [s for s in build_plan(lay, vaults(), target(64 * GIB)).steps if isinstance(s, MakeSubvolumes)]
    assert sub.default == "@"
    assert "btrfs subvolume set-default" in "\n".join(sub.script())


def test_restore_sh_and_review_show_the_subvolumes():
    plan = build_plan(sample(), vaults(), target(64 * GIB))
    script = render_script(plan)
    assert "btrfs subvolume create" in script and "chattr +C" in script
    assert "subvol=@home" in script
    sub = next(s for s in plan.steps if isinstance(s, MakeSubvolumes))
    assert "@/var/lib/machines" in sub.describe()


def test_the_partition_holds_every_vault_on_it():
    lay = sample()
    imgs = (dataclasses.replace(vaults()[0], size=3 * GIB), dataclasses.replace(vaults()[1], size=5 * GIB))
    plan = build_plan(lay, imgs, target(64 * GIB))
    fs = plan.filesystems[0]
    assert fs.size >= 8 * GIB


def test_a_vault_of_a_subvolume_seen_inside_another_fills_it_without_a_mount():
    root = sample().root.rstrip("/")
    imgs = (*vaults(), image("machines", root + "/var/lib/machines", client=sample().client))
    plan = build_plan(sample(), imgs, target(64 * GIB))
    copies = [c.mountpoint for c in plan.steps if isinstance(c, CopyTree)]
    assert copies == ["/", "/home", "/var/lib/machines"]
    assert "/var/lib/machines" not in [m.mountpoint for m in plan.steps if isinstance(m, MountFilesystem)]


def test_a_whole_machine_image_fills_each_subvolume_once():
    from rescue.backups.model import SourceKind

    whole = dataclasses.replace(image("all", "/", client=sample().client), kind=SourceKind.RSNAPSHOT)
    plan = build_plan(sample(), (whole,), target(64 * GIB))
    copies = {c.mountpoint: c for c in plan.steps if isinstance(c, CopyTree)}
    assert set(copies) >= {"/", "/home"}
    assert "home" in copies["/"].skip
