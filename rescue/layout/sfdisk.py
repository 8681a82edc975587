"""`sfdisk -d` dumps: parse them into a PartitionTable and render them back.

A dump is the one file that can rebuild a disk's partition table, so it is
read strictly: anything unexpected (an unknown key, overlapping partitions,
a partition past the end of the disk, bytes that are not UTF-8) is a
LayoutError naming the file and the line, never a silent guess.

Both the dumps of today's sfdisk (label:, label-id:, uuid=, name=, ...) and
the older form of the original hand-written hook (`# partition table of`,
`Id=83`, empty slots with size=0) are understood.
"""

from __future__ import annotations

import re
from dataclasses import replace

from rescue.errors import LayoutError
from rescue.layout.model import Partition, PartitionTable

HEADER_KEYS = (
    "label", "label-id", "device", "unit", "first-lba", "last-lba",
    "table-length", "grain", "sector-size",
)
PARTITION_KEYS = ("start", "size", "type", "Id", "uuid", "name", "attrs", "bootable")
DOS_EXTENDED = {"5", "f", "85"}

_GUID = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")
_DOS_ID = re.compile(r"0x[0-9A-Fa-f]{1,8}")
_DOS_TYPE = re.compile(r"(0x)?[0-9A-Fa-f]{1,2}")
_NODE = re.compile(r"\S*?\d+")
_GRAIN = re.compile(r"\d+([KMGT]i?B?|B)?")


def read_text(data: str | bytes, file: str) -> str:
    """Text of a captured file, or a LayoutError at the first byte that is not UTF-8.

    str input may carry surrogate escapes (rescue.run decodes that way);
    they are treated the same as raw undecodable bytes.
    """
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as e:
            line = data[: e.start].count(b"\n") + 1
            raise LayoutError(file, line, "bytes that are not UTF-8") from None
    for lineno, line in enumerate(data.split("\n"), 1):
        try:
            line.encode("utf-8")
        except UnicodeEncodeError:
            raise LayoutError(file, lineno, "bytes that are not UTF-8") from None
    if "\x00" in data:
        line = data[: data.index("\x00")].count("\n") + 1
        raise LayoutError(file, line, "a NUL byte: this is not a text file")
    return data


def _int(value: str, file: str, line: int, key: str) -> int:
    if not re.fullmatch(r"\d{1,20}", value):
        raise LayoutError(file, line, f"{key}={value!r} is not a whole number")
    return int(value)


def _unquote(value: str, file: str, line: int, key: str) -> str:
    """sfdisk writes names as "..." with \\xNN escapes for bytes outside printable ASCII."""
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        value = value[1:-1]
    elif '"' in value:
        raise LayoutError(file, line, f"{key} has an unbalanced quote")
    raw = bytearray()
    i = 0
    while i < len(value):
        ch = value[i]
        if ch == "\\":
            m = re.match(r"\\x([0-9A-Fa-f]{2})", value[i:])
            if not m:
                raise LayoutError(file, line, f"{key} has a broken \\ escape")
            raw.append(int(m.group(1), 16))
            i += 4
            continue
        if ch == '"':
            raise LayoutError(file, line, f"{key} has a quote inside")
        raw.extend(ch.encode("utf-8"))
        i += 1
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise LayoutError(file, line, f"{key} is not UTF-8 once its escapes are read") from None


def _quote(text: str) -> str:
    """The inverse of _unquote, as sfdisk itself writes a name."""
    out = []
    for b in text.encode("utf-8"):
        if 0x20 <= b < 0x7F and b not in (0x22, 0x5C):
            out.append(chr(b))
        else:
            out.append(f"\\x{b:02x}")
    return '"' + "".join(out) + '"'


def _split_fields(rest: str, file: str, line: int) -> list[str]:
    """Split `start=1, size=2, name="a, b"` on commas outside quotes."""
    fields, cur, quoted = [], [], False
    for ch in rest:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            fields.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    if quoted:
        raise LayoutError(file, line, "a quote is never closed")
    fields.append("".join(cur).strip())
    return [f for f in fields if f]


def _parse_partition(text: str, label: str | None, file: str, line: int) -> Partition | None:
    node, sep, rest = text.partition(":")
    node = node.strip()
    if not sep or not _NODE.fullmatch(node):
        raise LayoutError(file, line, f"not a partition line (expected 'DEVICE : start=..., size=...'): {text[:60]!r}")
    values: dict[str, str] = {}
    for field in _split_fields(rest, file, line):
        key, eq, value = field.partition("=")
        key, value = key.strip(), value.strip()
        if key not in PARTITION_KEYS:
            raise LayoutError(file, line, f"unknown partition field {key!r}")
        if key == "Id":
            key = "type"
        if key in values:
            raise LayoutError(file, line, f"{key} is given twice")
        if key == "bootable":
            if eq:
                raise LayoutError(file, line, "bootable takes no value")
            values[key] = ""
            continue
        if not eq or not value:
            raise LayoutError(file, line, f"{key} has no value")
        values[key] = value
    for key in ("start", "size"):
        if key not in values:
            raise LayoutError(file, line, f"partition {node} has no {key}=")
    start = _int(values["start"], file, line, "start")
    size = _int(values["size"], file, line, "size")
    ptype = values.get("type")
    if ptype is None:
        raise LayoutError(file, line, f"partition {node} has no type=")
    if label == "gpt":
        if not _GUID.fullmatch(ptype):
            raise LayoutError(file, line, f"type={ptype!r} is not a GPT type GUID")
        ptype = ptype.upper()
    else:
        if not _DOS_TYPE.fullmatch(ptype):
            raise LayoutError(file, line, f"type={ptype!r} is not an MBR partition id (hex)")
        ptype = format(int(ptype, 16), "x")
    if size == 0:
        if start == 0 and ptype == "0":
            return None  # an empty slot in an old dump
        raise LayoutError(file, line, f"partition {node} has size 0")
    if ptype == "0" and label != "gpt":
        raise LayoutError(file, line, f"partition {node} has type 0 (empty) but a size")
    uuid = values.get("uuid")
    if uuid is not None:
        if label != "gpt":
            raise LayoutError(file, line, "uuid= belongs to GPT partitions only")
        if not _GUID.fullmatch(uuid):
            raise LayoutError(file, line, f"uuid={uuid!r} is not a GUID")
        uuid = uuid.upper()
    name = values.get("name")
    if name is not None:
        name = _unquote(name, file, line, "name")
    attrs = values.get("attrs")
    if attrs is not None:
        attrs = _unquote(attrs, file, line, "attrs")
    part = Partition(
        node=node, start=start, size=size, type=ptype, uuid=uuid, name=name,
        attrs=attrs, bootable="bootable" in values,
    )
    if part.number < 1 or part.number > 256:
        raise LayoutError(file, line, f"partition number {part.number} of {node} is out of range")
    return part


def parse_sfdisk(data: str | bytes, file: str = "sfdisk.dump", disk_size: int | None = None) -> PartitionTable:
    """Read an `sfdisk -d` dump. disk_size (bytes), when known, bounds every partition."""
    text = read_text(data, file)
    if not text.strip():
        raise LayoutError(file, None, "the file is empty: no partition table was dumped")
    header: dict[str, tuple[str, int]] = {}
    parts: list[tuple[Partition, int]] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"([a-z][a-z-]*)\s*:\s*(.*)", line)
        if m and not parts and "=" not in m.group(2):
            key, value = m.group(1), m.group(2).strip()
            if key not in HEADER_KEYS:
                raise LayoutError(file, lineno, f"unknown header key {key!r}")
            if key in header:
                raise LayoutError(file, lineno, f"header key {key!r} is given twice")
            header[key] = (value, lineno)
            continue
        label = header.get("label", ("dos", 0))[0]
        part = _parse_partition(line, label, file, lineno)
        if part is not None:
            parts.append((part, lineno))

    label, label_line = header.get("label", ("dos", None))  # old dumps name no label: they are MBR
    if label not in ("dos", "gpt"):
        raise LayoutError(file, label_line, f"label {label!r} is not dos or gpt", fix="rescue rebuilds MBR (dos) and GPT tables only")

    def num(key: str) -> int | None:
        if key not in header:
            return None
        value, lineno = header[key]
        return _int(value, file, lineno, key)

    unit, unit_line = header.get("unit", ("sectors", None))
    if unit != "sectors":
        raise LayoutError(file, unit_line, f"unit {unit!r} is not sectors")
    sector_size = num("sector-size") or 512
    if sector_size not in (512, 1024, 2048, 4096, 8192, 16384, 32768, 65536):
        raise LayoutError(file, header["sector-size"][1], f"sector-size {sector_size} is not a power of two from 512 to 65536")
    label_id = None
    if "label-id" in header:
        label_id, lid_line = header["label-id"]
        if label == "gpt":
            if not _GUID.fullmatch(label_id):
                raise LayoutError(file, lid_line, f"label-id {label_id!r} is not a GUID")
            label_id = label_id.upper()
        else:
            if not _DOS_ID.fullmatch(label_id):
                raise LayoutError(file, lid_line, f"label-id {label_id!r} is not an MBR disk id (0x...)")
            label_id = f"0x{int(label_id, 16):08x}"
    first_lba, last_lba, table_length = num("first-lba"), num("last-lba"), num("table-length")
    if label == "dos":
        for key in ("first-lba", "last-lba", "table-length"):
            if key in header:
                raise LayoutError(file, header[key][1], f"{key} belongs to GPT tables, not dos")
    if first_lba is not None and last_lba is not None and first_lba > last_lba:
        raise LayoutError(file, header["first-lba"][1], f"first-lba {first_lba} is past last-lba {last_lba}")
    if table_length is not None and not 1 <= table_length <= 4096:
        raise LayoutError(file, header["table-length"][1], f"table-length {table_length} is out of range")
    grain = None
    if "grain" in header:
        grain, grain_line = header["grain"]
        if not _GRAIN.fullmatch(grain):
            raise LayoutError(file, grain_line, f"grain {grain!r} is not a size")
    device = header["device"][0] if "device" in header else None
    if device is not None and not device:
        device = None

    table = PartitionTable(
        label=label, device=device, unit=unit, label_id=label_id, first_lba=first_lba,
        last_lba=last_lba, sector_size=sector_size, table_length=table_length, grain=grain,
        partitions=tuple(p for p, _ in parts),
    )
    _check_geometry(table, dict((p.node, n) for p, n in parts), file, disk_size)
    return table


def _check_geometry(table: PartitionTable, lines: dict[str, int], file: str, disk_size: int | None) -> None:
    """Hostile or garbled dumps: duplicates, overlaps, partitions past the disk."""
    seen: dict[int, str] = {}
    for p in table.partitions:
        if p.number in seen:
            raise LayoutError(file, lines.get(p.node), f"partition number {p.number} appears twice ({seen[p.number]}, {p.node})")
        seen[p.number] = p.node
    disk_sectors = disk_size // table.sector_size if disk_size else None
    extended = [p for p in table.partitions if table.label == "dos" and p.type in DOS_EXTENDED and p.number <= 4]
    if len(extended) > 1:
        raise LayoutError(file, lines.get(extended[1].node), "more than one extended partition")
    for p in table.partitions:
        line = lines.get(p.node)
        if table.label == "gpt":
            if table.first_lba is not None and p.start < table.first_lba:
                raise LayoutError(file, line, f"{p.node} starts at {p.start}, before first-lba {table.first_lba}")
            if table.last_lba is not None and p.end - 1 > table.last_lba:
                raise LayoutError(file, line, f"{p.node} ends at {p.end - 1}, past last-lba {table.last_lba}")
            if p.bootable:
                raise LayoutError(file, line, "bootable belongs to MBR partitions; GPT uses attrs")
        else:
            if p.number > 4 and not extended:
                raise LayoutError(file, line, f"logical partition {p.node} but no extended partition")
            if p.number > 4:
                ext = extended[0]
                if p.start <= ext.start or p.end > ext.end:
                    raise LayoutError(file, line, f"logical partition {p.node} lies outside the extended partition {ext.node}")
            elif p.start == 0:
                raise LayoutError(file, line, f"{p.node} starts at sector 0, over the partition table")
            if p.start >= 2**32 or p.size >= 2**32:
                raise LayoutError(file, line, f"{p.node} lies beyond what an MBR can address (32-bit sectors)")
        if disk_sectors is not None and p.end > disk_sectors:
            raise LayoutError(file, line, f"{p.node} ends at sector {p.end}, past the end of the disk ({disk_sectors} sectors)")
    # Overlaps: primaries (and the extended container) among themselves; logicals among themselves.
    groups = [
        [p for p in table.partitions if table.label == "gpt" or p.number <= 4],
        [p for p in table.partitions if table.label == "dos" and p.number > 4],
    ]
    for group in groups:
        ordered = sorted(group, key=lambda p: p.start)
        for a, b in zip(ordered, ordered[1:]):
            if b.start < a.end:
                raise LayoutError(file, lines.get(b.node), f"{b.node} overlaps {a.node} (starts at {b.start}, {a.node} ends at {a.end - 1})")


def render_sfdisk(table: PartitionTable, device: str | None = None) -> str:
    """The sfdisk script the restore writes: parse_sfdisk(render_sfdisk(t)) is t but for what the disk decides.

    With device, every partition node names that device (/dev/sdb -> /dev/sdb1,
    /dev/loop3 -> /dev/loop3p1). last-lba, device and grain are never written:
    sfdisk takes them from the target (a dump replayed with the old last-lba
    pins the table to the old disk's size).
    """
    if device is not None:
        from rescue.devices import partition_path

        table = replace(
            table, partitions=tuple(replace(p, node=partition_path(device, p.number)) for p in table.partitions),
        )
    lines = [f"label: {table.label}"]
    if table.label_id:
        lines.append(f"label-id: {table.label_id}")
    lines.append("unit: sectors")
    if table.label == "gpt":
        if table.first_lba is not None:
            lines.append(f"first-lba: {table.first_lba}")
        if table.table_length is not None:
            lines.append(f"table-length: {table.table_length}")
    if table.sector_size and table.sector_size != 512:
        lines.append(f"sector-size: {table.sector_size}")
    lines.append("")
    for p in table.partitions:
        fields = [f"start={p.start}", f"size={p.size}", f"type={p.type}"]
        if p.uuid:
            fields.append(f"uuid={p.uuid}")
        if p.name is not None:
            fields.append(f"name={_quote(p.name)}")
        if p.attrs is not None:
            fields.append(f"attrs={_quote(p.attrs)}")
        if p.bootable:
            fields.append("bootable")
        lines.append(f"{p.node} : " + ", ".join(fields))
    return "\n".join(lines) + "\n"
