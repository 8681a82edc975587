"""The one reader or writer of each small format: escapes, sizes, durations, digests, mountinfo."""

from __future__ import annotations

import hashlib

import pytest

from rescue.formats.escape import unescape
from rescue.formats.mountinfo import parse_mountinfo, read_mountinfo
from rescue.formats.units import duration, human, sha256_file


def test_unescape_decodes_the_four_kernel_escapes():
    assert unescape(r"/mnt/my\040backup\011tab\012nl\134bs") == "/mnt/my backup\ttab\nnl\\bs"
    assert unescape(r"\400") == r"\400"  # not a byte: left as written
    assert unescape("plain") == "plain"


def test_human_sizes():
    assert human(None) == "?"
    assert human(0) == "0 B"
    assert human(1023) == "1023 B"
    assert human(1024) == "1 KiB"
    assert human(512 << 20) == "512 MiB"
    assert human(3 << 29) == "1.5 GiB"
    assert human(20 << 30) == "20 GiB"
    assert human(5 << 50) == "5 PiB"


def test_durations():
    assert duration(None) == "--:--"
    assert duration(-3) == "0:00"
    assert duration(65.4) == "1:05"
    assert duration(3600 + 62) == "1:01:02"


def test_sha256_file_equals_a_whole_read(tmp_path):
    f = tmp_path / "blob"
    data = bytes(range(256)) * 5000
    f.write_bytes(data)
    assert sha256_file(f) == hashlib.sha256(data).hexdigest()


def test_mountinfo_fields():
    text = ("36 35 98:0 /mnt1 /mnt/parent\\040dir rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n"
            "no separator here\n"
            "x 35 98:0 / /bad rw - ext4 /dev/sda1 rw\n")
    (m,) = parse_mountinfo(text)
    assert (m.mount_id, m.parent_id, m.major, m.minor) == (36, 35, 98, 0)
    assert (m.root, m.target, m.fstype, m.source) == ("/mnt1", "/mnt/parent dir", "ext3", "/dev/root")
    assert (m.options, m.super_options) == ("rw,noatime", "rw,errors=continue")


def test_read_mountinfo_of_this_process_sees_root():
    assert any(m.target == "/" for m in read_mountinfo())
    with pytest.raises(OSError):  # a safety check never reads "nothing mounted" from a missing file
        read_mountinfo(pid="no-such-process")
