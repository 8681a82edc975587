"""sfdisk dumps: real dumps parse to the right table, render replays through real sfdisk,
parse(render(t)) == t for any valid table, and bad dumps give a LayoutError with file and line."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rescue.errors import LayoutError
from rescue.layout import Partition, PartitionTable, parse_sfdisk, render_sfdisk

SAMPLES = Path(__file__).parent / "layout_samples"
GiB = 1024**3
LINUX = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def test_dos_dump_made_by_sfdisk() -> None:
    t = parse_sfdisk(sample("dos-simple.dump"), "dos-simple.dump", GiB)
    assert (t.label, t.label_id, t.device, t.unit, t.sector_size) == ("dos", "0x5e1f0001", "dos.img", "sectors", 512)
    assert [(p.number, p.start, p.size, p.type, p.bootable) for p in t.partitions] == [
        (1, 2048, 524288, "83", True),
        (2, 526336, 655360, "83", False),
        (3, 1181696, 131072, "82", False),
        (4, 1312768, 784384, "83", False),
    ]
    assert t.partitions[-1].end == GiB // 512  # the last partition fills the disk


def test_extended_and_logical_partitions() -> None:
    t = parse_sfdisk(sample("dos-extended.dump"), "dos-extended.dump", GiB)
    assert [(p.number, p.type) for p in t.partitions] == [(1, "83"), (2, "5"), (5, "82"), (6, "83"), (7, "83")]
    ext = t.partitions[1]
    assert all(ext.start < p.start and p.end <= ext.end for p in t.partitions[2:])


def test_gpt_dump_with_names_attrs_and_escapes() -> None:
    t = parse_sfdisk(sample("gpt.dump"), "gpt.dump", 2 * GiB)
    assert (t.label, t.first_lba, t.last_lba, t.label_id) == ("gpt", 2048, 4194270, "DD200ECE-41C9-E942-9353-4CF127380F67")
    names = [p.name for p in t.partitions]
    assert names == ["bios boot", "EFI system", "root fs", "swap", "home naméé x\\\\y"]
    assert t.partitions[2].attrs == "LegacyBIOSBootable"
    assert t.partitions[4].attrs == "GUID:60,62"
    assert t.partitions[1].type == "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
    assert t.partitions[0].uuid == "752BA5E9-21F0-0040-8F86-75FA3A85F151"


def test_4k_sectors_and_table_length() -> None:
    t = parse_sfdisk(sample("gpt-4k.dump"), "gpt-4k.dump", GiB)
    assert (t.sector_size, t.first_lba, t.last_lba) == (4096, 256, 262138)
    assert t.partitions[-1].end * 4096 <= GiB
    t = parse_sfdisk(sample("gpt-table-length.dump"), "gpt-table-length.dump")
    assert t.table_length == 8


def as_written(t: PartitionTable) -> PartitionTable:
    """The table less what sfdisk takes from the target disk and the restore never writes."""
    return replace(t, device=None, last_lba=None, grain=None)


@pytest.mark.parametrize("name", ["dos-simple.dump", "dos-extended.dump", "gpt.dump", "gpt-4k.dump", "gpt-table-length.dump"])
def test_render_round_trips_every_sample(name: str) -> None:
    t = parse_sfdisk(sample(name), name)
    assert parse_sfdisk(render_sfdisk(t)) == as_written(t)


@pytest.mark.parametrize("name", ["dos-extended.dump", "gpt.dump"])
def test_render_replays_through_real_sfdisk(name: str, tmp_path: Path) -> None:
    """What we render, sfdisk accepts, and its dump of the result is the table we meant."""
    assert shutil.which("sfdisk", path="/usr/sbin:/sbin:/usr/bin"), "sfdisk is needed (apt install fdisk)"
    t = parse_sfdisk(sample(name), name)
    img = tmp_path / "disk.img"
    img.write_bytes(b"")
    size = (t.last_lba + 34) * 512 if t.last_lba else 2 * GiB
    with open(img, "wb") as f:
        f.truncate(size)
    script = render_sfdisk(t, device=str(img))
    subprocess.run(["sfdisk", "--quiet", str(img)], input=script.encode(), check=True, capture_output=True)
    dump = subprocess.run(["sfdisk", "--dump", str(img)], check=True, capture_output=True).stdout
    back = parse_sfdisk(dump, "replayed")
    assert replace(back, device=None, partitions=tuple(replace(p, node=str(p.number)) for p in back.partitions)) == \
        replace(t, device=None, partitions=tuple(replace(p, node=str(p.number)) for p in t.partitions))


def test_render_for_a_target_renames_nodes() -> None:
    t = parse_sfdisk(sample("dos-extended.dump"), "x")
    text = render_sfdisk(t, device="/dev/nvme1n1")
    assert "device:" not in text and "last-lba" not in text  # the target decides them
    assert "/dev/nvme1n1p5 : start=528384" in text
    assert "ext.img" not in text


def test_legacy_dump_with_id_and_empty_slots() -> None:
    t = parse_sfdisk(sample("legacy/laptop/sfdisk.laptop"), "sfdisk.laptop")
    assert t.label == "dos" and t.device is None
    assert [(p.number, p.type) for p in t.partitions] == [(1, "83"), (2, "82"), (3, "83"), (4, "5"), (5, "83")]
    text = b"# partition table of /dev/hda\nunit: sectors\n\n/dev/hda1 : start=63, size=100, Id=83\n/dev/hda2 : start=0, size=0, Id= 0\n"
    assert len(parse_sfdisk(text, "old").partitions) == 1


BAD = {
    # file: (line or None, words the message must contain)
    "empty.dump": (None, "empty"),
    "truncated-gpt.dump": (9, "not a GPT type GUID"),
    "overlap.dump": (8, "overlaps"),
    "past-disk.dump": (10, "past the end of the disk"),
    "unknown-header.dump": (7, "unknown header key 'colour'"),
    "unknown-field.dump": (7, "unknown partition field 'fancy'"),
    "non-utf8-raw.dump": (7, "not UTF-8"),
    "non-utf8-escaped.dump": (6, "not UTF-8"),
    "logical-outside.dump": (9, "outside the extended partition"),
    "bad-type.dump": (7, "not an MBR partition id"),
    "negative-size.dump": (7, "not a whole number"),
    "sun-label.dump": (1, "not dos or gpt"),
    "duplicate-number.dump": (10, "appears twice"),
    "cylinders.dump": (4, "not sectors"),
    "binary.dump": (1, "not a text file"),
    "unclosed-quote.dump": (3, "never closed"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_dumps_name_file_line_and_problem(name: str) -> None:
    line, words = BAD[name]
    with pytest.raises(LayoutError) as e:
        parse_sfdisk(sample(f"bad/{name}"), name, GiB)
    assert e.value.file == name
    assert e.value.line == line, str(e.value)
    assert words in str(e.value)
    assert "what to do" in str(e.value)


# -- property: parse(render(t)) == t ---------------------------------------------------------

_hex = st.text("0123456789ABCDEF", min_size=1)
_guid = st.builds(
    lambda a, b, c, d, e: f"{a}-{b}-{c}-{d}-{e}",
    *(st.text("0123456789ABCDEF", min_size=n, max_size=n) for n in (8, 4, 4, 4, 12)),
)
_names = st.one_of(st.none(), st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=36))


@st.composite
def tables(draw: st.DrawFn) -> PartitionTable:
    label = draw(st.sampled_from(["dos", "gpt"]))
    sector = draw(st.sampled_from([512, 4096]))
    first = draw(st.integers(1, 4096))
    count = draw(st.integers(0, 4 if label == "dos" else 12))
    parts, pos = [], first
    for n in range(1, count + 1):
        pos += draw(st.integers(0, 10_000))
        size = draw(st.integers(1, 10**9))
        if label == "gpt":
            p = Partition(
                node=f"/dev/sdx{n}", start=pos, size=size, type=draw(_guid), uuid=draw(st.one_of(st.none(), _guid)),
                name=draw(_names), attrs=draw(st.one_of(st.none(), st.sampled_from(["LegacyBIOSBootable", "GUID:60,62", "RequiredPartition"]))),
            )
        else:
            p = Partition(
                node=f"/dev/sdx{n}", start=pos, size=size, type=draw(st.sampled_from(["83", "82", "7", "ef", "fd", "c"])),
                bootable=draw(st.booleans()),
            )
        parts.append(p)
        pos += size
    if label == "gpt":
        last = draw(st.one_of(st.none(), st.just(pos + draw(st.integers(0, 5000)))))
        return PartitionTable(
            label="gpt", device=draw(st.one_of(st.none(), st.just("/dev/sdx"))), label_id=draw(st.one_of(st.none(), _guid)),
            first_lba=first, last_lba=last, sector_size=sector,
            table_length=draw(st.one_of(st.none(), st.integers(1, 128))),
            grain=draw(st.one_of(st.none(), st.sampled_from(["1M", "4MiB", "512"]))), partitions=tuple(parts),
        )
    if parts and draw(st.booleans()):
        # the last primary becomes an extended partition holding logical ones (5, 6, ...)
        ext = parts[-1]
        logicals, lpos = [], ext.start
        for n in range(5, 5 + draw(st.integers(0, 6))):
            lpos += draw(st.integers(1, 4096))
            room = ext.end - lpos
            if room < 1:
                break
            size = draw(st.integers(1, min(room, 10**8)))
            logicals.append(Partition(node=f"/dev/sdx{n}", start=lpos, size=size, type=draw(st.sampled_from(["83", "82"]))))
            lpos += size
        parts[-1] = replace(ext, type=draw(st.sampled_from(["5", "f", "85"])), bootable=False)
        parts.extend(logicals)
    lid = draw(st.one_of(st.none(), st.integers(0, 2**32 - 1).map(lambda i: f"0x{i:08x}")))
    return PartitionTable(label="dos", device=None, label_id=lid, sector_size=sector, partitions=tuple(parts))


@settings(max_examples=300, deadline=None)
@given(tables())
def test_parse_of_render_is_identity(t: PartitionTable) -> None:
    assert parse_sfdisk(render_sfdisk(t), "rendered") == as_written(t)
