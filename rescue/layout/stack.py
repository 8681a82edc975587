"""Parsers for the layered storage a capture records: md RAID, LVM, the disks' identity.

Pure: bytes of the raw files in, dataclasses out (LayoutError on anything unreadable).
The outputs they read:
- `mdadm --detail --export MD`: KEY=value lines (MD_LEVEL, MD_UUID, MD_DEVICE_dev_sda1_ROLE ...)
- `mdadm --detail MD` and `mdadm --examine MEMBER`: "    Key : value" lines (Chunk Size,
  Layout, Data Offset, Internal Bitmap, Device Role ...), which --export does not give
- `pvs`, `vgs`, `lvs` with `--reportformat json --units b --nosuffix`
- `find /dev/disk/by-id -maxdepth 1 -type l -printf '%f %l\\n'`
- `lsblk -J -b -O` for serial, WWN and sector sizes
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from rescue.errors import LayoutError
from rescue.layout.lsblk import load_json
from rescue.layout.model import DiskIdentity, LvmLv, LvmPv, LvmVg, MdArray, MdMember
from rescue.layout.sfdisk import read_text

# --- mdadm ------------------------------------------------------------------------------------


def parse_export(data: bytes | str, file: str) -> dict[str, str]:
    """`mdadm --detail --export` / `--examine --export`: KEY=value lines."""
    out: dict[str, str] = {}
    for lineno, line in enumerate(read_text(data, file).splitlines(), 1):
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z0-9_]+", key):
            raise LayoutError(file, lineno, f"not KEY=value: {line[:60]!r}")
        out[key] = value.strip().strip("'\"")
    return out


def parse_colon_report(data: bytes | str, file: str) -> dict[str, str]:
    """`mdadm --detail` / `--examine` as people read it: "  Key : value" lines (first wins)."""
    out: dict[str, str] = {}
    for line in read_text(data, file).splitlines():
        m = re.fullmatch(r"\s*([A-Za-z][A-Za-z /-]*?)\s*:\s*(.*?)\s*", line)
        if m and m.group(1) not in out:
            out[m.group(1)] = m.group(2)
    return out


def _sectors(value: str | None) -> int | None:
    """"2048 sectors" -> 2048; "264192 sectors, after=0 sectors" -> 264192."""
    if not value:
        return None
    m = re.match(r"(\d+) sectors", value)
    return int(m.group(1)) if m else None


def _kib(value: str | None) -> int | None:
    """"512K" -> 524288 bytes (mdadm's chunk size)."""
    if not value:
        return None
    m = re.fullmatch(r"(\d+)\s*K", value.strip())
    return int(m.group(1)) * 1024 if m else None


def _int(value: str | None) -> int | None:
    return int(value) if value and value.strip().isdigit() else None


def md_members(export: Mapping[str, str]) -> dict[str, str | None]:
    """Members and their roles from `--detail --export`: {"/dev/sdb1": "0", ...}."""
    members: dict[str, str | None] = {}
    for key, dev in export.items():
        m = re.fullmatch(r"MD_DEVICE_(.+)_DEV", key)
        if m:
            members[dev] = export.get(f"MD_DEVICE_{m.group(1)}_ROLE")
    return members


def _detail_states(detail_text: str) -> dict[str, str]:
    """The device table at the end of `mdadm --detail`: state per member device."""
    states: dict[str, str] = {}
    for line in detail_text.splitlines():
        m = re.fullmatch(r"\s*(?:\d+|-)\s+\d+\s+\d+\s+(?:\d+|-)\s+(.*?)\s+(/dev/\S+)\s*", line)
        if m:
            states[m.group(2)] = m.group(1)
    return states


def build_md_array(device: str, export_data: bytes, export_file: str, detail_data: bytes | None,
                   detail_file: str, examines: Mapping[str, tuple[bytes, str]]) -> MdArray:
    """One array from its --detail --export, --detail and each member's --examine."""
    export = parse_export(export_data, export_file)
    uuid = export.get("MD_UUID")
    if not uuid:
        raise LayoutError(export_file, None, f"{device}: no MD_UUID (is it an md array?)")
    detail_text = read_text(detail_data, detail_file) if detail_data is not None else ""
    detail = parse_colon_report(detail_text, detail_file) if detail_text else {}
    states = _detail_states(detail_text)
    members: list[MdMember] = []
    offsets: set[int | None] = set()
    first_exam: dict[str, str] = {}
    for dev, role in sorted(md_members(export).items(), key=lambda kv: (not (kv[1] or "").isdigit(),
                                                                          int(kv[1]) if (kv[1] or "").isdigit() else 0,
                                                                          kv[0])):
        exam: dict[str, str] = {}
        if dev in examines:
            exam = parse_colon_report(*examines[dev])
            first_exam = first_exam or exam
        offset = _sectors(exam.get("Data Offset"))
        offsets.add(offset)
        members.append(MdMember(
            device=dev, role=role, dev_uuid=exam.get("Device UUID"), data_offset=offset,
            super_offset=_sectors(exam.get("Super Offset")), events=_int(exam.get("Events")),
            state=states.get(dev),
        ))
    bitmap = detail.get("Intent Bitmap")
    if bitmap is None and first_exam:
        bitmap = "internal" if "Internal Bitmap" in first_exam else None
    if bitmap is None and detail.get("Consistency Policy"):
        bitmap = "internal" if detail["Consistency Policy"] == "bitmap" else "none"
    size = detail.get("Array Size")
    return MdArray(
        device=device, uuid=uuid, name=export.get("MD_NAME") or detail.get("Name", "").split(" ")[0] or None,
        level=export.get("MD_LEVEL") or detail.get("Raid Level"),
        metadata=export.get("MD_METADATA") or detail.get("Version"),
        raid_devices=_int(export.get("MD_DEVICES") or detail.get("Raid Devices")),
        size=int(size.split()[0]) * 1024 if size and size.split()[0].isdigit() else None,  # KiB
        chunk=_kib(detail.get("Chunk Size") or first_exam.get("Chunk Size")),
        layout=detail.get("Layout") or first_exam.get("Layout"),
        bitmap=bitmap.lower() if bitmap else None,
        consistency=detail.get("Consistency Policy"),
        data_offset=next(iter(offsets)) if len(offsets) == 1 else None,
        members=tuple(members),
    )


# --- LVM --------------------------------------------------------------------------------------

PVS_FIELDS = "pv_name,pv_uuid,vg_name,pv_size,pe_start,dev_size"
VGS_FIELDS = "vg_name,vg_uuid,vg_extent_size,vg_size,vg_free"
LVS_FIELDS = ("lv_name,lv_uuid,vg_name,lv_size,segtype,lv_attr,lv_path,lv_dm_path,pool_lv,data_lv,"
              "metadata_lv,lv_metadata_size,chunk_size,stripes,stripe_size,devices")


def _report(data: bytes | str, file: str, kind: str) -> list[dict[str, Any]]:
    """The rows of an LVM JSON report ({"report": [{"pv": [...]}]})."""
    doc = load_json(data, file)
    rows: list[dict[str, Any]] = []
    reports = doc.get("report") if isinstance(doc, dict) else None
    if not isinstance(reports, list):
        raise LayoutError(file, None, "no \"report\" list (was it run with --reportformat json?)")
    for rep in reports:
        part = rep.get(kind) if isinstance(rep, dict) else None
        if not isinstance(part, list) or not all(isinstance(r, dict) for r in part):
            raise LayoutError(file, None, f"a report has no \"{kind}\" list")
        rows += part
    return rows


def _opt(row: Mapping[str, Any], key: str) -> str | None:
    value = row.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise LayoutError("lvm", None, f"{key} is not a string")
    return value.strip() or None


def _bytes_field(row: Mapping[str, Any], key: str, file: str) -> int | None:
    value = _opt(row, key)
    if value is None:
        return None
    if not value.isdigit():
        raise LayoutError(file, None, f"{key} {value!r} is not a number of bytes (run with --units b --nosuffix)")
    return int(value)


def _strip_brackets(name: str | None) -> str | None:
    return name.strip("[]") if name else name


def parse_lvm(pvs: bytes, vgs: bytes, lvs: bytes, configs: Mapping[str, str] | None = None,
              texts: Mapping[str, str] | None = None) -> tuple[LvmVg, ...]:
    """The volume groups with their PVs and LVs; configs: VG name -> vgcfgbackup file name,
    texts: VG name -> that file's text."""
    configs, texts = configs or {}, texts or {}
    pv_rows, vg_rows, lv_rows = _report(pvs, "lvm-pvs.json", "pv"), _report(vgs, "lvm-vgs.json", "vg"), \
        _report(lvs, "lvm-lvs.json", "lv")
    pvs_of: dict[str, list[LvmPv]] = {}
    for row in pv_rows:
        dev, uuid = _opt(row, "pv_name"), _opt(row, "pv_uuid")
        if not dev or not uuid:
            raise LayoutError("lvm-pvs.json", None, "a PV without pv_name or pv_uuid")
        vg = _opt(row, "vg_name")
        pvs_of.setdefault(vg or "", []).append(LvmPv(
            device=dev, uuid=uuid, vg=vg, size=_bytes_field(row, "pv_size", "lvm-pvs.json"),
            pe_start=_bytes_field(row, "pe_start", "lvm-pvs.json"),
            dev_size=_bytes_field(row, "dev_size", "lvm-pvs.json"),
        ))
    lvs_of: dict[str, dict[str, LvmLv]] = {}
    for row in lv_rows:
        name, uuid, vg = _opt(row, "lv_name"), _opt(row, "lv_uuid"), _opt(row, "vg_name")
        size = _bytes_field(row, "lv_size", "lvm-lvs.json")
        if not name or not uuid or not vg or size is None:
            raise LayoutError("lvm-lvs.json", None, "an LV without lv_name, lv_uuid, vg_name or lv_size")
        name = _strip_brackets(name)
        assert name is not None
        seen = lvs_of.setdefault(vg, {})
        segtype = _opt(row, "segtype") or "?"
        if uuid in seen:  # one row per segment: keep the LV once, its segment types joined
            old = seen[uuid]
            if segtype not in old.segtype.split(","):
                seen[uuid] = dataclasses.replace(old, segtype=f"{old.segtype},{segtype}")
            continue
        seen[uuid] = LvmLv(
            name=name, uuid=uuid, size=size, segtype=segtype, attr=_opt(row, "lv_attr"),
            path=_opt(row, "lv_path"), dm_path=_opt(row, "lv_dm_path"),
            pool=_strip_brackets(_opt(row, "pool_lv")), data_lv=_strip_brackets(_opt(row, "data_lv")),
            metadata_lv=_strip_brackets(_opt(row, "metadata_lv")),
            metadata_size=_bytes_field(row, "lv_metadata_size", "lvm-lvs.json"),
            chunk_size=_bytes_field(row, "chunk_size", "lvm-lvs.json") or None,
            stripes=_int(_opt(row, "stripes")), stripe_size=_bytes_field(row, "stripe_size", "lvm-lvs.json") or None,
            devices=_opt(row, "devices"),
        )
    out = []
    for row in vg_rows:
        name, uuid = _opt(row, "vg_name"), _opt(row, "vg_uuid")
        extent = _bytes_field(row, "vg_extent_size", "lvm-vgs.json")
        if not name or not uuid or extent is None:
            raise LayoutError("lvm-vgs.json", None, "a VG without vg_name, vg_uuid or vg_extent_size")
        out.append(LvmVg(
            name=name, uuid=uuid, extent_size=extent, size=_bytes_field(row, "vg_size", "lvm-vgs.json"),
            free=_bytes_field(row, "vg_free", "lvm-vgs.json"), pvs=tuple(pvs_of.get(name, ())),
            lvs=tuple(lvs_of.get(name, {}).values()), config_file=configs.get(name), config=texts.get(name),
        ))
    return tuple(sorted(out, key=lambda v: v.name))


# --- the disks' identity ----------------------------------------------------------------------


def parse_by_id(data: bytes | str, file: str = "disk-by-id.txt") -> dict[str, list[str]]:
    """`find /dev/disk/by-id -printf '%f %l\\n'`: {"/dev/sda": ["ata-...", "wwn-0x..."]} (links
    to partitions left out)."""
    out: dict[str, list[str]] = {}
    for lineno, line in enumerate(read_text(data, file).splitlines(), 1):
        if not line.strip():
            continue
        name, _, target = line.partition(" ")
        if not target:
            raise LayoutError(file, lineno, f"not 'NAME TARGET': {line[:60]!r}")
        dev = "/dev/" + target.rsplit("/", 1)[-1]
        out.setdefault(dev, []).append(name)
    return {k: sorted(v) for k, v in out.items()}


def disk_identities(lsblk_data: bytes, disk_paths: list[str], by_id: Mapping[str, list[str]]) -> tuple[DiskIdentity, ...]:
    """Serial, WWN, sizes and by-id names of the captured disks (lsblk -J -b -O)."""
    doc = load_json(lsblk_data, "lsblk.json")
    rows = doc.get("blockdevices", []) if isinstance(doc, dict) else []
    out = []
    for row in rows if isinstance(rows, list) else []:
        if not isinstance(row, dict):
            continue
        path = row.get("path") or "/dev/" + str(row.get("name"))
        if path not in disk_paths:
            continue

        def num(key: str) -> int | None:
            v = row.get(key)
            return int(v) if isinstance(v, int) or (isinstance(v, str) and v.isdigit()) else None

        def text(key: str) -> str | None:
            v = row.get(key)
            return v.strip() or None if isinstance(v, str) else None

        out.append(DiskIdentity(
            device=path, size=num("size") or 0, logical_sector=num("log-sec"), physical_sector=num("phy-sec"),
            model=text("model"), serial=text("serial"), wwn=text("wwn"), by_id=tuple(by_id.get(path, ())),
        ))
    return tuple(out)
