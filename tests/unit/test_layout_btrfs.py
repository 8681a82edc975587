"""btrfs in the layout: the parsers over real btrfs-progs and lsattr output, the join into
subvolumes seen by the machine, and which of them a vault with xdev misses.

layout_samples/btrfs-capture is a whole real capture (tests/integration/test_btrfs_subvolumes.py's
machine, quotas on): `@` at / (subvol=@,compress=zstd,noatime), `@home` at /home, a nested
`@/var/lib/machines`, a read-only snapshot `@/.snapshots/1`, a writable snapshot `@home-2026-1201`
at the top level, /srv/vm and /var/lib/machines/images with +C (remade by capturing btrfs_machine there
with `btrfs quota enable`). Lines marked "real" below were copied from btrfs-progs 6.2 output.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from rescue.backups import find_backups
from rescue.backups.doctor import subvolume_findings
from rescue.backups.health import Limits, excluded, machine_health, problems
from rescue.capture.build import build_layout
from rescue.errors import LayoutError
from rescue.layout import Layout
from rescue.layout import btrfs
from rescue.layout.model import BtrfsMount

from test_backups_dirvish import summary  # noqa: E402  (tests/unit is on sys.path)

SAMPLES = Path(__file__).parent / "layout_samples"
CAPTURE = SAMPLES / "btrfs-capture"
ROOT = "/tmp/rescue-btrfs-sample/root"  # where the sample machine was mounted (--root)


def raw(name: str) -> bytes:
    [path] = CAPTURE.glob(f"btrfs-*-{name}.txt")
    return path.read_bytes()


def test_subvolume_list_paths_are_from_the_top_level():
    rows = {r.path: r for r in btrfs.parse_subvolume_list(raw("subvolumes"), "subvolumes")}
    # btrfs-progs wrote <FS_TREE>/@ for those outside the mounted @, and @/var/lib/machines for those in it
    assert set(rows) == {"@", "@home", "@/var/lib/machines", "@/.snapshots/1", "@home-2026-1201"}
    assert (rows["@"].id, rows["@"].parent_id, rows["@"].parent_uuid, rows["@"].received_uuid) == (256, 5, None, None)
    assert rows["@/var/lib/machines"].parent_id == 256
    assert rows["@/.snapshots/1"].parent_uuid == rows["@"].uuid
    assert rows["@home-2026-1201"].parent_uuid == rows["@home"].uuid


def test_subvolume_list_keeps_spaces_and_received_uuids():
    # real line shapes (btrfs-progs 6.2), a path with spaces and a received subvolume
    text = ("ID 261 gen 10 parent 257 top level 257 parent_uuid -                                    "
            "received_uuid 1b2c3d4e-0000-0000-0000-000000000001 uuid dd47bfcb-6102-da4d-95ef-b76368ee1e6b "
            "path <FS_TREE>/@home/u/my vms\n")
    [r] = btrfs.parse_subvolume_list(text, "x")
    assert (r.id, r.parent_id, r.path, r.received_uuid) == (261, 257, "@home/u/my vms",
                                                             "1b2c3d4e-0000-0000-0000-000000000001")
    # without -u -q -R (an older or plainer listing): parent from "top level", no uuids is an error
    with pytest.raises(LayoutError, match="not a `btrfs subvolume list` line"):
        btrfs.parse_subvolume_list("ID 256 gen 9 parent 5 top level 5 path @\n", "x")
    with pytest.raises(LayoutError, match="x:1"):
        btrfs.parse_subvolume_list("ERROR: not a btrfs filesystem\n", "x")


def test_readonly_default_and_qgroups():
    assert btrfs.parse_readonly_ids(raw("readonly"), "ro") == {259}
    assert btrfs.parse_readonly_ids(b"", "ro") == frozenset()
    assert btrfs.parse_get_default(raw("default"), "d") == 5
    assert btrfs.parse_get_default(b"ID 256 gen 9 top level 5 path @\n", "d") == 256  # real, after set-default
    with pytest.raises(LayoutError):
        btrfs.parse_get_default(b"ERROR: can't perform the search\n", "d")
    groups = {g.qgroupid: g for g in btrfs.parse_qgroups(raw("qgroups"), "q")}
    assert set(groups) == {"0/5", "0/256", "0/257", "0/258", "0/259", "0/260"}
    assert (groups["0/256"].referenced, groups["0/256"].exclusive, groups["0/256"].max_referenced) == (20480, 16384, None)
    # real, without -r -e (no limit columns), and with a limit set
    plain = ("Qgroupid    Referenced    Exclusive   Path \n--------    ----------    ---------   ---- \n"
             "0/5              16384        16384   <toplevel>\n0/256            16384        16384   @\n")
    assert [(g.qgroupid, g.max_referenced) for g in btrfs.parse_qgroups(plain, "q")] == [("0/5", None), ("0/256", None)]
    limited = ("Qgroupid    Referenced    Exclusive  Max referenced  Max exclusive   Path \n"
               "0/257            16384        16384      1073741824           none   @home\n")
    [g] = btrfs.parse_qgroups(limited, "q")
    assert (g.max_referenced, g.max_exclusive) == (1 << 30, None)
    with pytest.raises(LayoutError, match="not a qgroup line"):
        btrfs.parse_qgroups("0/257 lots\n", "q")


def test_nocow_keeps_the_topmost_of_each_run():
    assert btrfs.parse_nocow(raw("nocow"), "n") == (f"{ROOT}/srv/vm", f"{ROOT}/var/lib/machines/images")
    lines = ("---------------C------ /srv/vm\n---------------C------ /srv/vm/inner\n"
             "---------------C------ /srv/vm2\n---------------------- /var\n")
    assert btrfs.parse_nocow(lines, "n") == ("/srv/vm", "/srv/vm2")
    kept, odd = btrfs.nocow_lines(b"---------------C------ /a\n---------------------- /b\n"
                                  b"---------------C------ /\xff\nlsattr: Operation not supported\n")
    assert (kept, odd) == ([b"---------------C------ /a"], 1)


def test_mount_options():
    assert btrfs.mount_subvol("rw,noatime,compress=zstd:3,subvolid=256,subvol=/@") == ("/@", 256)
    assert btrfs.mount_subvol("rw,relatime") == (None, None)
    assert btrfs.compress_of("subvol=@,compress=zstd,noatime") == "zstd"
    assert btrfs.compress_of("compress-force=zstd:1") == "zstd:1"
    assert btrfs.compress_of("compress") == "zlib" and btrfs.compress_of("noatime") is None


def test_build_joins_the_real_capture():
    """layout.json of the sample is what build_layout reads from its raw files."""
    files = {p.name: p.read_bytes() for p in CAPTURE.iterdir() if p.name != "layout.json"}
    stored = Layout.loads((CAPTURE / "layout.json").read_text())
    built = build_layout(files, client=stored.client, captured_at=stored.captured_at, root=ROOT,
                         warnings=stored.warnings[:1])
    assert built == stored
    [vol] = built.btrfs
    subs = {s.path: s for s in vol.subvolumes}
    assert [(p, subs[p].seen_at, subs[p].mounted) for p in sorted(subs)] == [
        ("@", "/", True), ("@/.snapshots/1", "/.snapshots/1", False), ("@/var/lib/machines", "/var/lib/machines", False),
        ("@home", "/home", True), ("@home-2026-1201", None, False)]
    assert (subs["@/.snapshots/1"].snapshot, subs["@/.snapshots/1"].readonly) == (True, True)
    assert (subs["@home-2026-1201"].snapshot, subs["@home-2026-1201"].snapshot_of) == (True, "@home")
    mounts = {m.target: m for m in vol.mounts}
    assert mounts["/"].compress == "zstd" and mounts["/"].fstab_options == "subvol=@,compress=zstd,noatime"
    assert (mounts["/mnt/pool"].mounted, mounts["/mnt/pool"].subvolid) == (False, 5)
    assert vol.nocow == ("/srv/vm", "/var/lib/machines/images") and vol.quota and len(vol.qgroups) == 6
    assert [s.path for s in btrfs.needs_a_vault(vol)] == ["@/var/lib/machines"]
    assert any("mounted as btrfs subvolumes only" in w for w in built.warnings)


def test_older_layouts_without_btrfs_still_load():
    old = json.loads((SAMPLES / "capture-demo" / "layout.json").read_text())
    assert "btrfs" not in old
    assert Layout.loads(json.dumps(old)).btrfs == ()


def test_where_the_machine_shows_a_subvolume():
    rows = btrfs.parse_subvolume_list(raw("subvolumes"), "s")
    # no subvol= at all: the default subvolume is mounted (set-default 256, i.e. @)
    seen = {s.path: s for s in btrfs.subvolumes_seen(rows, frozenset(), [BtrfsMount(target="/")], default_id=256)}
    assert (seen["@"].seen_at, seen["@"].mounted) == ("/", True)
    assert seen["@/var/lib/machines"].seen_at == "/var/lib/machines" and seen["@home"].seen_at is None
    # the top level mounted by subvolid=5 at /mnt/pool shows everything below it
    seen = {s.path: s for s in btrfs.subvolumes_seen(
        rows, frozenset(), [BtrfsMount(target="/mnt/pool", subvolid=5)], default_id=5)}
    assert seen["@home-2026-1201"].seen_at == "/mnt/pool/@home-2026-1201"
    assert seen["@/var/lib/machines"].seen_at == "/mnt/pool/@/var/lib/machines"
    # a subvolume inside @'s own home folder is hidden by the mount of @home on /home
    hidden = btrfs.SubvolumeRow(id=300, parent_id=256, uuid="u-300", parent_uuid=None, received_uuid=None,
                                path="@/home/old")
    seen = {s.path: s for s in btrfs.subvolumes_seen(
        (*rows, hidden), frozenset(), [BtrfsMount(target="/", subvol="/@"), BtrfsMount(target="/home", subvol="/@home")],
        default_id=5)}
    assert seen["@/home/old"].seen_at is None and seen["@/var/lib/machines"].seen_at == "/var/lib/machines"
    # a writable snapshot seen in the tree holds data of its own (a machinectl clone): it needs a vault
    vol = dataclasses.replace(Layout.loads((CAPTURE / "layout.json").read_text()).btrfs[0])
    subs = tuple(dataclasses.replace(s, seen_at="/var/lib/machines/clone") if s.path == "@home-2026-1201" else s
                 for s in vol.subvolumes)
    assert {s.path for s in btrfs.needs_a_vault(dataclasses.replace(vol, subvolumes=subs))} == \
        {"@/var/lib/machines", "@home-2026-1201"}


def _vault(bank: Path, name: str, tree: str, layout: bool, xdev: bool = True, exclude: str = "") -> None:
    d = bank / name / "2026-1126-0300"
    (d / "tree").mkdir(parents=True)
    text = summary(client="web", tree=tree, image="2026-1126-0300")
    if exclude:
        text = text.replace("exclude:\n", f"exclude:\n\t{exclude}\n")
    if not xdev:
        text = text.replace("stats xdev", "stats").replace("UNSET checksum", "UNSET xdev checksum")
    (d / "summary").write_text(text)
    if layout:
        (d / "rescue").mkdir()
        (d / "rescue" / "layout.json").write_text((CAPTURE / "layout.json").read_text())


def test_health_names_the_subvolume_no_vault_holds(tmp_path):
    bank = tmp_path / "bank"
    _vault(bank, "root", ROOT, layout=True)
    _vault(bank, "home", ROOT + "/home", layout=False)
    [m] = find_backups([bank]).machines
    h = machine_health(m)
    assert (h.unheld, h.unheld_subvolumes, h.complete, h.layout_root) == ((), ("/var/lib/machines",), False, ROOT)
    assert "machine web: backup incomplete: btrfs subvolume(s) in no vault: /var/lib/machines" in \
        problems([], [h], Limits())[0]
    [f] = subvolume_findings("web", h.unheld_subvolumes, [("root", "/", True), ("home", "/home", True)], ROOT)
    assert f.code == "subvolume-not-backed-up" and "machine web: 1 btrfs subvolume(s)" in f.what
    assert "/var/lib/machines (inside vault root, tree /, xdev on)" in f.evidence
    assert f"a vault var-lib-machines with 'tree: {ROOT}/var/lib/machines' and 'xdev: 1'" in f.fix
    assert subvolume_findings("web", (), [], "/") == []

    # a vault of its own holds it
    _vault(bank, "machines", ROOT + "/var/lib/machines", layout=False)
    [m] = find_backups([bank]).machines
    assert machine_health(m).unheld_subvolumes == () and machine_health(m).complete


def test_a_vault_without_xdev_crosses_into_the_subvolume(tmp_path):
    bank = tmp_path / "bank"
    _vault(bank, "root", ROOT, layout=True, xdev=False)
    _vault(bank, "home", ROOT + "/home", layout=False)
    [m] = find_backups([bank]).machines
    assert m.vaults[1].xdev is False and m.vaults[0].xdev is True
    assert machine_health(m).unheld_subvolumes == ()


def test_a_subvolume_the_vault_above_excludes_is_left_out_on_purpose(tmp_path):
    bank = tmp_path / "bank"
    _vault(bank, "root", ROOT, layout=True, exclude="/var/lib/machines/")
    _vault(bank, "home", ROOT + "/home", layout=False)
    [m] = find_backups([bank]).machines
    assert "/var/lib/machines/" in m.vaults[1].images[-1].excludes
    assert machine_health(m).unheld_subvolumes == ()


@pytest.mark.parametrize("rel,patterns,out", [
    ("/var/lib/docker/btrfs/subvolumes/ab12", ["/var/lib/docker/"], True),
    ("/var/lib/docker/btrfs/subvolumes/ab12", ["docker"], True),
    ("/var/lib/docker/btrfs/subvolumes/ab12", ["lib/docker/"], True),
    ("/var/cache/pkg", ["/var/cache/**"], True),
    ("/var/lib/machines", ["lost+found/", "*~", "/proc/", "/var/lib/docker/"], False),
    ("/srv/docker2", ["docker"], False),
    ("/srv/data", ["/data"], False),  # anchored at the vault's tree, not anywhere
])
def test_excludes_read_as_rsync_reads_them(rel, patterns, out):
    assert excluded(rel, patterns) is out


def test_a_layout_without_btrfs_is_written_as_older_rescues_read_it():
    """An older rescue (on a backup disk's rescue partition) refuses keys it does not know."""
    lay = Layout.loads((SAMPLES / "capture-demo" / "layout.json").read_text())
    assert "btrfs" not in json.loads(lay.dumps()) and Layout.loads(lay.dumps()) == lay
    with_btrfs = Layout.loads((CAPTURE / "layout.json").read_text())
    assert json.loads(with_btrfs.dumps())["btrfs"] and Layout.loads(with_btrfs.dumps()) == with_btrfs
