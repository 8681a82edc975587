"""Random text and bytes into every parser: a LayoutError or a result, never anything else."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from rescue.capture.build import parse_blkid, parse_os_release, parse_roots
from rescue.errors import LayoutError
from rescue.layout import parse_df, parse_findmnt, parse_fstab, parse_lsblk, parse_sfdisk, parse_swaps

SAMPLES = Path(__file__).parent / "layout_samples"
PARSERS = [parse_sfdisk, parse_lsblk, parse_findmnt, parse_fstab, parse_df, parse_swaps, parse_blkid, parse_os_release, parse_roots]
SEEDS = [
    (SAMPLES / n).read_bytes()
    for n in ("gpt.dump", "dos-extended.dump", "lsblk-loop.json", "hand-fstab", "hand-swaps",
              "capture-demo/findmnt.json", "capture-demo/df.txt", "capture-demo/blkid-loop9p2.txt", "capture-demo/roots.txt")
]


def _only_layout_errors(parser, data) -> None:
    try:
        parser(data, "fuzz")
    except LayoutError as e:
        assert e.file == "fuzz"


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A real sample with bytes flipped, cut, duplicated or inserted: near-valid input finds more."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["flip", "cut", "insert", "truncate", "dup"]))
        if op == "flip":
            data[i] = draw(st.integers(0, 255))
        elif op == "cut":
            del data[i:i + draw(st.integers(1, 20))]
        elif op == "insert":
            data[i:i] = draw(st.sampled_from([b"=", b",", b'"', b"\n", b":", b"{", b"]", b"-1", b"\xff", b"\\x", b"9" * 30]))
        elif op == "truncate":
            del data[i:]
        else:
            data[i:i] = data[i:i + draw(st.integers(1, 80))]
    return bytes(data)


@pytest.mark.parametrize("parser", PARSERS, ids=lambda p: p.__name__)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.one_of(st.binary(max_size=400), st.text(max_size=400), mutated()))
@example(data=b"")
@example(data="\udcff")
def test_parsers_raise_only_layout_errors(parser, data) -> None:
    _only_layout_errors(parser, data)


CAPTURE = {p.name: p.read_bytes() for p in (SAMPLES / "capture-demo").iterdir() if p.name != "layout.json"}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    victim=st.sampled_from(sorted(CAPTURE)),
    action=st.sampled_from(["drop", "mutate", "replace"]),
    data=st.data(),
)
def test_joining_a_damaged_capture_raises_only_layout_errors(victim: str, action: str, data) -> None:
    from rescue.capture.build import build_layout

    files = dict(CAPTURE)
    if action == "drop":
        del files[victim]
    elif action == "replace":
        files[victim] = data.draw(st.binary(max_size=200))
    else:
        raw = bytearray(files[victim])
        for _ in range(data.draw(st.integers(1, 4))):
            if raw:
                i = data.draw(st.integers(0, len(raw) - 1))
                raw[i:i + data.draw(st.integers(0, 8))] = data.draw(st.binary(max_size=8))
        files[victim] = bytes(raw)
    try:
        build_layout(files, client=None, captured_at="t", root="/mnt/demo")
    except LayoutError as e:
        assert e.file  # names the raw file it could not read
