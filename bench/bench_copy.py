#!/usr/bin/env python3
"""Benchmark the restore's copy engine against cp -a, rsync -aHAX, a tar pipe and dd.

One generated corpus (many small files, a few large ones, hard links) on one loop-disk ext4 filesystem is copied onto a freshly made
second one, by:
  restore  rescue.engine.copy.copy_tree (what the copy step runs, progress polling on):
           min(2 x cores, 4) cp -a runs over parts of the tree, the backup's files read
           ahead in their order (64 MiB ahead of the target), with write-behind
           (background writeback from 64 MiB dirty on)
  restore-N (optional) the same with N cp runs (restore-1: one cp); restore-nora without the
           read-ahead of the backup's files, restore-raM with it M MiB ahead, restore-nowb without the write-behind
  cp       cp -a
  rsync    rsync -aHAX --numeric-ids
  tar      a tar pipe as a sysadmin types it (full fidelity: xattrs, ACLs, numeric owners):
           tar --xattrs --acls --numeric-owner -cf - . |
           tar --xattrs --xattrs-include='*' --acls --numeric-owner -xpf -
  cp+wb, rsync+wb, tar+wb the same peers with the restore's write-behind
           (the same writeback setting while they copy): the ratio to these shows
           how much of the gain is the parallel copy and how much the write-behind
The summary gives `restore / PEER = R` for every peer, and the goal of issue 19:
restore <= 0.9 x the fastest of tar, tar+wb, cp+wb, rsync+wb in the same run.
and the large files alone by the copy engine against a dd of the same number
of bytes from disk to disk (the physical reference: `dd bs=4M` as a person
types it, and dd-direct, with direct I/O on both disks and the restore's
write-behind: the raw bound of the disks, stricter than the goal asks). Every run ends with a
sync of the target, and both filesystems are remounted between runs so no
run finds the files' inodes and pages cached in the filesystem; the loop file
under the source disk may still be in the host's page cache (reading it is
then a memory copy): --cold empties the page cache before each copy, so the
source is read from the host's disk, as a restore reads a backup disk. The
source is mounted read-only, as the rescue disk mounts the backup partition. The target is made as the restore's mkfs step makes it
(inode tables zeroed lazily after the first mount) and mounted for the
restore as its mount step does (noinit_itable: the zeroing waits for the
restored system's first boot), for cp and rsync with a plain mount, as a
hand-written restore would (--same-mount: as the restore's). Each method
runs in its own child process, which reports its wall time and peak RSS
(its own and its commands').

    sudo .venv/bin/python bench/bench_copy.py                 # 30,000 small files, 3 x 256 MiB
    sudo .venv/bin/python bench/bench_copy.py --small 100000 --large 0 --twins   # dirvish-like tree
    sudo .venv/bin/python bench/bench_copy.py --small 100000 --large 0 --twins --cold   # read from disk
    sudo .venv/bin/python bench/bench_copy.py --small 1000000 --large 0 --links 0 --empty --twins \
        --rss                                                 # memory budget: a million linked files

--rss samples, every 0.1 s, the summed RSS of the copying process and all its
commands alive at that moment (the parallel cp runs together), beside
getrusage's peak of the largest single one, against the 256 MiB budget.

It writes only to the two loop disks it creates under --workdir (default a
new folder in /var/tmp) and removes them at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rescue.devices import loop_disk  # noqa: E402
from rescue.run import run  # noqa: E402
from rescue.steps.mount import mount_argv  # noqa: E402

MiB = 1 << 20
GiB = 1 << 30


TAR_CREATE = ["tar", "--xattrs", "--acls", "--numeric-owner", "-cf", "-", "."]
TAR_EXTRACT = ["tar", "--xattrs", "--xattrs-include=*", "--acls", "--numeric-owner", "-xpf", "-"]
GOAL_PEERS = ("tar", "tar+wb", "cp+wb", "rsync+wb")  # issue 19: restore <= 0.9 x the fastest of these


def tar_pipe(src: str, dst: str) -> None:
    """tar -c | tar -x, both through pipes of their own (no shell)."""
    import subprocess

    create = subprocess.Popen(TAR_CREATE, cwd=src, stdout=subprocess.PIPE)
    extract = subprocess.Popen(TAR_EXTRACT, cwd=dst, stdin=create.stdout)
    assert create.stdout is not None
    create.stdout.close()  # extract holds the only read end: create sees EPIPE if extract dies
    rc = (extract.wait(), create.wait())
    if rc != (0, 0):
        raise SystemExit(f"tar pipe failed: {rc}")


def tree_rss_kib(root: int) -> int:
    """Summed VmRSS of process `root` and all its descendants alive now."""
    parent: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat_line = Path(f"/proc/{d}/stat").read_text()
                parent[int(d)] = int(stat_line[stat_line.rindex(")") + 2:].split()[1])
    tree, grew = {root}, True
    while grew:
        more = {p for p, pp in parent.items() if pp in tree and p not in tree}
        tree |= more
        grew = bool(more)
    total = 0
    for p in tree:
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


class RssSampler:
    """The peak of tree_rss_kib(this process), sampled in a thread while the block runs."""

    def __init__(self, every: float = 0.1) -> None:
        import threading

        self.peak, self.every, self.done = 0, every, threading.Event()
        self.thread = threading.Thread(target=self.sample, daemon=True)

    def sample(self) -> None:
        while not self.done.is_set():
            self.peak = max(self.peak, tree_rss_kib(os.getpid()))
            self.done.wait(self.every)

    def __enter__(self) -> RssSampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join()


def one(method: str, src: str, dst: str, nbytes: int, sample_rss: bool = False) -> dict[str, float]:
    """Run one method in this (child) process; report time and peak RSS."""
    sampler = RssSampler() if sample_rss else contextlib.nullcontext()
    with sampler:
        res = _one(method, src, dst, nbytes)
    if isinstance(sampler, RssSampler):
        res["rss_tree_mib"] = sampler.peak / 1024
    return res


def _one(method: str, src: str, dst: str, nbytes: int) -> dict[str, float]:
    t0 = time.monotonic()
    if method.startswith("restore"):
        import rescue.engine.copy
        from rescue.engine.copy import Unjournalled, copy_tree

        for knob in method.split("-")[1:]:
            if knob.isdigit():  # restore-N: N cp runs instead of the default
                rescue.engine.copy.WORKERS = int(knob)
            elif knob == "nora":  # restore-nora: without the read-ahead of the backup's files
                rescue.engine.copy.READ_AHEAD_BYTES = 0
            elif knob.startswith("ra") and knob[2:].isdigit():  # restore-raM: read-ahead window of M MiB
                rescue.engine.copy.READ_AHEAD_BYTES = int(knob[2:]) * MiB
            elif knob == "nowb":  # restore-nowb: without the write-behind (the machine's writeback setting)
                rescue.engine.copy.WRITE_BEHIND_BYTES = 0
            elif knob.startswith("wb") and knob[2:].isdigit():  # restore-wbM: write-behind from M MiB
                rescue.engine.copy.WRITE_BEHIND_BYTES = int(knob[2:]) * MiB

        ticks = []
        # as the copy step runs it: the plan knows the used bytes, not the file count
        copy_tree(Unjournalled(), Path(src), Path(dst), resume=False, total_bytes=nbytes,
                  progress=lambda *a: ticks.append(a))
    elif method.removesuffix("+wb") in ("cp", "rsync"):
        from rescue.engine.copy import write_behind

        argv = (["cp", "-a", f"{src}/.", f"{dst}/"] if method.startswith("cp")
                else ["rsync", "-aHAX", "--numeric-ids", f"{src}/", f"{dst}/"])
        with write_behind() if method.endswith("+wb") else contextlib.nullcontext():
            run(argv)
    elif method in ("tar", "tar+wb"):
        from rescue.engine.copy import write_behind

        with write_behind() if method.endswith("+wb") else contextlib.nullcontext():
            tar_pipe(src, dst)
    elif method == "dd":  # as a person types it: through the block devices' page cache
        run(["dd", f"if={src}", f"of={dst}", "bs=4M", f"count={nbytes}", "iflag=count_bytes", "status=none"])
    elif method == "dd-direct":
        from rescue.engine.copy import write_behind

        # the raw bound of these disks: direct I/O on both (no page cache between them), and
        # the restore's write-behind, so the host's disk starts writing as early as for the restore
        with write_behind():
            run(["dd", f"if={src}", f"of={dst}", "bs=4M", f"count={nbytes}", "iflag=count_bytes,direct",
                 "oflag=direct", "status=none"])
    else:
        raise SystemExit(f"unknown method {method}")
    run(["sync", "-f", dst] if not method.startswith("dd") else ["sync"])
    seconds = time.monotonic() - t0
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "seconds": seconds,
        # CPU time of this process and its commands (not the kernel's loop and writeback threads):
        # unlike wall time it hardly depends on what else the machine runs
        "cpu": me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime,
        "rss_self_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_children_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }


def make_corpus(top: Path, small: int, large: int, large_mib: int, links: int, seed: int = 7,
                empty: bool = False, twins: bool = False) -> None:
    """The tree to copy under top; with twins, every small file also gets a hard link
    outside it (as in a dirvish bank, where each file is linked from older images),
    so cp must remember every inode: the worst case for its memory."""
    rnd = random.Random(seed)
    blob = os.urandom(64 * 1024)
    s = top / "small"
    for i in range(small):
        d = s / f"d{i // 500:04}"
        if i % 500 == 0:
            d.mkdir(parents=True)
        size = 0 if empty else rnd.choice((0, 100, 700, 2000, 4096, 6000, 12000, 30000))
        with open(d / f"file {i:07}.txt", "wb") as f:
            f.write(blob[:size])
        if twins:
            t = top.parent / "twins" / d.name
            if i % 500 == 0:
                t.mkdir(parents=True)
            os.link(d / f"file {i:07}.txt", t / f"file {i:07}.txt")
        if i % 7 == 0:
            os.chmod(d / f"file {i:07}.txt", 0o4755 if i % 14 == 0 else 0o600)
    ln = top / "links"
    ln.mkdir()
    for i in range(min(links, small)):
        os.link(s / f"d{i // 500:04}" / f"file {i:07}.txt", ln / f"link{i:06}")
    lg = top / "large"
    lg.mkdir()
    for i in range(large):
        with open(lg / f"big{i}.bin", "wb") as f:
            for _ in range(large_mib):
                f.write(os.urandom(MiB))


def mkfs(dev: str) -> None:
    # as the restore's mkfs step makes a filesystem: inode tables zeroed lazily after the first mount
    argv = ["mkfs.ext4", "-q", "-F", "-i", "4096", dev]
    for _ in range(40):  # the kernel may hold the device a moment after umount
        if run(argv, check=False).returncode == 0:
            return
        time.sleep(0.25)
    run(argv)


def drop_caches() -> None:
    """Written data to disk first, then the clean page cache, dentries and inodes dropped."""
    run(["sync"])
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def child(method: str, src: str, dst: str, nbytes: int = 0, rss: bool = False) -> dict[str, float]:
    out = run([sys.executable, __file__, "--one", method, src, dst, str(nbytes), *(["--rss"] if rss else [])]).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--small", type=int, default=30000, help="small files (default 30000)")
    p.add_argument("--large", type=int, default=3, help="large files (default 3)")
    p.add_argument("--large-mib", type=int, default=256, help="size of each large file (default 256 MiB)")
    p.add_argument("--links", type=int, default=3000, help="extra hard links to small files")
    p.add_argument("--rounds", type=int, default=2, help="runs of each method; the fastest counts")
    p.add_argument("--methods", default="restore,tar,tar+wb,cp+wb,rsync+wb,cp,rsync",
                   help="comma-separated: restore,restore-N (N cp runs),restore-nowb,restore-wbM (M MiB),restore-N-nowb,restore-nora (no read-ahead),restore-raM (M MiB ahead),tar,cp,rsync,tar+wb,cp+wb,rsync+wb")
    p.add_argument("--rss", action="store_true",
                   help="the memory budget run: restore only (unless --methods), one round, the summed RSS "
                        "of the process and its commands sampled against 256 MiB")
    p.add_argument("--workdir", type=Path, default=None, help="where the loop disk images go (default /var/tmp)")
    p.add_argument("--empty", action="store_true", help="small files hold no data (for the memory budget run)")
    p.add_argument("--same-mount", action="store_true",
                   help="mount the target for cp and rsync as the restore's mount step does (noinit_itable), "
                        "to see what the copy alone gains")
    p.add_argument("--cold", action="store_true",
                   help="empty the page cache before each copy: the source is read from its disk, as a "
                        "restore reads a backup disk (without it the source's loop file is in memory)")
    p.add_argument("--twins", action="store_true",
                   help="link every small file once more outside the copied tree (dirvish-like, worst case for memory)")
    p.add_argument("--one", nargs=4, metavar=("METHOD", "SRC", "DST", "BYTES"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        method, src, dst, n = args.one
        print(json.dumps(one(method, src, dst, int(n), sample_rss=args.rss)))
        return 0
    if args.rss:
        if "--methods" not in sys.argv:
            args.methods = "restore"
        if "--rounds" not in sys.argv:
            args.rounds = 1
    if os.geteuid() != 0:
        raise SystemExit("bench_copy: run as root (it makes loop disks and filesystems)")

    work = Path(tempfile.mkdtemp(prefix="bench-copy-", dir=args.workdir or "/var/tmp"))
    per_file = 4096 if args.empty else 16 * 1024
    size = max(2 * GiB, int((args.small * per_file + args.large * args.large_mib * MiB + GiB) * 1.5))
    src_m, dst_m = work / "src", work / "dst"
    src_m.mkdir()
    dst_m.mkdir()
    methods = args.methods.split(",")
    results: dict[str, list[dict[str, float]]] = {m: [] for m in [*methods, "restore-large", "dd", "dd-direct"]}
    try:
        with loop_disk(work / "src.img", size) as sdev, loop_disk(work / "dst.img", size) as ddev:
            mkfs(sdev)
            run(["mount", sdev, str(src_m)])
            t0 = time.monotonic()
            make_corpus(src_m / "corpus", args.small, args.large, args.large_mib, args.links,
                        empty=args.empty, twins=args.twins)
            run(["sync", "-f", str(src_m)])
            made = time.monotonic() - t0
            du = int(run(["du", "-s", "-B1", str(src_m / "corpus")]).stdout.split()[0])
            inodes = int(run(["du", "-s", "--inodes", str(src_m / "corpus")]).stdout.split()[0])
            large_bytes = args.large * args.large_mib * MiB
            run(["umount", str(src_m)])
            print(f"corpus: {inodes} inodes, {du / MiB:.0f} MiB used ({args.small} small files, "
                  f"{args.large} x {args.large_mib} MiB, {args.links} hard links); "
                  f"made in {made:.0f}s", flush=True)
            plan = [(m, "corpus") for m in methods]
            if args.large:
                plan += [("restore-large", "corpus/large"), ("dd", None), ("dd-direct", None)]
            for r in range(args.rounds):
                # each round starts one method later: the first copy of a round was measured up to
                # 2-3x slower than the same copy later in the round (whatever the method), so a fixed
                # order made the first-listed method (the restore) look slow
                k = r % len(methods)
                for method, sub in [*plan[k:len(methods)], *plan[:k], *plan[len(methods):]]:
                    mkfs(ddev)
                    if method.startswith("dd"):
                        res = child(method, sdev, ddev, large_bytes)
                    else:
                        # read-only, as the rescue disk mounts the backup partition: reading
                        # the corpus then writes no access times back to the source disk
                        run(["mount", "-o", "ro", sdev, str(src_m)])
                        if method.startswith("restore") or args.same_mount:
                            run(mount_argv(ddev, "ext4", str(dst_m)))  # as the restore's mount step
                        else:
                            run(["mount", ddev, str(dst_m)])  # as a hand-written restore would
                        if args.cold:
                            drop_caches()
                        try:
                            res = child(method, str(src_m / sub), str(dst_m),
                                        large_bytes if method == "restore-large" else du, rss=args.rss)
                        finally:
                            run(["umount", str(dst_m)])
                            run(["umount", str(src_m)])
                    results[method].append(res)
                    tree = f", tree {res['rss_tree_mib']:6.1f} MiB" if "rss_tree_mib" in res else ""
                    print(f"  round {r + 1} {method:14} {res['seconds']:7.2f}s  cpu {res['cpu']:5.2f}s  rss self "
                          f"{res['rss_self_mib']:6.1f} MiB, commands {res['rss_children_mib']:6.1f} MiB{tree}, "
                          f"load {open('/proc/loadavg').read().split()[0]}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    best = {m: min(r["seconds"] for r in rs) for m, rs in results.items() if rs}
    print("\nbest of", args.rounds, "rounds (wall time, including sync of the target); load at the end:",
          open("/proc/loadavg").read().split()[:3])
    for m, s in best.items():
        rss = max(r["rss_self_mib"] + r["rss_children_mib"] for r in results[m])
        cpu = min(r["cpu"] for r in results[m])
        print(f"  {m:14} {s:7.2f}s   cpu {cpu:5.2f}s   peak RSS (process + its commands) {rss:6.1f} MiB")
    if args.rss and results.get("restore"):
        r = max(results["restore"], key=lambda r: r.get("rss_tree_mib", 0))
        print(f"  peak RSS of the restore's copy: {r.get('rss_tree_mib', 0):.1f} MiB summed over the process and "
              f"its commands alive at once (python {r['rss_self_mib']:.1f} MiB, largest command "
              f"{r['rss_children_mib']:.1f} MiB; budget 256 MiB)")
    for peer in best:
        if "restore" in best and peer not in ("restore", "restore-large", "dd", "dd-direct"):
            print(f"  restore / {peer:10} = {best['restore'] / best[peer]:.2f}")
    goal = [p for p in GOAL_PEERS if p in best]
    if "restore" in best and goal:
        fastest = min(goal, key=lambda p: best[p])
        print(f"  restore / fastest of {','.join(goal)} ({fastest}) = {best['restore'] / best[fastest]:.2f}"
              f"  (goal <= 0.90)")
    for dd, goal in (("dd", "goal >= 0.90"), ("dd-direct", "the disks' raw bound")):
        if "restore-large" in best and dd in best:
            print(f"  large files: {dd} / restore = {best[dd] / best['restore-large']:.2f} of {dd}'s throughput "
                  f"({goal}; {large_bytes / MiB / best['restore-large']:.0f} MiB/s vs "
                  f"{large_bytes / MiB / best[dd]:.0f} MiB/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
