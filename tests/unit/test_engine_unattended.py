"""The unattended config: reading it strictly, and picking exactly one target disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from rescue.errors import Exit, PlanRefused
from rescue.target import ExistingPartition, TargetDisk
from rescue.unattended import (
    ConfigError,
    Selector,
    config_from_cmdline,
    load_config,
    power,
    restore_options,
    select_target,
)

GiB = 1 << 30

GOOD = """
bank = "/backup/bank"
client = "web1"
image = "2026-1126"
after = "reboot"
log_dir = "/var/log/rescue"
[target]
by_id = "ata-NEW_DISK_1"
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "rescue-unattended.toml"
    p.write_text(text)
    return p


def test_good_config_becomes_the_restore_options_every_face_gives(tmp_path):
    c = load_config(write(tmp_path, GOOD))
    assert c.client == "web1" and c.banks == (Path("/backup/bank"),) and c.after == "reboot"
    assert c.after_failure == "stay" and c.target == Selector(by_id="ata-NEW_DISK_1")
    o = restore_options(c)
    assert (o.client, o.image, o.bootloader) == ("web1", "2026-1126", "auto")
    assert o.state_dir == Path("/var/log/rescue") and o.log is not None and o.log.parent == Path("/var/log/rescue")
    assert o.face == "rescue unattended restore"  # what another console's refusal names
    assert o.fstypes == ()


def test_fstype_table_becomes_fstype_options(tmp_path):
    c = load_config(write(tmp_path, GOOD.replace("[target]", '[fstype]\n"/home" = "ext4"\n"/srv" = "xfs"\n[target]')))
    assert c.fstypes == (("/home", "ext4"), ("/srv", "xfs"))
    assert restore_options(c).fstypes == (("/home", "ext4"), ("/srv", "xfs"))


def test_source_disk_names_the_captured_disk_the_target_replaces(tmp_path):
    c = load_config(write(tmp_path, GOOD.replace("[target]", 'source_disk = "/dev/sdb"\n[target]')))
    assert c.source_disk == "/dev/sdb"
    assert restore_options(c).source_disk == "/dev/sdb" and restore_options(c).plan_options().source_disk == "/dev/sdb"
    assert restore_options(load_config(write(tmp_path, GOOD))).source_disk is None
    with pytest.raises(ConfigError, match="source_disk must be a string"):
        load_config(write(tmp_path, GOOD.replace("[target]", "source_disk = 2\n[target]")))


def test_rsnapshot_and_tree_sources_become_their_options(tmp_path):
    text = GOOD.replace('bank = "/backup/bank"', 'rsnapshot = "/backup/rsnapshot"\ntree = ["/backup/a", "/backup/b"]')
    c = load_config(write(tmp_path, text))
    assert c.banks == () and c.rsnapshot_roots == (Path("/backup/rsnapshot"),)
    assert c.source.folders == (Path("/backup/rsnapshot"), Path("/backup/a"), Path("/backup/b"))
    assert c.source.trees == (Path("/backup/a"), Path("/backup/b")) and c.source.tree_client == "web1"


@pytest.mark.parametrize(("text", "says"), [
    ('client = "x"\n[target]\ndevice = "/dev/sdb"\n', "bank"),
    ('client = "x"\nrsnapshot = 3\n[target]\ndevice = "/dev/sdb"\n', "rsnapshot must name a folder"),
    ('client = "x"\ntree = [""]\n[target]\ndevice = "/dev/sdb"\n', "tree must name a folder"),
    ('bank = "/b"\n[target]\ndevice = "/dev/sdb"\n', "client"),
    ('bank = "/b"\nclient = "x"\n', "[target]"),
    ('bank = "/b"\nclient = "x"\n[target]\ndevice = "/dev/sdb"\nby_id = "y"\n', "exactly one"),
    ('bank = "/b"\nclient = "x"\n[target]\nempty_disk_min_gib = -3\n', "positive"),
    ('bank = "/b"\nclient = "x"\nafter = "explode"\n[target]\ndevice = "/dev/sdb"\n', "after"),
    ('bank = "/b"\nclient = "x"\ntypo = 1\n[target]\ndevice = "/dev/sdb"\n', "typo"),
    ('bank = "/b"\nclient = "x"\n[fstype]\nhome = "ext4"\n[target]\ndevice = "/dev/sdb"\n', "[fstype]"),
    ('bank = "/b"\nclient = "x"\nfstype = "ext4"\n[target]\ndevice = "/dev/sdb"\n', "[fstype]"),
    ('bank = "/b"\nclient = \n', "not valid TOML"),
])
def test_bad_configs_are_refused_with_the_key_named(tmp_path, text, says):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, text))
    assert says in str(e.value)
    assert e.value.exit_code == Exit.USAGE


def test_missing_config_says_so(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path / "nope.toml")
    assert "no unattended config" in str(e.value)


def disk(dev: str, size_gib: float, *, empty: bool = True, by_id: tuple[str, ...] = (), **kw) -> TargetDisk:
    parts = () if empty else (ExistingPartition(device=dev + "1", size=GiB, fstype="ext4"),)
    return TargetDisk(device=dev, size=int(size_gib * GiB), by_id=by_id, partitions=parts, **kw)


DISKS = [
    disk("/dev/sda", 500, empty=False, holds_root=True),
    disk("/dev/sdb", 2000, empty=False, holds_backup=True),
    disk("/dev/sdc", 250, by_id=("/dev/disk/by-id/ata-NEW_DISK_1",)),
    disk("/dev/sdd", 16),
]


def test_selectors_pick_exactly_one_disk():
    assert select_target(Selector(by_id="ata-NEW_DISK_1"), DISKS).device == "/dev/sdc"
    assert select_target(Selector(by_id="/dev/disk/by-id/ata-NEW_DISK_1"), DISKS).device == "/dev/sdc"
    assert select_target(Selector(device="/dev/sdd"), DISKS).device == "/dev/sdd"
    assert select_target(Selector(empty_disk_min_gib=100), DISKS).device == "/dev/sdc"


def test_selector_matching_none_or_several_is_refused():
    with pytest.raises(PlanRefused) as e:
        select_target(Selector(empty_disk_min_gib=300), DISKS)
    assert "no disk is the only empty disk of at least 300 GiB" in e.value.what
    assert "/dev/sda 500.0 GiB (/dev/sda holds the running system)" in e.value.why
    with pytest.raises(PlanRefused) as e:
        select_target(Selector(empty_disk_min_gib=10), DISKS)
    assert "2 disks match" in e.value.what
    with pytest.raises(PlanRefused):
        select_target(Selector(by_id="ata-OTHER"), DISKS)


def test_unsafe_empty_disks_are_never_chosen_by_size():
    disks = [disk("/dev/sdc", 250, mounted=("/mnt",)), disk("/dev/sdd", 250)]
    assert select_target(Selector(empty_disk_min_gib=100), disks).device == "/dev/sdd"


def test_power_and_kernel_command_line():
    ran: list[list[str]] = []
    assert power("stay", ran.append) is None and ran == []
    argv = power("poweroff", ran.append)
    assert ran == [argv] and argv[-1] in ("poweroff", "-f")
    assert config_from_cmdline("quiet rescue.config=/backup/x.toml console=ttyS0") == Path("/backup/x.toml")
    assert config_from_cmdline("quiet") is None


def test_compare_tar_onto_names_the_drills_scratch_disk(tmp_path):
    c = load_config(write(tmp_path, GOOD.replace("[target]", 'compare_tar_onto = "virtio-rescue-d2"\n[target]')))
    assert c.compare_tar_onto == "virtio-rescue-d2"
    assert c.compare_tar_runs == 1
    assert load_config(write(tmp_path, GOOD)).compare_tar_onto is None
    runs = GOOD.replace("[target]", 'compare_tar_onto = "virtio-rescue-d2"\ncompare_tar_runs = 3\n[target]')
    assert load_config(write(tmp_path, runs)).compare_tar_runs == 3
    for bad in ("0", "10", '"3"', "true"):
        with pytest.raises(ConfigError, match="compare_tar_runs must be a whole number from 1 to 9"):
            load_config(write(tmp_path, GOOD.replace("[target]", f"compare_tar_runs = {bad}\n[target]")))


TWO_DISKS = GOOD.replace('[target]\nby_id = "ata-NEW_DISK_1"\n', '''skip_disks = ["/dev/sdc"]
[[targets]]
disk = "/dev/sda"
by_id = "ata-NEW_DISK_1"
[[targets]]
disk = "WD-SERIAL-2"
device = "/dev/sdf"
''')


def test_targets_map_each_captured_disk_to_its_own_new_disk(tmp_path):
    from rescue.unattended import select_targets

    c = load_config(write(tmp_path, TWO_DISKS))
    assert c.target is None and c.skip_disks == ("/dev/sdc",)
    assert c.targets == (("/dev/sda", Selector(by_id="ata-NEW_DISK_1")), ("WD-SERIAL-2", Selector(device="/dev/sdf")))
    disks = [TargetDisk(device="/dev/sde", size=GiB, by_id=("/dev/disk/by-id/ata-NEW_DISK_1",)),
             TargetDisk(device="/dev/sdf", size=GiB)]
    devices = select_targets(c, disks)
    assert devices == ("/dev/sde", "/dev/sdf")
    o = restore_options(c, devices)
    assert o.disk_map == (("/dev/sda", "/dev/sde"), ("WD-SERIAL-2", "/dev/sdf")) and o.skip_disks == ("/dev/sdc",)
    with pytest.raises(PlanRefused):  # the second new disk is not there: nothing is guessed
        select_targets(c, disks[:1])


@pytest.mark.parametrize("text", [
    TWO_DISKS + '[target]\ndevice = "/dev/sdb"\n',  # both forms
    TWO_DISKS.replace('disk = "/dev/sda"\n', ""),  # no captured disk named
    TWO_DISKS.replace('device = "/dev/sdf"\n', 'device = "/dev/sdf"\nby_id = "x"\n'),  # two selectors
    TWO_DISKS.replace('skip_disks = ["/dev/sdc"]', 'skip_disks = "/dev/sdc"'),
])
def test_bad_targets_are_refused_by_key(tmp_path, text):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, text))
    assert "target" in e.value.what or "skip_disks" in e.value.what
