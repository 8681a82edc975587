"""btrfs snapshots in a restore (issue 18): restored as subvolumes holding their data, or left
out, by an explicit choice (--btrfs-snapshots, the unattended config's btrfs_snapshots, b in
the wizard's review); left out by default, and listed either way.

The sample machine (test_btrfs_subvolumes's, captured for real) has a read-only snapshot of @
at /.snapshots/1 (snapper's way) and a writable snapshot @home-2026-1201 the machine shows
nowhere. A vault that crosses into subvolumes (dirvish with xdev 0, rsnapshot) holds the
first one's files; one with xdev holds its folder empty."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from plan_fixtures import GIB, image, target

from rescue.cli import build_parser
from rescue.layout.model import Layout, Subvolume
from rescue.plan import PlanOptions, build_plan
from rescue.plan.model import Plan
from rescue.plan.script import render_script
from rescue.steps import CopyTree, MakeReadOnly, MakeSubvolumes, Verify
from rescue.tui.real import review_of
from rescue.tui.screens.target import review_text
from rescue.unattended import ConfigError, load_config, restore_options

SAMPLE = Path(__file__).parent / "layout_samples" / "btrfs-capture" / "layout.json"
RESTORE = PlanOptions(btrfs_snapshots="restore")


def sample() -> Layout:
    return Layout.loads(SAMPLE.read_text())


def vaults(tmp_path: Path, snapshot_files: bool = True) -> tuple:
    """The vaults of / and /home, their trees on disk; / holds .snapshots/1's files or its empty folder."""
    lay = sample()
    root = lay.root.rstrip("/")
    trees = {name: tmp_path / name / "tree" for name in ("root", "home")}
    (trees["root"] / "etc").mkdir(parents=True)
    (trees["root"] / "etc" / "hostname").write_text("subvols\n")
    (trees["root"] / ".snapshots" / "1").mkdir(parents=True)
    if snapshot_files:
        (trees["root"] / ".snapshots" / "1" / "etc").mkdir()
        (trees["root"] / ".snapshots" / "1" / "etc" / "hostname").write_text("subvols\n")
    (trees["home"] / "alice").mkdir(parents=True)
    return (dataclasses.replace(image("root", root + "/", client=lay.client), tree=trees["root"]),
            dataclasses.replace(image("home", root + "/home", client=lay.client), tree=trees["home"]))


def subvolumes(plan: Plan) -> MakeSubvolumes:
    [sub] = [s for s in plan.steps if isinstance(s, MakeSubvolumes)]
    return sub


def copy_of(plan: Plan, mountpoint: str) -> CopyTree:
    [c] = [c for c in plan.steps if isinstance(c, CopyTree) and c.mountpoint == mountpoint]
    return c


def test_by_default_snapshots_are_left_out_as_chosen_listed_and_not_copied_as_plain_folders(tmp_path):
    plan = build_plan(sample(), vaults(tmp_path), target(64 * GIB))
    assert plan.options.btrfs_snapshots == "leave-out" and plan.snapshots == ("@/.snapshots/1", "@home-2026-1201")
    assert subvolumes(plan).subvolumes == ("@", "@home", "@/var/lib/machines")
    [w] = [w for w in plan.warnings if "snapshots" in w]
    assert "left out (as chosen): @/.snapshots/1, @home-2026-1201" in w and "--btrfs-snapshots restore" in w
    # the tree holds the snapshot's files: the copy of / makes its folder, empty (not a plain copy in @)
    assert copy_of(plan, "/").skip == (".snapshots/1",)
    [verify] = [s for s in plan.steps if isinstance(s, Verify)]
    assert verify.copies[0].skip == (".snapshots/1",)
    assert not any(isinstance(s, MakeReadOnly) for s in plan.steps)
    assert "left out (as chosen)" in plan.review()


def test_left_out_snapshots_whose_folder_is_empty_change_nothing_in_the_copy(tmp_path):
    plan = build_plan(sample(), vaults(tmp_path, snapshot_files=False), target(64 * GIB))
    assert copy_of(plan, "/").skip == ()  # an xdev vault: its folder is empty already, cp -a copies it


def test_restore_makes_a_held_snapshot_a_subvolume_before_the_copy_and_read_only_after(tmp_path):
    plan = build_plan(sample(), vaults(tmp_path), target(64 * GIB), RESTORE)
    sub = subvolumes(plan)
    assert sub.subvolumes == ("@", "@home", "@/.snapshots/1", "@/var/lib/machines")  # parents first
    assert copy_of(plan, "/").skip == ()  # the copy of / fills the snapshot's subvolume
    [ro] = [s for s in plan.steps if isinstance(s, MakeReadOnly)]
    assert (ro.device, ro.subvolumes) == (sub.device, ("@/.snapshots/1",))
    kinds = [s.kind for s in plan.steps]
    assert kinds.index("subvolumes") < kinds.index("copy")
    assert max(i for i, k in enumerate(kinds) if k == "copy") < kinds.index("readonly-snapshots") < kinds.index("verify")
    notes = [w for w in plan.warnings if "snapshots" in w]
    assert any("restored as subvolumes holding their data: @/.snapshots/1 (read-only)" in w for w in notes), notes
    # the writable snapshot the machine showed nowhere: no vault holds it, it stays out with that reason
    assert any("left out, their files are in no vault: @home-2026-1201 (the machine showed it nowhere)" in w
               for w in notes), notes
    script = render_script(plan)
    assert "btrfs property set -ts \"$TOP\"/@/.snapshots/1 ro true" in script
    assert "make btrfs snapshots read-only again" in ro.describe() and ro.key == f"readonly-snapshots:{sub.device}"
    assert Plan.from_json(plan.to_json()).steps == plan.steps  # the journal's plan.json reads it back


def test_restore_leaves_out_a_snapshot_whose_folder_the_vault_holds_empty(tmp_path):
    plan = build_plan(sample(), vaults(tmp_path, snapshot_files=False), target(64 * GIB), RESTORE)
    assert subvolumes(plan).subvolumes == ("@", "@home", "@/var/lib/machines")
    assert not any(isinstance(s, MakeReadOnly) for s in plan.steps)
    [w] = [w for w in plan.warnings if "snapshots" in w]
    assert "@/.snapshots/1 (its folder /.snapshots/1 is empty in vault root)" in w and "in no vault" in w


def with_subvolumes(*extra: Subvolume) -> Layout:
    lay = sample()
    vol = lay.btrfs[0]
    return dataclasses.replace(lay, btrfs=(dataclasses.replace(vol, subvolumes=(*vol.subvolumes, *extra)),))


def test_nested_snapshots_come_after_their_parents_and_go_with_a_snapshot_left_out(tmp_path):
    lay = with_subvolumes(
        Subvolume(id=261, path="@home/.snap/daily", parent_id=257, uuid="u261", parent_uuid="x", snapshot=True,
                  snapshot_of="@home", seen_at="/home/.snap/daily"),
        Subvolume(id=262, path="@/.snapshots/1/inner", parent_id=259, uuid="u262", parent_uuid="y",
                  snapshot=True, readonly=True, seen_at="/.snapshots/1/inner"),
    )
    imgs = vaults(tmp_path)
    (imgs[1].tree / ".snap" / "daily" / "alice").mkdir(parents=True)
    plan = build_plan(lay, imgs, target(64 * GIB), RESTORE)
    made = subvolumes(plan).subvolumes
    assert made == ("@", "@home", "@/.snapshots/1", "@home/.snap/daily", "@/var/lib/machines")
    assert copy_of(plan, "/home").skip == ()
    # inner's folder is empty in the tree: left out, and nothing below a restored one is made for it
    assert "@/.snapshots/1/inner" not in made

    plan = build_plan(lay, imgs, target(64 * GIB))  # left out: the home copy makes the folder empty
    assert copy_of(plan, "/home").skip == (".snap/daily",)
    assert subvolumes(plan).subvolumes == ("@", "@home", "@/var/lib/machines")


def test_a_default_subvolume_that_is_a_snapshot_is_restored_as_today_whatever_the_choice(tmp_path):
    lay = sample()
    lay = dataclasses.replace(lay, btrfs=(dataclasses.replace(lay.btrfs[0], default_id=259),))
    for options in (PlanOptions(), RESTORE):
        plan = build_plan(lay, vaults(tmp_path / options.btrfs_snapshots), target(64 * GIB), options)
        sub = subvolumes(plan)
        assert sub.default == "@/.snapshots/1" and "@/.snapshots/1" in sub.subvolumes
        assert plan.snapshots == ("@home-2026-1201",)
        assert not any(isinstance(s, MakeReadOnly) for s in plan.steps)
        assert not any("@/.snapshots/1" in w for w in plan.warnings if "snapshots" in w)


def test_the_review_shows_the_choice_in_force_and_lists_the_snapshots(tmp_path):
    imgs = vaults(tmp_path)
    r = review_of(build_plan(sample(), imgs, target(64 * GIB)))
    assert (r.snapshots, r.btrfs_snapshots) == (("@/.snapshots/1", "@home-2026-1201"), "leave-out")
    assert "btrfs snapshots: LEFT OUT (b restores them as subvolumes): @/.snapshots/1" in review_text(r)
    r = review_of(build_plan(sample(), imgs, target(64 * GIB), RESTORE))
    assert "btrfs snapshots: RESTORED as subvolumes holding their data" in review_text(r)


def test_the_option_is_parsed_and_a_bad_value_is_refused(capsys):
    parser = build_parser()
    base = ["--bank", "/b", "--client", "c", "--target", "/dev/null"]
    for command in ("plan", "restore"):
        assert parser.parse_args([command, *base]).btrfs_snapshots == "leave-out"
        assert parser.parse_args([command, *base, "--btrfs-snapshots", "restore"]).btrfs_snapshots == "restore"
        with pytest.raises(SystemExit) as e:
            parser.parse_args([command, *base, "--btrfs-snapshots", "keep"])
        assert e.value.code == 2
        assert "--btrfs-snapshots: invalid choice: 'keep'" in capsys.readouterr().err


CONFIG = """
bank = "/backup/bank"
client = "web1"
{extra}
[target]
by_id = "ata-NEW_DISK_1"
"""


def test_the_unattended_config_takes_the_same_choice(tmp_path):
    path = tmp_path / "rescue-unattended.toml"
    path.write_text(CONFIG.format(extra=""))
    assert restore_options(load_config(path)).plan_options().btrfs_snapshots == "leave-out"
    path.write_text(CONFIG.format(extra='btrfs_snapshots = "restore"'))
    c = load_config(path)
    assert c.btrfs_snapshots == "restore" and restore_options(c).plan_options().btrfs_snapshots == "restore"
    path.write_text(CONFIG.format(extra='btrfs_snapshots = "keep"'))
    with pytest.raises(ConfigError, match="btrfs_snapshots must be leave-out or restore"):
        load_config(path)


def test_a_whole_machine_tree_fills_a_restored_snapshot_and_copies_a_left_out_one_empty(tmp_path):
    from rescue.backups.model import SourceKind

    tree = vaults(tmp_path)[0].tree  # rsnapshot crosses into subvolumes: the snapshot's files are there
    whole = dataclasses.replace(image("all", "/", client=sample().client), kind=SourceKind.RSNAPSHOT, tree=tree)
    plan = build_plan(sample(), (whole,), target(64 * GIB))
    assert copy_of(plan, "/").skip == (".snapshots/1", "home", "var/lib/machines")
    plan = build_plan(sample(), (whole,), target(64 * GIB), RESTORE)
    assert copy_of(plan, "/").skip == ("home", "var/lib/machines")
    assert "@/.snapshots/1" in subvolumes(plan).subvolumes
    assert any(isinstance(s, MakeReadOnly) for s in plan.steps)
