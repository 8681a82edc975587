"""The LVM step's choices, with the gateway's place taken by a recorder that answers as lvm
and dmsetup would: this host's kernel has no device-mapper (the commands themselves run in
tests/vm/test_md_restore.py)."""

from __future__ import annotations

import pytest

from rescue.errors import UnsafeTarget
from rescue.run import Result
from rescue.steps.lvm import MakeVolumeGroup, dm_name

PV_UUID = "W5GyWV-JV5b-GIqU-eKnA-YhI1-DGI0-mb8kKb"
VG_UUID = "dJBO1d-vmgR-4tdS-3rHa-BHso-M96t-03cyvO"
STEP = MakeVolumeGroup(name="vg-data", uuid=VG_UUID, pvs=(("/dev/sdc3", PV_UUID),),
                       config="vg-data {\n}\n", lvs=("srv", "swap"))


class Lvm:
    def __init__(self, pv: str = "", vg: str = "", mapped: dict[str, str] | None = None) -> None:
        self.pv, self.vg, self.mapped = pv, vg, mapped or {}
        self.calls: list[list[str]] = []
        self.noted: dict = {}

    def data(self, key=None):
        return self.noted

    def save(self) -> None:
        pass

    def run(self, argv, check=True, **kw):
        self.calls.append(list(argv))
        if argv[0] == "pvs":
            return Result(tuple(argv), 0 if self.pv else 5, f"  {self.pv}\n" if self.pv else "", "")
        if argv[0] == "vgs":
            return Result(tuple(argv), 0 if self.vg else 5, f"  {self.vg}\n" if self.vg else "", "")
        if argv[:2] == ["dmsetup", "deps"]:
            under = self.mapped.get(argv[-1])
            return Result(tuple(argv), 0 if under else 1, f"1 dependencies  : ({under})\n" if under else "", "")
        return Result(tuple(argv), 0, "", "")


def test_a_new_disk_gets_its_pv_and_vg_made_with_the_captured_uuids_seen_through_its_own_devices():
    ctx = Lvm()
    STEP.run(ctx)
    made = [c for c in ctx.calls if c[0] in ("pvcreate", "vgcfgrestore", "vgchange")]
    assert made[0][:6] == ["pvcreate", "--devices=/dev/sdc3", "-ff", "-y", "--uuid", PV_UUID]
    assert made[0][-1] == "/dev/sdc3" and "--restorefile" in made[0]
    assert made[1][:2] == ["vgcfgrestore", "--devices=/dev/sdc3"] and made[1][-1] == "vg-data"
    # a mapping whose name only looks like one of the VG's LVs (LUKS demo-crypt under VG demo)
    # must not stop the restore at vgcfgrestore's question
    assert "--yes" in made[1]
    assert made[2] == ["vgchange", "--devices=/dev/sdc3", "-ay", "vg-data"]
    lvm = [c for c in ctx.calls if c[0] in ("pvs", "vgs", "pvcreate", "vgcfgrestore", "vgchange")]
    assert all(c[1] == "--devices=/dev/sdc3" for c in lvm)  # never a scan of every disk
    assert ctx.noted["vg"] == {"name": "vg-data", "uuid": VG_UUID, "devices": ["/dev/sdc3"]}


def test_a_rerun_only_activates_what_the_first_run_made():
    ctx = Lvm(pv=PV_UUID, vg=VG_UUID)
    STEP.run(ctx)
    assert not any(c[0] in ("pvcreate", "vgcfgrestore", "wipefs") for c in ctx.calls)
    assert ["vgchange", "--devices=/dev/sdc3", "-ay", "vg-data"] in ctx.calls


def test_an_lv_of_that_name_active_on_other_disks_stops_the_step_before_anything_is_written():
    ctx = Lvm(mapped={dm_name("vg-data", "srv"): "sda3"})
    with pytest.raises(UnsafeTarget, match="vg--data-srv is already active, on sda3") as caught:
        STEP.run(ctx)
    assert "vgchange -an vg-data" in caught.value.fix
    assert not any(c[0] in ("pvcreate", "vgcfgrestore", "vgchange", "wipefs") for c in ctx.calls)


def test_dm_names_double_the_dashes_as_device_mapper_does():
    assert dm_name("vg-data", "my-lv") == "vg--data-my--lv" and dm_name("vgmd", "root") == "vgmd-root"


def test_restore_sh_writes_the_captured_text_and_guards_each_command():
    text = "\n".join(STEP.script())
    assert "cat > /tmp/rescue-vg-vg-data.txt <<'RESCUE_VG_EOF'\nvg-data {\n}\nRESCUE_VG_EOF" in text
    assert f"grep -q {PV_UUID} ||" in text and f"grep -q {VG_UUID} ||" in text
    assert text.endswith("vgchange --devices=/dev/sdc3 -ay vg-data")


def test_taking_lvs_out_of_a_vgcfgbackup_keeps_everything_else_byte_for_byte():
    from rescue.plan.lvm import without_lvs

    text = ('contents = "Text Format Volume Group"\ndescription = "odd {braces} in a string"\n\nvg {\n'
            '\tlogical_volumes {\n\n\t\troot {\n\t\t\tid = "a"\n\t\t\tsegment1 {\n\t\t\t\ttype = "striped"\n'
            '\t\t\t}\n\t\t}\n\n\t\tpool {\n\t\t\tid = "b"\n\t\t\tsegment1 {\n\t\t\t\ttype = "thin-pool"\n'
            '\t\t\t}\n\t\t}\n\n\t\tthin {\n\t\t\tid = "c"\n\t\t}\n\t}\n}\n')
    out = without_lvs(text, {"pool", "thin"})

    def lines(t: str) -> list[str]:  # blank lines between sections are the text format's own
        return [line for line in t.splitlines() if line.strip()]

    assert lines(out) == lines(text.replace('\t\tpool {\n\t\t\tid = "b"\n\t\t\tsegment1 {\n\t\t\t\ttype = "thin-pool"\n'
                               '\t\t\t}\n\t\t}\n\n', "").replace('\n\t\tthin {\n\t\t\tid = "c"\n\t\t}\n', ""))
    assert 'odd {braces} in a string' in out and 'root {' in out and 'pool {' not in out
    assert out.count("{") == out.count("}")
    assert without_lvs(text, set()) == text
