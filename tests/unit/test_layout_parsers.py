"""lsblk, findmnt, fstab, df, /proc/swaps: real outputs and hand-made edge cases."""

from __future__ import annotations

from pathlib import Path

import pytest

from rescue.errors import LayoutError
from rescue.layout import (
    FstabEntry,
    Mount,
    Swap,
    parse_df,
    parse_findmnt,
    parse_fstab,
    parse_lsblk,
    parse_swaps,
)
from rescue.layout.lsblk import walk

SAMPLES = Path(__file__).parent / "layout_samples"


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def test_lsblk_of_a_loop_disk_without_udev() -> None:
    (disk,) = parse_lsblk(sample("lsblk-loop.json"))
    assert (disk.path, disk.type, disk.size, disk.log_sec) == ("/dev/loop9", "loop", 2 * 1024**3, 512)
    parts = [d for d in walk((disk,)) if d.type == "part"]
    assert [p.path for p in parts] == [f"/dev/loop9p{i}" for i in range(1, 6)]
    assert parts[1].size == 100 * 1024**2
    # no udev on the machine that made this sample: lsblk knows no filesystem facts at all
    assert all(p.fstype is None and p.uuid is None for p in parts)


def test_lsblk_with_udev_facts_and_old_string_sizes() -> None:
    text = """{"blockdevices": [{"name": "sda", "type": "disk", "size": "500107862016", "model": "Disk  ",
      "pttype": "gpt", "ptuuid": "abc", "mountpoint": null,
      "children": [{"name": "sda1", "type": "part", "size": 536870912, "fstype": "vfat", "uuid": "7A1B-2C3D",
                    "partuuid": "p1", "mountpoints": ["/boot/efi"]},
                   {"name": "sda2", "path": "/dev/sda2", "type": "part", "size": 1, "fstype": "ext4",
                    "label": "root", "mountpoints": ["/", "/var/snap"]}]}]}"""
    (sda,) = parse_lsblk(text)
    assert (sda.path, sda.size, sda.model, sda.pttype) == ("/dev/sda", 500107862016, "Disk", "gpt")
    assert sda.children[0].mountpoints == ("/boot/efi",)
    assert sda.children[1].mountpoints == ("/", "/var/snap")
    assert sda.children[1].label == "root"


def test_findmnt_tree_is_flattened_in_order() -> None:
    mounts = parse_findmnt(sample("capture-demo/findmnt.json"))
    assert mounts == (
        Mount("/mnt/demo", "/dev/loop9p1", "ext4", "rw,relatime"),
        Mount("/mnt/demo/home", "/dev/loop9p2", "xfs", "rw,relatime,inode64,logbufs=8,logbsize=32k,noquota"),
        Mount("/mnt/demo/tmp", "/dev/loop9p4", "ext4", "rw,relatime"),
    )


def test_fstab_fields_escapes_and_defaults() -> None:
    entries = parse_fstab(sample("hand-fstab"))
    assert entries[0] == FstabEntry("UUID=2f0a2d27-4d58-4a6b-9b1b-3b7d3c1a9f00", "/", "ext4", "errors=remount-ro", 0, 1)
    assert entries[3].file == "/srv/my data"
    assert entries[4] == FstabEntry("/dev/sda3", "none", "swap", "sw", 0, 0)
    assert entries[5] == FstabEntry("tmpfs", "/run/shm", "tmpfs", "defaults", 0, 0)
    assert parse_fstab(b"") == ()


def test_df_bytes_form_of_capture() -> None:
    entries = parse_df(sample("capture-demo/df.txt"))
    assert [(e.source, e.fstype, e.target) for e in entries] == [
        ("/dev/loop9p1", "ext4", "/mnt/demo"), ("/dev/loop9p2", "xfs", "/mnt/demo/home"), ("/dev/loop9p4", "ext4", "/mnt/demo/tmp"),
    ]
    assert entries[1].size == 268435456 and entries[1].used > 0


def test_df_classic_form_of_the_old_hook_with_a_wrapped_line() -> None:
    entries = parse_df(sample("legacy/laptop/laptoproot/2003-1006-0300/df.laptop"))
    assert entries[0].source == "/dev/hda3" and entries[0].used == 4353160 * 1024 and entries[0].fstype is None
    assert entries[-1].source == "/dev/mapper/a-very-long-volume-name" and entries[-1].target == "/spare"
    assert entries[-1].size == 1032088 * 1024


def test_df_target_with_spaces() -> None:
    text = "Filesystem Type 1B-blocks Used Avail Mounted on\n/dev/sdb1 ext4 100 10 90 /media/my disk\n"
    (e,) = parse_df(text)
    assert e.target == "/media/my disk" and e.size == 100


def test_proc_swaps_in_bytes_with_escaped_names() -> None:
    assert parse_swaps(sample("hand-swaps")) == (
        Swap("/dev/sda3", 2097148 * 1024, priority=-2),
        Swap("/swap file", 1048572 * 1024, priority=10),
    )
    assert parse_swaps("Filename\tType\tSize\tUsed\tPriority\n") == ()


BAD = {
    "lsblk-size.json": (parse_lsblk, None, "not a number of bytes"),
    "lsblk-truncated.json": (parse_lsblk, 1, "not valid JSON"),
    "findmnt-no-target.json": (parse_findmnt, None, "no usable target"),
    "fstab-bad-dump": (parse_fstab, 1, "not a number"),
    "df-garbled.txt": (parse_df, 2, "not a df line"),
    "df-human.txt": (parse_df, 1, "human-readable"),
    "swaps-garbled": (parse_swaps, 2, "not a swap line"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_files_give_layout_errors(name: str) -> None:
    parser, line, words = BAD[name]
    with pytest.raises(LayoutError) as e:
        parser(sample(f"bad/{name}"), name)
    assert e.value.file == name and e.value.line == line, str(e.value)
    assert words in str(e.value)


@pytest.mark.parametrize("parser", [parse_lsblk, parse_findmnt, parse_df])
def test_empty_input_is_a_layout_error(parser) -> None:
    with pytest.raises(LayoutError, match="empty"):
        parser(b"", "x")


def test_deeply_nested_json_is_a_layout_error_not_a_recursion_error() -> None:
    with pytest.raises(LayoutError):
        parse_lsblk("[" * 100_000 + "]" * 100_000, "deep.json")
    nested = '{"name": "a", "type": "disk", "size": 1, "children": [' * 50 + "]}" * 50
    with pytest.raises(LayoutError, match="nested too deeply"):
        parse_lsblk('{"blockdevices": [' + nested + "]}", "deep.json")
