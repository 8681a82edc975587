"""md RAID and LVM in a capture (issue 17): the parsers and the plan's refusal.

The raw files in data/lvm-md/ were RECORDED inside the rescue VM by `rescue capture --out`
(tests/vm/test_lvm_md_capture.py; mdadm 4.2, lvm2 2.03.16): this build host's kernel has
neither md nor device-mapper, so no array or volume group can be made here. See its README.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from plan_fixtures import GIB, images, target

from rescue.capture.build import build_layout
from rescue.capture.collect import Raw, _layers, layered
from rescue.errors import LayoutError, PlanRefused
from rescue.layout import stack
from rescue.layout.lsblk import parse_lsblk
from rescue.layout.model import BlockLayers, Layout
from rescue.plan import PlanOptions, build_plan
from rescue.run import Result

DATA = Path(__file__).resolve().parent / "data" / "lvm-md"
MIB = 1 << 20


def recorded() -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in DATA.iterdir() if p.name not in ("README", "layout.json")}


@pytest.fixture(scope="module")
def layout() -> Layout:
    return build_layout(recorded(), client="lvmtest", captured_at="2026-12-04T23:43:00+00:00")


def test_the_md_array_keeps_every_identifier_a_rebuild_needs(layout):
    (md,) = layout.layers.md
    assert (md.device, md.uuid, md.name) == ("/dev/md0", "a1b83783:b8cf8b8a:ab25223a:5c381a1b", "lvmtest:0")
    assert (md.level, md.metadata, md.raid_devices) == ("raid1", "1.2", 2)
    assert (md.bitmap, md.consistency, md.data_offset, md.chunk) == ("internal", "bitmap", 2048, None)
    assert md.size == 259072 * 1024
    assert [(m.device, m.role, m.state) for m in md.members] == [
        ("/dev/vdb1", "0", "active sync"), ("/dev/vdc1", "1", "active sync")]
    assert [m.dev_uuid for m in md.members] == ["742818b2:f030e96c:cb106ac9:8f899e1c",
                                                "1f82fa46:276be8bc:b64bce2f:e8480d68"]
    assert {(m.data_offset, m.super_offset, m.events) for m in md.members} == {(2048, 8, 21)}
    assert layout.layers.mdadm_conf == "mdadm.conf"


def test_the_volume_group_its_pv_and_every_lv_with_the_thin_pool_sizes(layout):
    (vg,) = layout.layers.vgs
    assert (vg.name, vg.uuid, vg.extent_size) == ("vgtest", "dJBO1d-vmgR-4tdS-3rHa-BHso-M96t-03cyvO", 4 * MIB)
    assert [(p.device, p.uuid, p.pe_start) for p in vg.pvs] == [
        ("/dev/md0", "W5GyWV-JV5b-GIqU-eKnA-YhI1-DGI0-mb8kKb", MIB)]
    lvs = {lv.name: lv for lv in vg.lvs}
    assert {"root", "home", "swap", "pool", "thin", "pool_tdata", "pool_tmeta", "lvol0_pmspare"} == set(lvs)
    assert (lvs["root"].size, lvs["root"].segtype, lvs["root"].path) == (64 * MIB, "linear", "/dev/vgtest/root")
    assert lvs["root"].uuid == "XU6hP7-YMft-V8K4-b4Wy-zqQE-GJWA-8Gewod"
    pool = lvs["pool"]
    assert (pool.segtype, pool.size, pool.metadata_size, pool.chunk_size) == ("thin-pool", 32 * MIB, 4 * MIB, 128 * 1024)
    assert (pool.data_lv, pool.metadata_lv, pool.path) == ("pool_tdata", "pool_tmeta", None)
    assert (lvs["thin"].segtype, lvs["thin"].pool, lvs["thin"].size) == ("thin", "pool", 64 * MIB)
    assert all(len(lv.uuid) == 38 for lv in vg.lvs)
    assert vg.config_file == "lvm-vgcfgbackup-vgtest.txt"
    assert f'id = "{vg.uuid}"' in (DATA / vg.config_file).read_text()


def test_the_disks_identity_and_the_filesystems_on_the_lvs_once_each(layout):
    disks = {d.device: d for d in layout.layers.disks}
    assert {"/dev/vda", "/dev/vdb", "/dev/vdc"} <= set(disks)
    assert (disks["/dev/vdb"].size, disks["/dev/vdb"].logical_sector, disks["/dev/vdb"].physical_sector) == \
        (256 * MIB, 512, 512)
    by_label = {fs.label: fs for fs in layout.filesystems if fs.label}
    assert by_label["lvroot"].device == "/dev/mapper/vgtest-root" and by_label["lvroot"].mountpoint == "/mnt/t"
    assert by_label["lvhome"].mountpoint == "/mnt/t/home" and by_label["lvswap"].fstype == "swap"
    devices = [fs.device for fs in layout.filesystems]
    assert len(devices) == len(set(devices)), "an LV on a RAID1 shows under both disks: recorded once"
    assert any("recorded (md arrays, LVM, LUKS)" in w for w in layout.warnings)


def test_layers_go_through_layout_json_and_plain_layouts_stay_as_old_rescues_read_them(layout):
    again = Layout.loads(layout.dumps())
    assert again.layers == layout.layers
    assert json.loads((DATA / "layout.json").read_text())["layers"]["md"][0]["uuid"] == layout.layers.md[0].uuid
    plain = dataclasses.replace(layout, layers=None)
    assert "layers" not in json.loads(plain.dumps())
    assert Layout.loads(plain.dumps()).layers is None
    assert not BlockLayers()


def test_a_thin_pool_is_left_out_of_vgcfgrestore_and_made_by_lvcreate_with_its_sizes(layout):
    plan = build_plan(layout, images(layout), target(64 * GIB), PlanOptions(source_disk="/dev/vdb"))
    (make,) = [s for s in plan.steps if s.kind == "lvm-vg"]
    (vg,) = layout.layers.vgs
    for gone in ("pool {", "thin {", "pool_tmeta {", "pool_tdata {", "lvol0_pmspare {"):
        assert gone not in make.config, gone
    for kept in ("root {", "swap {", "home {", f'id = "{vg.uuid}"'):
        assert kept in make.config, kept
    assert make.config.count("{") == make.config.count("}")
    pool = vg.lv("pool")
    (create_pool, create_thin) = make.thin_argvs()
    assert create_pool[-3:] == ["-n", "pool", "vgtest"] and f"{pool.size}b" in create_pool
    assert f"{pool.metadata_size}b" in create_pool and "128k" in create_pool
    assert create_thin[-3:] == ["-n", "thin", "vgtest"] and "--thinpool" in create_thin
    assert f"{vg.lv('thin').size}b" in create_thin
    assert all(a == "--devices=/dev/md0" for argv in make.thin_argvs() for a in argv if a.startswith("--devices"))
    assert any("thin pool pool is made again by lvcreate" in w and "new LV UUIDs" in w for w in plan.warnings)
    assert "[ -e /dev/mapper/vgtest-thin ] || lvcreate" in plan.script()


def test_cache_and_vdo_lvs_are_refused_saying_what_to_do_by_hand(layout):
    (vg,) = layout.layers.vgs
    odd = dataclasses.replace(vg, lvs=tuple(dataclasses.replace(lv, segtype="cache") if lv.name == "home" else lv
                                            for lv in vg.lvs))
    lay = dataclasses.replace(layout, layers=dataclasses.replace(layout.layers, vgs=(odd,)))
    with pytest.raises(PlanRefused) as e:
        build_plan(lay, images(lay), target(64 * GIB), PlanOptions(source_disk="/dev/vdb"))
    assert "home (cache)" in e.value.what and "vgcfgrestore --force" in e.value.fix


def test_md_raid1_with_lvm_on_it_is_planned_with_every_identifier(layout):
    """The recorded machine without its thin pool: md0 from the disk restored (degraded),
    vgtest made again on it from its vgcfgbackup, the filesystems on the LVs."""
    (vg,) = layout.layers.vgs
    plain = dataclasses.replace(vg, lvs=tuple(lv for lv in vg.lvs if lv.name in ("root", "swap", "home")))
    lay = dataclasses.replace(layout, layers=dataclasses.replace(layout.layers, vgs=(plain,)))
    plan = build_plan(lay, images(lay), target(64 * GIB, device="/dev/sdz"), PlanOptions(source_disk="/dev/vdb"))
    kinds = [s.kind for s in plan.steps]
    assert kinds[:4] == ["wipe", "partition", "md-create", "lvm-vg"], kinds
    assert kinds[-2:] == ["lvm-off", "md-stop"], kinds
    make = plan.steps[3]
    assert make.name == "vgtest" and make.uuid == vg.uuid
    assert make.pvs == (("/dev/md0", vg.pvs[0].uuid),)  # the PV lies on the array, made under its own name
    assert make.config.startswith("# Generated by LVM2") and f'id = "{vg.uuid}"' in make.config
    assert all(a.startswith("--devices=/dev/md0") for a in make.activate_argv() if a.startswith("--devices"))
    made = {f.mountpoint: f for f in plan.filesystems}
    root = next(fs for fs in layout.filesystems if fs.label == "lvroot")
    assert made["/mnt/t"].device == "/dev/mapper/vgtest-root" and made["/mnt/t"].uuid == root.uuid
    assert made["/mnt/t/home"].size == plain.lv("home").size
    assert [s.device for s in plan.swaps] == ["/dev/mapper/vgtest-swap"]  # once, not also as /dev/dm-1
    script = plan.script()
    assert "pvcreate --devices=/dev/md0 -ff -y --uuid" in script and "vgcfgrestore --devices=/dev/md0" in script
    assert "RESCUE_VG_EOF" in script and "vgchange --devices=/dev/md0 -an vgtest" in script


def test_a_volume_group_spanning_a_disk_not_restored_is_refused(layout):
    (vg,) = layout.layers.vgs
    two = dataclasses.replace(vg, pvs=(*vg.pvs, dataclasses.replace(vg.pvs[0], device="/dev/vda4", uuid="x")))
    lay = dataclasses.replace(layout, layers=dataclasses.replace(layout.layers, vgs=(two,)))
    with pytest.raises(PlanRefused, match="also lies on /dev/vda4"):
        build_plan(lay, images(lay), target(64 * GIB), PlanOptions(source_disk="/dev/vdb"))


def test_garbage_in_the_recorded_files_is_a_layout_error_naming_the_file():
    with pytest.raises(LayoutError, match="md-x-detail.export"):
        stack.parse_export(b"MD_LEVEL raid1\n", "md-x-detail.export")
    with pytest.raises(LayoutError, match="lvm-lvs.json"):
        stack.parse_lvm(b'{"report":[{"pv":[]}]}', b'{"report":[{"vg":[]}]}', b'{"report":[{"vg":[]}]}')
    files = recorded()
    files["lvm-vgs.json"] = files["lvm-vgs.json"].replace(b'"4194304"', b'"4.00m"')
    with pytest.raises(LayoutError, match="--units b"):
        build_layout(files, client="x", captured_at="t")


def test_a_plain_machine_runs_no_mdadm_or_lvm_command():
    plain = b'{"blockdevices":[{"name":"sda","path":"/dev/sda","type":"disk","size":1073741824,' \
            b'"children":[{"name":"sda1","path":"/dev/sda1","type":"part","size":1048576,"fstype":"ext4"}]}]}'
    devices = parse_lsblk(plain, "lsblk.json")
    assert layered(devices) == ([], False)
    asked = []

    def runner(argv, ok=(0,)):
        asked.append(argv)
        return Result(list(argv), 0, "", "")

    _layers(runner, Raw(), devices)
    assert asked == []
    md, lvm = layered(parse_lsblk(DATA.joinpath("lsblk.json").read_bytes(), "lsblk.json"))
    assert md == ["/dev/md0"] and lvm


class Replay:
    """The client's answers, from the recorded files: what collect asks for md and LVM."""

    def __init__(self, vgs: bytes | None = None, mktemp: str = "/tmp/tmp.Xy12ab\n"):
        self.asked: list[list[str]] = []
        self.vgs, self.mktemp = vgs, mktemp

    def __call__(self, argv, ok=(0,)):
        argv = list(argv)
        self.asked.append(argv)
        files = {p.name: p.read_bytes().decode() for p in DATA.iterdir() if p.is_file()}
        head = argv[0]
        if argv[:3] == ["mdadm", "--detail", "--export"]:
            out = files["md-md0-detail.export"]
        elif argv[:2] == ["mdadm", "--detail"]:
            out = files["md-md0-detail.txt"]
        elif argv[:2] == ["mdadm", "--examine"]:
            out = files[f"md-examine-{argv[2].removeprefix('/dev/')}.txt"]
        elif head in ("pvs", "lvs"):
            out = files[f"lvm-{head}.json"]
        elif head == "vgs":
            out = self.vgs.decode() if self.vgs is not None else files["lvm-vgs.json"]
        elif head == "mktemp":
            out = self.mktemp
        elif head == "vgcfgbackup":
            out = ""
        elif argv[:2] == ["cat", "/tmp/tmp.Xy12ab"]:
            out = files["lvm-vgcfgbackup-vgtest.txt"]
        elif head == "find":
            out = files["disk-by-id.txt"]
        elif argv == ["cat", "/proc/mdstat"]:
            out = files["mdstat"]
        elif argv[:2] == ["cat", "/etc/mdadm/mdadm.conf"]:
            out = files["mdadm.conf"]
        else:
            return Result(tuple(argv), 1, "", "No such file or directory")
        return Result(tuple(argv), 0, out, "")


def test_collect_asks_mdadm_per_array_and_member_and_backs_up_each_vg_through_a_removed_temp_file():
    devices = parse_lsblk(DATA.joinpath("lsblk.json").read_bytes(), "lsblk.json")
    raw, client = Raw(), Replay()
    _layers(client, raw, devices)
    assert ["mdadm", "--examine", "/dev/vdb1"] in client.asked and ["mdadm", "--examine", "/dev/vdc1"] in client.asked
    assert ["vgcfgbackup", "-f", "/tmp/tmp.Xy12ab", "vgtest"] in client.asked
    assert client.asked[-1] == ["rm", "-f", "/tmp/tmp.Xy12ab"], "the temporary file is removed"
    for name in ("md-md0-detail.export", "md-md0-detail.txt", "md-examine-vdb1.txt", "lvm-lvs.json",
                 "lvm-vgcfgbackup-vgtest.txt", "disk-by-id.txt", "mdadm.conf", "mdstat"):
        assert raw.files[name] == (DATA / name).read_bytes(), name
    assert "lvm-system.devices" not in raw.files  # the machine has none: no warning either
    assert raw.warnings == []


def test_collect_refuses_odd_vg_names_and_temp_paths_from_the_client():
    devices = parse_lsblk(DATA.joinpath("lsblk.json").read_bytes(), "lsblk.json")
    odd = b'{"report":[{"vg":[{"vg_name":"-rf /", "vg_uuid":"u", "vg_extent_size":"4194304"}]}]}'
    raw, client = Raw(), Replay(vgs=odd)
    _layers(client, raw, devices)
    assert not [a for a in client.asked if a[0] in ("vgcfgbackup", "mktemp")]
    assert any("odd name" in w for w in raw.warnings)
    raw, client = Raw(), Replay(mktemp="/etc/passwd\n")
    _layers(client, raw, devices)
    assert not [a for a in client.asked if a[0] in ("vgcfgbackup", "rm")]
    assert any("mktemp" in w for w in raw.warnings)
