"""The restored system's LVM devices file names the new disk's PVs (issue 17): it named them by
the old disk's WWID, so LVM at boot would have ignored the new disk and found no root. Lines
of other PVs (another disk of the machine) are left as they were."""

from __future__ import annotations

from pathlib import Path

from rescue.steps.fixups import LVM_DEVICES_FILE, Fixups

OLD = """# LVM uses devices listed in this file.
# Created by LVM command vgimportdevices pid 812 at Mon Nov 30 03:00:01 2026
VERSION=1.1.2
IDTYPE=sys_wwid IDNAME=naa.5000c500a1b2c3d4 DEVNAME=/dev/sda3 PVID=W5GyWVJV5bGIqUeKnAYhI1DGI0mb8kKb PART=3
IDTYPE=sys_serial IDNAME=WD-OTHER DEVNAME=/dev/sdb1 PVID=Zz9yYxXwWvVuUtTsSrRqQpPoOnNmMlLk
"""


class Ctx:
    def __init__(self, root: Path) -> None:
        self.root, self.noted, self.notes = root, {}, []

    def data(self, key=None):
        return self.noted

    def save(self) -> None:
        pass

    def note(self, line: str) -> None:
        self.notes.append(line)


def test_the_pvs_made_again_are_named_by_their_new_device_and_verify_is_told(tmp_path):
    path = tmp_path / LVM_DEVICES_FILE.lstrip("/")
    path.parent.mkdir(parents=True)
    path.write_text(OLD)
    ctx = Ctx(tmp_path)
    step = Fixups(roots=(), pvs=(("/dev/vdd3", "W5GyWV-JV5b-GIqU-eKnA-YhI1-DGI0-mb8kKb"),))
    step._lvm_devices_file(ctx)
    lines = path.read_text().splitlines()
    assert "IDTYPE=devname IDNAME=/dev/vdd3 DEVNAME=/dev/vdd3 PVID=W5GyWVJV5bGIqUeKnAYhI1DGI0mb8kKb" in lines
    assert not any("naa.5000c500a1b2c3d4" in line for line in lines)
    assert "IDTYPE=sys_serial IDNAME=WD-OTHER DEVNAME=/dev/sdb1 PVID=Zz9yYxXwWvVuUtTsSrRqQpPoOnNmMlLk" in lines
    assert lines[:3] == OLD.splitlines()[:3]  # comments and version kept
    assert ctx.noted["rewritten"] == [LVM_DEVICES_FILE]
    assert "vgimportdevices" in ctx.notes[0] and "naa.5000c500a1b2c3d4" in ctx.notes[0]


def test_no_devices_file_or_no_pv_of_ours_changes_nothing(tmp_path):
    ctx = Ctx(tmp_path)
    Fixups(roots=(), pvs=(("/dev/vdd3", "W5GyWV-JV5b-GIqU-eKnA-YhI1-DGI0-mb8kKb"),))._lvm_devices_file(ctx)
    assert ctx.noted == {} and ctx.notes == []
    path = tmp_path / LVM_DEVICES_FILE.lstrip("/")
    path.parent.mkdir(parents=True)
    path.write_text(OLD)
    Fixups(roots=(), pvs=(("/dev/vdd3", "aaaaaa-aaaa-aaaa-aaaa-aaaa-aaaa-aaaaaa"),))._lvm_devices_file(ctx)
    assert path.read_text() == OLD and ctx.noted == {}


def test_a_pv_in_a_luks_container_keeps_its_line_its_luks_uuid_and_name_are_restored(tmp_path):
    """LVM names a PV on dm-crypt by the mapping's dm uuid (CRYPT-LUKS2-<LUKS UUID>-<name>): the
    restore keeps the LUKS UUID (kept header, or luksFormat --uuid) and opens it under the crypttab
    name, so that line names the new disk's PV already (issue 18)."""
    crypt = ("IDTYPE=dm_uuid IDNAME=CRYPT-LUKS2-5a3e3c1d7f7b4a579a552a8c6a0f0c01-vdb3_crypt "
             "DEVNAME=/dev/mapper/vdb3_crypt PVID=W5GyWVJV5bGIqUeKnAYhI1DGI0mb8kKb")
    path = tmp_path / LVM_DEVICES_FILE.lstrip("/")
    path.parent.mkdir(parents=True)
    path.write_text("VERSION=1.1.2\n" + crypt + "\n")
    ctx = Ctx(tmp_path)
    Fixups(roots=(), pvs=(("/dev/mapper/vdb3_crypt", "W5GyWV-JV5b-GIqU-eKnA-YhI1-DGI0-mb8kKb"),))._lvm_devices_file(ctx)
    assert path.read_text() == "VERSION=1.1.2\n" + crypt + "\n" and ctx.noted == {} and ctx.notes == []
