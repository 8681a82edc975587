"""`cryptsetup luksDump` as people read it, for LUKS1 and LUKS2 headers, into LuksDevice.

Pure: the dump's text in, a dataclass out (LayoutError on a dump without a version or UUID).
The text form is read for both versions: LUKS2's JSON metadata (--dump-json-metadata) lacks
the UUID and label, which the restore keeps above all.
"""

from __future__ import annotations

import re

from rescue.errors import LayoutError
from rescue.layout.model import LuksDevice, LuksKeyslot


def _field(text: str, name: str) -> str | None:
    m = re.search(rf"^{re.escape(name)}:\s*(.*?)\s*$", text, re.M)
    return m.group(1) if m and m.group(1) else None


def _int(value: str | None) -> int | None:
    m = re.match(r"\d+", value or "")
    return int(m.group(0)) if m else None


def parse_luks_dump(text: str, file: str, device: str) -> LuksDevice:
    version, uuid = _int(_field(text, "Version")), _field(text, "UUID")
    if version not in (1, 2) or not uuid:
        raise LayoutError(file, None, "not a LUKS1 or LUKS2 dump (no Version or UUID line)")
    if version == 1:
        cipher = "-".join(x for x in (_field(text, "Cipher name"), _field(text, "Cipher mode")) if x) or None
        key_bits = _int(_field(text, "MK bits"))
        sectors = _int(_field(text, "Payload offset"))
        slots = []
        for m in re.finditer(r"^Key Slot (\d+): ENABLED\s*$", text, re.M):
            slots.append(LuksKeyslot(slot=int(m.group(1)), key_bits=key_bits, pbkdf="pbkdf2",
                                     hash=_field(text, "Hash spec")))
        return LuksDevice(device=device, version=1, uuid=uuid, cipher=cipher, key_bits=key_bits,
                          data_offset=sectors * 512 if sectors is not None else None, keyslots=tuple(slots))
    label = _field(text, "Label")
    segments = text.split("Data segments:", 1)[1].split("Keyslots:", 1)[0] if "Data segments:" in text else ""
    offset = re.search(r"offset:\s*(\d+) \[bytes\]", segments)
    cipher = re.search(r"cipher:\s*(\S+)", segments)
    keyslots = text.split("Keyslots:", 1)[1].split("Tokens:", 1)[0] if "Keyslots:" in text else ""
    slots = []
    for m in re.finditer(r"^\s{2}(\d+): (\S+)\s*\n(.*?)(?=^\s{2}\d+: |\Z)", keyslots, re.M | re.S):
        body = m.group(3)
        bits = re.search(r"^\s*Key:\s*(\d+) bits", body, re.M)
        pbkdf = re.search(r"^\s*PBKDF:\s*(\S+)", body, re.M)
        hash_ = re.search(r"^\s*Hash:\s*(\S+)", body, re.M)
        slots.append(LuksKeyslot(slot=int(m.group(1)), kind=m.group(2), key_bits=int(bits.group(1)) if bits else None,
                                 pbkdf=pbkdf.group(1) if pbkdf else None, hash=hash_.group(1) if hash_ else None))
    return LuksDevice(
        device=device, version=2, uuid=uuid, label=None if label in (None, "(no label)") else label,
        cipher=cipher.group(1) if cipher else None, key_bits=slots[0].key_bits if slots else None,
        data_offset=int(offset.group(1)) if offset else None, keyslots=tuple(slots),
    )


def crypttab_line(text: str, luks: LuksDevice) -> str | None:
    """The crypttab line that opens this device: by UUID=, by its device path, or by the
    name it was open as."""
    name = luks.mapping.rsplit("/", 1)[-1] if luks.mapping else None
    for line in text.splitlines():
        words = line.split()
        if not words or words[0].startswith("#") or len(words) < 2:
            continue
        source = words[1]
        if source in (f"UUID={luks.uuid}", f"/dev/disk/by-uuid/{luks.uuid}", luks.device) or words[0] == name:
            return line.strip()
    return None
