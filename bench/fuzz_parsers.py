"""Long fuzz run of every parser rescue feeds with outside input (>= 100,000 inputs each).

The parsers and their starting samples are the table in
tests/unit/test_fuzz_parsers.py (the unit tier runs a few hundred inputs of
each in seconds). Here each parser gets --runs inputs (default 100,000) from
the same mutators (random bytes, mutated real samples, structurally mutated
JSON/TOML trees), and, with --atheris, a coverage-guided libFuzzer run too.

An input passes when it ends in a result or in the parser's own error
(LayoutError, BackupError, the config's error) within 2 s. Anything else is
counted, the first few are printed with the input that caused them, and the
exit code is 1.

    .venv/bin/python bench/fuzz_parsers.py                      # 100,000 per parser
    .venv/bin/python bench/fuzz_parsers.py --runs 2000 --only journal
    .venv/bin/python bench/fuzz_parsers.py --atheris --runs 100000

Output: one line per parser with the inputs run, how many ended in a result,
how many in the parser's own error, failures, inputs per second and the
slowest input.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import random
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def load_targets():
    spec = importlib.util.spec_from_file_location("fuzz_targets", REPO / "tests" / "unit" / "test_fuzz_parsers.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["fuzz_targets"] = mod
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def run_random(target, runs: int, seed: int, scratch: Path) -> dict:
    rng = random.Random(seed)
    target.setup(scratch)
    ok = own = 0
    failures: dict[str, tuple[bytes, str]] = {}
    slowest = 0.0
    t0 = time.monotonic()
    for _ in range(runs):
        data = target.sample(rng)
        start = time.monotonic()
        try:
            target.call(data, scratch)
            ok += 1
        except target.errors:
            own += 1
        except Exception as e:  # noqa: BLE001 - counting exactly these is the point
            tb = traceback.extract_tb(e.__traceback__)[-1]
            where = f"{type(e).__name__} at {Path(tb.filename).name}:{tb.lineno}"
            failures.setdefault(where, (data, f"{type(e).__name__}: {e}"))
            failures[where + "#count"] = (b"", str(int(failures.get(where + "#count", (b"", "0"))[1]) + 1))
        took = time.monotonic() - start
        slowest = max(slowest, took)
        if took >= target_slow():
            failures.setdefault(f"slow input ({took:.1f} s)", (data, "hang"))
    wall = time.monotonic() - t0
    bad = sum(int(v[1]) for k, v in failures.items() if k.endswith("#count"))
    bad += sum(1 for k in failures if k.startswith("slow"))
    return {"runs": runs, "ok": ok, "own": own, "bad": bad, "wall": wall, "slowest": slowest,
            "failures": {k: v for k, v in failures.items() if not k.endswith("#count")}}


def target_slow() -> float:
    return TARGETS_MOD.SLOW


def atheris_one(name: str, runs: int, corpus: Path) -> int:
    """Run one parser under atheris (libFuzzer) in this process; a crash exits non-zero."""
    import atheris

    target = TARGETS_MOD.BY_NAME[name]
    scratch = Path(tempfile.mkdtemp(prefix=f"fuzz-{name}-"))
    target.setup(scratch)

    def one(data: bytes) -> None:
        try:
            target.call(data, scratch)
        except target.errors:
            pass

    corpus.mkdir(parents=True, exist_ok=True)
    for i, s in enumerate(target.seeds):
        (corpus / f"seed{i}").write_bytes(s)
    rng = random.Random(1)
    if target.tree is not None:  # structurally mutated trees as extra corpus: libFuzzer mutates bytes only
        for i in range(50):
            (corpus / f"tree{i}").write_bytes(target.tree(rng))
    atheris.instrument_all()  # coverage of every loaded module (rescue's parsers included) guides libFuzzer
    atheris.Setup([sys.argv[0], f"-runs={runs}", "-max_len=8192", "-timeout=5", "-rss_limit_mb=1024",
                   str(corpus)], one)
    atheris.Fuzz()  # exits the process
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=100_000, help="inputs per parser (default 100,000)")
    ap.add_argument("--only", action="append", help="parser name (repeatable); default all")
    ap.add_argument("--seed", type=int, default=20261126)
    ap.add_argument("--atheris", action="store_true", help="also a coverage-guided atheris run per parser")
    ap.add_argument("--no-random", action="store_true", help="with --atheris: only the atheris run")
    ap.add_argument("--atheris-one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.atheris_one:
        return atheris_one(args.atheris_one, args.runs, Path(os.environ["FUZZ_CORPUS"]))

    targets = [t for t in TARGETS_MOD.TARGETS if not args.only or t.name in args.only]
    print(f"{'parser':18} {'inputs':>8} {'result':>8} {'own err':>8} {'bad':>5} {'in/s':>7} {'slowest':>8}")
    total_bad = 0
    with tempfile.TemporaryDirectory(prefix="fuzz-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None) as tmp:
        for t in ([] if args.no_random else targets):
            scratch = Path(tmp) / t.name
            scratch.mkdir()
            r = run_random(t, args.runs, args.seed, scratch)
            total_bad += r["bad"]
            print(f"{t.name:18} {r['runs']:>8} {r['ok']:>8} {r['own']:>8} {r['bad']:>5} "
                  f"{r['runs'] / r['wall']:>7.0f} {r['slowest'] * 1000:>6.0f}ms", flush=True)
            for where, (data, msg) in list(r["failures"].items())[:3]:
                print(f"    {where}: {msg[:200]}\n      input: {data[:300]!r}", flush=True)
        if args.atheris:
            print("\natheris (coverage-guided, libFuzzer):", flush=True)
            import subprocess

            for t in targets:
                env = dict(os.environ, FUZZ_CORPUS=str(Path(tmp) / f"corpus-{t.name}"))
                t0 = time.monotonic()
                p = subprocess.run([sys.executable, __file__, "--atheris-one", t.name, "--runs", str(args.runs)],
                                   capture_output=True, text=True, env=env)
                done = [ln for ln in p.stderr.splitlines() if ln.startswith("Done ")]
                print(f"  {t.name:18} exit {p.returncode} {done[-1] if done else ''} "
                      f"({time.monotonic() - t0:.0f} s)", flush=True)
                if p.returncode != 0:
                    total_bad += 1
                    print("    " + "\n    ".join(p.stderr.splitlines()[-25:]), flush=True)
    print(f"\n{len(targets)} parsers, {args.runs} inputs each: "
          f"{'no failures' if total_bad == 0 else f'{total_bad} failures'}")
    return 1 if total_bad else 0


TARGETS_MOD = load_targets()

if __name__ == "__main__":
    sys.exit(main())
