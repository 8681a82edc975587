"""Which cp run copies a path, when a fresh copy is shared among cores (rescue.engine.copy.Split)."""

from __future__ import annotations

from rescue.engine import copy
from rescue.engine.copy import Split

SPLIT = Split(units=(b"usr/lib", b"usr/bin", b"etc", b"usr/share/doc", b"usr/share/man", b"vmlinuz"),
              shells=(b"", b"usr", b"usr/share"))


def test_a_path_belongs_to_the_first_folder_below_the_split_ones():
    assert SPLIT.unit_of(b"usr/lib/x86_64-linux-gnu/libc.so.6") == b"usr/lib"
    assert SPLIT.unit_of(b"usr/share/doc/bash/README") == b"usr/share/doc"
    assert SPLIT.unit_of(b"etc/passwd") == b"etc"


def test_a_file_loose_in_a_split_folder_is_its_own_unit():
    assert SPLIT.unit_of(b"vmlinuz") == b"vmlinuz"
    assert SPLIT.unit_of(b"usr/share/loose-file") == b"usr/share/loose-file"


def test_names_are_bytes_and_need_not_be_utf8():
    assert SPLIT.unit_of(b"etc/caf\xe9/x") == b"etc"
    assert SPLIT.unit_of(b"usr/share/\xff\xfe") == b"usr/share/\xff\xfe"


def test_one_core_copies_with_one_cp_and_more_cores_with_two_each_up_to_four():
    # one CPU (the drill's rescue VM): no split, no scan before the copy; measured faster there
    assert [copy.workers_for(n) for n in (1, 2, 3, 8)] == [1, 4, 4, 4]
