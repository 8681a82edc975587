"""Every parser of something a bank, a capture or a person hands rescue, fuzzed.

Random and mutated input (starting from real samples: dumps made by real
sfdisk, a real capture folder, real dirvish summaries, the unattended config
of the docs) must end in a result or in rescue's own error for that input
(LayoutError, BackupError, the config's error): never another exception,
never a hang. The layout text parsers have their own quick test
(test_layout_fuzz.py); this file covers the rest of the input surface and
holds the target table that bench/fuzz_parsers.py runs 100,000 times per
parser.

JSON and TOML inputs are also mutated structurally (a value anywhere in the
tree replaced by a value of another type), which reaches the type checks a
byte flip almost never gets past.
"""

from __future__ import annotations

import copy
import json
import math
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rescue.backups.dirvish import banks_from_master, parse_config, parse_date, read_image, rsync_stats
from rescue.capture.build import build_layout, parse_blkid, parse_os_release, parse_roots
from rescue.drill.checks import parse_console
from rescue.engine.journal import Journal
from rescue.errors import BackupError, LayoutError, RescueError
from rescue.layout import parse_df, parse_findmnt, parse_fstab, parse_lsblk, parse_sfdisk, parse_swaps
from rescue.layout import btrfs
from rescue.layout.legacy import load_layout, load_legacy
from rescue.layout.model import Layout
from rescue.unattended import ConfigError, config_from_cmdline, load_config

UNIT = Path(__file__).parent
SAMPLES = UNIT / "layout_samples"
CAPTURE = SAMPLES / "capture-demo"
LEGACY = SAMPLES / "legacy" / "laptop"
DIRVISH = UNIT / "fixtures" / "dirvish"
SLOW = 2.0  # seconds: any single input taking longer counts as a hang

UNATTENDED = b'''bank = "/backup/bank"
banks = ["/backup/bank", "/backup/bank2"]
client = "web1"
image = "2026-1126"
after = "poweroff"
after_failure = "stay"
bootloader = "auto"
grow = "/home"
log_dir = "/var/log/rescue"

[target]
by_id = "ata-Samsung_SSD_870_S5Y1NX0R123456"
'''
MASTER_CONF = b"""bank:
\t/backup/bank
\t/backup/bank2
exclude:
\tlost+found/
Runall:
\troot\t22:00
expire-default: +15 days
pre-server: /usr/bin/rescue capture --hook   # the capture hook
"""


def _journal_seed() -> bytes:
    j = Journal(path=Path("journal.json"), digest="ab" * 32, target="/dev/loop7", mount_base="/run/rescue/x",
                runs=2)
    j.steps = {"partition:/dev/loop7": {"state": "done", "started": 1.5, "attempts": 1, "seconds": 0.2},
               "copy:home": {"state": "started", "attempts": 2, "data": {"method": "rsync", "child": {"pid": 1234, "start_time": 5678}}}}
    j.notes = {"mkfs:/dev/loop7p2": ["UUID changed from a to b"]}
    return (json.dumps(j.to_dict(), indent=2) + "\n").encode()


JOURNAL_SEED = json.loads(_journal_seed())

# --------------------------------------------------------------------------- mutation


TOKENS = [b"=", b",", b'"', b"'", b"\n", b":", b"{", b"}", b"[", b"]", b"-1", b"0", b"\xff", b"\\", b"\\x",
          b"9" * 30, b"\t", b"#", b" ", b"\x00", b"$(touch /tmp/x)", b"`id`", b"..", b"/", b"%", b"nan", b"inf",
          b"1e999", b"\xc3\x28", b"\\u0000", b"true", b"null", b"[[", b"]]", b"=\"\"\"", b"0x"]
ODD_VALUES: list[object] = [None, True, False, 0, -1, 2**64, 1.5, math.inf, -math.inf, "", "x", "\udcff", "a\nb",
                            "../../etc", "$(reboot)", [], [1], ["a", None], {}, {"k": "v"}, {"": []}, "0x10", "-5"]


def mutate_bytes(rng: random.Random, data: bytes, rounds: int | None = None) -> bytes:
    """A sample with bytes flipped, cut, duplicated, spliced or tokens inserted."""
    b = bytearray(data)
    for _ in range(rounds or rng.randint(1, 8)):
        if not b:
            b.extend(rng.choice(TOKENS))
            continue
        i = rng.randrange(len(b))
        op = rng.randrange(7)
        if op == 0:
            b[i] = rng.randrange(256)
        elif op == 1:
            del b[i:i + rng.randint(1, 32)]
        elif op == 2:
            b[i:i] = rng.choice(TOKENS)
        elif op == 3:
            del b[i:]
        elif op == 4:
            j = rng.randrange(len(b))
            b[i:i] = b[j:j + rng.randint(1, 120)]
        elif op == 5:  # a whole line repeated or dropped
            start = b.rfind(b"\n", 0, i) + 1
            end = b.find(b"\n", i)
            end = len(b) if end < 0 else end + 1
            line = bytes(b[start:end])
            if rng.random() < 0.5:
                b[start:start] = line * rng.randint(1, 3)
            else:
                del b[start:end]
        else:  # a number made huge, negative or not a number
            j = i
            while j < len(b) and 48 <= b[j] <= 57:
                j += 1
            b[i:j] = rng.choice([b"-1", b"0", b"99999999999999999999", b"1.5", b"x"])
    return bytes(b)


def odd(rng: random.Random) -> object:
    return copy.deepcopy(rng.choice(ODD_VALUES))


def _walk(obj: object, path: tuple = ()) -> list[tuple]:
    out = [path]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _walk(v, path + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _walk(v, path + (i,))
    return out


def mutate_tree(rng: random.Random, obj: object) -> object:
    """A JSON/TOML tree with a few nodes replaced by odd values, dropped, or given unknown keys."""
    obj = json.loads(json.dumps(obj))
    for _ in range(rng.randint(1, 4)):
        paths = _walk(obj)
        path = rng.choice(paths)
        if not path:
            if rng.random() < 0.1:
                return odd(rng)
            continue
        parent = obj
        for p in path[:-1]:
            parent = parent[p]
        op = rng.randrange(4)
        if op == 0 and isinstance(parent, dict):
            del parent[path[-1]]
        elif op == 1 and isinstance(parent, dict):
            parent[rng.choice(["surprise", "schema", "steps", "x" * 300])] = odd(rng)
        else:
            parent[path[-1]] = odd(rng)
    return obj


def to_toml(data: object) -> str:
    """Just enough TOML writing for the fuzzer (tomllib only reads); may write invalid TOML on purpose."""
    def val(v: object) -> str:
        if v is None:
            return '""'
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return {math.inf: "inf", -math.inf: "-inf"}.get(v, repr(v))  # type: ignore[call-overload]
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(val(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{json.dumps(k)} = {val(x)}" for k, x in v.items()) + "}"
        return '""'
    if not isinstance(data, dict):
        return "value = " + val(data) + "\n"
    return "".join(f"{json.dumps(k)} = {val(v)}\n" for k, v in data.items())


# --------------------------------------------------------------------------- targets


@dataclass
class Target:
    """One parser: how to feed it bytes, which errors are its own, and where to start."""

    name: str
    call: Callable[[bytes, Path], object]
    errors: tuple[type[BaseException], ...]
    seeds: list[bytes]
    tree: Callable[[random.Random], bytes] | None = None  # structural mutation, when the input is JSON/TOML
    setup: Callable[[Path], None] = field(default=lambda scratch: None)

    def sample(self, rng: random.Random) -> bytes:
        """One fuzz input: random bytes, a mutated seed, or a structurally mutated tree."""
        r = rng.random()
        if r < 0.08:
            return bytes(rng.randrange(256) for _ in range(rng.randint(0, 300)))
        if r < 0.12:
            return b"".join(rng.choice(TOKENS) for _ in range(rng.randint(0, 40)))
        if self.tree is not None and r < 0.55:
            return self.tree(rng)
        return mutate_bytes(rng, rng.choice(self.seeds))

    def check(self, data: bytes, scratch: Path) -> None:
        """Run one input; raise AssertionError when the parser misbehaves."""
        start = time.monotonic()
        try:
            self.call(data, scratch)
        except self.errors as e:
            if isinstance(e, RescueError):
                assert str(e).strip(), "an error with no message"
        took = time.monotonic() - start
        assert took < SLOW, f"{self.name}: one input took {took:.1f} s"


def _text(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def _write(scratch: Path, name: str, data: bytes) -> Path:
    p = scratch / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return p


LAYOUT_SEED = json.loads((CAPTURE / "layout.json").read_text())


def _layout_tree(rng: random.Random) -> bytes:
    return json.dumps(mutate_tree(rng, LAYOUT_SEED)).encode()


def _journal_tree(rng: random.Random) -> bytes:
    return json.dumps(mutate_tree(rng, JOURNAL_SEED)).encode()


def _unattended_tree(rng: random.Random) -> bytes:
    import tomllib
    seed = tomllib.loads(UNATTENDED.decode())
    if rng.random() < 0.5:  # exactly one selector, of any kind
        seed["target"] = {rng.choice(["by_id", "device", "empty_disk_min_gib"]): rng.choice([odd(rng), "/dev/sdb", 8])}
    tree = mutate_tree(rng, seed)
    if isinstance(tree, dict) and isinstance(tree.get("target"), dict) and rng.random() < 0.7:
        target = tree.pop("target")
        return (to_toml(tree) + "[target]\n" + to_toml(target)).encode()
    return to_toml(tree).encode()


def _capture_files() -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in CAPTURE.iterdir() if p.is_file() and p.name != "layout.json"}


CAPTURE_FILES = _capture_files()


def _capture_call(data: bytes, scratch: Path) -> object:
    """One of the capture folder's raw files replaced by the fuzz input (the first byte picks which)."""
    names = sorted(CAPTURE_FILES)
    name = names[data[0] % len(names)] if data else names[0]
    files = dict(CAPTURE_FILES)
    files[name] = data[1:]
    return build_layout(files, client="demo", captured_at="2026-11-26T10:58:24+00:00", root="/mnt/demo")


def _capture_seeds() -> list[bytes]:
    names = sorted(CAPTURE_FILES)
    return [bytes([i]) + CAPTURE_FILES[n] for i, n in enumerate(names)]


BTRFS_CAPTURE = SAMPLES / "btrfs-capture"
BTRFS_FILES = {p.name: p.read_bytes() for p in BTRFS_CAPTURE.iterdir() if p.is_file() and p.name != "layout.json"}


def _btrfs_capture_call(data: bytes, scratch: Path) -> object:
    """A real btrfs capture (subvolumes, snapshots, nocow, qgroups) with one raw file replaced."""
    names = sorted(BTRFS_FILES)
    name = names[data[0] % len(names)] if data else names[0]
    files = dict(BTRFS_FILES)
    files[name] = data[1:]
    return build_layout(files, client="subvols", captured_at="2026-12-04T23:00:00+00:00",
                        root="/tmp/rescue-btrfs-sample/root")


def _btrfs_raw(part: str) -> list[bytes]:
    return [p.read_bytes() for p in BTRFS_CAPTURE.glob(f"btrfs-*-{part}.txt")]


def _legacy_setup(scratch: Path) -> None:
    if (scratch / "laptop").exists():
        shutil.rmtree(scratch / "laptop")
    shutil.copytree(LEGACY, scratch / "laptop")


LEGACY_FILES = ["laptoproot/2003-1006-0300/df.laptop", "../../sfdisk.laptop", "laptoproot/2003-1006-0300/summary",
                "laptoproot/2003-1006-0300/tree/etc/fstab"]


def _legacy_call(data: bytes, scratch: Path) -> object:
    """One of the old hook's files (df.N, sfdisk.N, summary, the image's fstab) replaced."""
    which = LEGACY_FILES[data[0] % len(LEGACY_FILES)] if data else LEGACY_FILES[0]
    image = scratch / "laptop" / "laptoproot" / "2003-1006-0300"
    rel = {"../../sfdisk.laptop": scratch / "laptop" / "sfdisk.laptop"}.get(which, scratch / "laptop" / which)
    original = rel.read_bytes()
    rel.write_bytes(data[1:])
    try:
        return load_legacy(image)
    finally:
        rel.write_bytes(original)


def _legacy_seeds() -> list[bytes]:
    out = []
    for i, rel in enumerate(LEGACY_FILES):
        path = LEGACY / "sfdisk.laptop" if rel.startswith("../") else LEGACY / rel
        out.append(bytes([i]) + path.read_bytes())
    return out


def _image_setup(scratch: Path) -> None:
    (scratch / "bank" / "vault" / "2026-1126-0300" / "tree").mkdir(parents=True, exist_ok=True)


def _image_call(data: bytes, scratch: Path) -> object:
    """A dirvish image whose summary (and log) are the fuzz input: read as `rescue list` reads it."""
    image = scratch / "bank" / "vault" / "2026-1126-0300"
    (image / "summary").write_bytes(data)
    (image / "log").write_bytes(data[-4096:])
    bank = (scratch / "bank").resolve()
    img = read_image(bank, "vault", image)
    assert img is not None
    return img


def _layout_file_call(data: bytes, scratch: Path) -> object:
    """layout.json as a bank holds it: read through load_layout like plan and restore do."""
    _write(scratch, "image/rescue/layout.json", data)
    return load_layout(scratch / "image")


def _unattended_call(data: bytes, scratch: Path) -> object:
    return load_config(_write(scratch, "rescue-unattended.toml", data))


def _master_call(data: bytes, scratch: Path) -> object:
    return banks_from_master(_write(scratch, "master.conf", data))


def _journal_call(data: bytes, scratch: Path) -> object:
    """A journal left by a power cut may hold anything: loading it starts empty, never crashes."""
    j = Journal.load(_write(scratch, "journal.json", data))
    for key in list(j.steps):
        j.is_done(key), j.was_started(key)
    j.all_notes()
    return j


def _summary_text_call(data: bytes, scratch: Path) -> object:
    text = _text(data)
    parse_config(text)
    rsync_stats(text)
    for line in text.splitlines()[:20]:
        parse_date(line)
    return parse_date(text)


TARGETS: list[Target] = [
    # layout text parsers (quick test in test_layout_fuzz.py; here for the long run)
    Target("sfdisk", lambda d, s: parse_sfdisk(d, "fuzz"), (LayoutError,),
           [p.read_bytes() for p in SAMPLES.glob("*.dump")] + [CAPTURE.joinpath("sfdisk-loop9.dump").read_bytes()]),
    Target("lsblk", lambda d, s: parse_lsblk(d, "fuzz"), (LayoutError,),
           [SAMPLES.joinpath("lsblk-loop.json").read_bytes(), CAPTURE.joinpath("lsblk.json").read_bytes()]),
    Target("findmnt", lambda d, s: parse_findmnt(d, "fuzz"), (LayoutError,), [CAPTURE.joinpath("findmnt.json").read_bytes()]),
    Target("fstab", lambda d, s: parse_fstab(d, "fuzz"), (LayoutError,),
           [SAMPLES.joinpath("hand-fstab").read_bytes(), CAPTURE.joinpath("fstab").read_bytes()]),
    Target("df", lambda d, s: parse_df(d, "fuzz"), (LayoutError,),
           [CAPTURE.joinpath("df.txt").read_bytes(), LEGACY.joinpath("laptoproot/2003-1006-0300/df.laptop").read_bytes()]),
    Target("swaps", lambda d, s: parse_swaps(d, "fuzz"), (LayoutError,), [SAMPLES.joinpath("hand-swaps").read_bytes()]),
    Target("blkid", lambda d, s: parse_blkid(d, "fuzz"), (LayoutError,),
           [p.read_bytes() for p in CAPTURE.glob("blkid-*.txt")]),
    Target("os-release", lambda d, s: parse_os_release(d, "fuzz"), (LayoutError,), [CAPTURE.joinpath("os-release").read_bytes()]),
    Target("roots", lambda d, s: parse_roots(d, "fuzz"), (LayoutError,), [CAPTURE.joinpath("roots.txt").read_bytes()]),
    # whole files as a bank holds them
    Target("layout.json", lambda d, s: Layout.loads(_text(d), "fuzz"), (LayoutError,),
           [CAPTURE.joinpath("layout.json").read_bytes(), BTRFS_CAPTURE.joinpath("layout.json").read_bytes()],
           tree=_layout_tree),
    Target("layout.json-file", _layout_file_call, (LayoutError,), [CAPTURE.joinpath("layout.json").read_bytes()],
           tree=_layout_tree),
    Target("capture-folder", _capture_call, (LayoutError,), _capture_seeds()),
    Target("legacy-files", _legacy_call, (LayoutError,), _legacy_seeds(), setup=_legacy_setup),
    Target("btrfs-subvolumes", lambda d, s: btrfs.parse_subvolume_list(d, "fuzz"), (LayoutError,),
           _btrfs_raw("subvolumes")),
    Target("btrfs-readonly", lambda d, s: btrfs.parse_readonly_ids(d, "fuzz"), (LayoutError,), _btrfs_raw("readonly")),
    Target("btrfs-default", lambda d, s: btrfs.parse_get_default(d, "fuzz"), (LayoutError,), _btrfs_raw("default")),
    Target("btrfs-qgroups", lambda d, s: btrfs.parse_qgroups(d, "fuzz"), (LayoutError,), _btrfs_raw("qgroups")),
    Target("btrfs-nocow", lambda d, s: btrfs.parse_nocow(d, "fuzz"), (LayoutError,), _btrfs_raw("nocow")),
    Target("btrfs-capture-folder", _btrfs_capture_call, (LayoutError,),
           [bytes([i]) + BTRFS_FILES[n] for i, n in enumerate(sorted(BTRFS_FILES))]),
    Target("dirvish-summary", _image_call, (BackupError,),
           [p.read_bytes() for p in DIRVISH.glob("summary.*")] + [DIRVISH.joinpath("log.success").read_bytes()],
           setup=_image_setup),
    Target("dirvish-text", _summary_text_call, (),
           [p.read_bytes() for p in DIRVISH.glob("*")] + [b"2026-1126-0300", b"20261126030000", b"2026-11-26T03:00"]),
    Target("master.conf", _master_call, (BackupError,), [MASTER_CONF]),
    Target("unattended.toml", _unattended_call, (ConfigError,), [UNATTENDED], tree=_unattended_tree),
    Target("kernel-cmdline", lambda d, s: config_from_cmdline(_text(d)), (),
           [b"BOOT_IMAGE=/vmlinuz quiet rescue.config=/backup/x.toml console=ttyS0,115200"]),
    Target("journal", _journal_call, (), [_journal_seed()], tree=_journal_tree),
    Target("drill-console", lambda d, s: parse_console(_text(d)), (),
           [b"DEMO-UP demo\nDEMO-FS / 1234-abcd ext4 755\nDEMO-SWAP /dev/vda3 active\nDEMO-DATA ok\nDEMO-DONE\n"]),
]
BY_NAME = {t.name: t for t in TARGETS}
# The layout text parsers already have a unit-tier fuzz test; the rest are quick-fuzzed here.
QUICK = [t for t in TARGETS if t.name not in {"sfdisk", "lsblk", "findmnt", "fstab", "df", "swaps", "blkid",
                                                "os-release", "roots"}]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def test_seeds_parse_cleanly(scratch):
    """The starting samples are good input: every parser accepts them without error."""
    for t in TARGETS:
        d = scratch / t.name
        d.mkdir(exist_ok=True)
        t.setup(d)
        for seed in t.seeds:
            t.call(seed, d)


def test_mutators_change_input():
    rng = random.Random(7)
    t = BY_NAME["unattended.toml"]
    samples = {t.sample(rng) for _ in range(200)}
    assert len(samples) > 150 and UNATTENDED not in samples


@pytest.mark.parametrize("target", QUICK, ids=lambda t: t.name)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1))
def test_fuzz_input_ends_in_result_or_own_error(target, seed, scratch):
    d = scratch / target.name
    if not d.exists():
        d.mkdir()
        target.setup(d)
    target.check(target.sample(random.Random(seed)), d)


@pytest.mark.parametrize("target", [t for t in QUICK if t.tree], ids=lambda t: t.name)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=600) | st.text(max_size=300).map(lambda s: s.encode("utf-8", "surrogateescape")))
def test_random_bytes_end_in_result_or_own_error(target, data, scratch):
    d = scratch / target.name
    if not d.exists():
        d.mkdir()
        target.setup(d)
    target.check(data, d)


@pytest.mark.parametrize("damage", [
    {"runs": "x"}, {"runs": [1]}, {"runs": math.inf}, {"steps": [1]}, {"steps": {"a": "done"}},
    {"steps": {"copy:home": {"state": "started", "data": 5}}},
    {"steps": {"copy:home": {"state": "started", "data": {"child": {"pid": 1, "start_time": 0}}}}},
    {"steps": {"copy:home": {"state": "started", "data": {"child": {"pid": "x"}}}}},
    {"steps": {"copy:home": {"attempts": "2"}}}, {"notes": {"k": "text"}}, {"mount_base": "../x"},
    {"mount_base": 7},
])
def test_damaged_journal_starts_empty(tmp_path, damage):
    """A journal damaged on disk is no journal: the rerun redoes every step (safe), never crashes
    and never acts on half a record (a pid to kill, a folder to unmount)."""
    data = json.loads(_journal_seed())
    data.update(damage)
    path = _write(tmp_path, "journal.json", json.dumps(data).encode())
    j = Journal.load(path)
    assert j.steps == {} and j.mount_base is None and j.runs == 0
    good = Journal.load(_write(tmp_path, "good.json", _journal_seed()))
    assert good.runs == 2 and good.is_done("partition:/dev/loop7") and good.was_started("copy:home")


@pytest.mark.parametrize("log", [b"Number of files: , dir: 2)\n", b"Total file size: ., bytes\n",
                                 b"Number of files: 4 (reg: 3)\nTotal file size: ,,, bytes\n"])
def test_garbled_rsync_numbers_in_an_image_log(log, tmp_path):
    """Found by bench/fuzz_parsers.py: a log whose numbers are only separators crashed rescue list
    with ValueError; now such a number is simply not known."""
    BY_NAME["dirvish-text"].check(log, tmp_path)
    _image_setup(tmp_path)
    img = _image_call(b"client: vm\nStatus: success\n" + log, tmp_path)
    assert img.status.value == "success"
