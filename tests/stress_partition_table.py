"""Stress: partition tables written while the kernel keeps re-reading them.

    python3 tests/stress_partition_table.py DISK ROUNDS [PAUSE]

Writes ROUNDS tables to DISK (gpt and dos layouts in turn, so each round
changes the table) through rescue's own partition writer, while a second
process loops `blockdev --rereadpt` and `partx -u` on the disk (and asks udev
for change events where udev runs), as udev does after every write in the
rescue system; PAUSE seconds (default 0.05) between re-reads: inside a
one-CPU TCG guest udev's work for each change event is slow, and a tighter
loop starves the console the test talks to. Each round the kernel's view and /dev must equal the table
written. The last line is `STRESS-TABLE: OK <n> rounds, <m> re-reads` (exit 0) or
`STRESS-TABLE: FAILED <reason>` (exit 1).

It destroys DISK's table: only loop devices and virtio disks /dev/vd[b-z]
are accepted. Needs only the installed rescue package (the vm tier runs it
inside the rescue system, where udev runs).
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rescue.devices import partition_path, wait_table_settled
from rescue.layout.model import Partition, PartitionTable
from rescue.steps.partition import read_table, table_differences, write_table

ESP = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
LINUX = "0fc63daf-8483-4772-8e79-3d69c7477de4"
SWAP = "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f"

# (label, [(number, start, size, type)]): every layout differs from the one before it in count or place.
# No dos logicals: `partx -u` does not add them, and on some kernels (6.18 here) `blockdev --rereadpt`
# of a loop disk shows no partitions at all, so under a neighbour looping both they are never all shown
# (tests/integration/test_restore_demo.py restores a dos disk with logicals, without a neighbour).
LAYOUTS = (
    ("gpt", [(1, 2048, 16384, ESP), (2, 18432, 32768, LINUX), (3, 51200, 8192, SWAP), (4, 59392, 20480, LINUX),
             (5, 79872, 4096, LINUX)]),
    ("dos", [(1, 2048, 40960, "83"), (2, 43008, 20480, "82")]),
    ("gpt", [(1, 4096, 8192, LINUX), (2, 12288, 8192, LINUX), (3, 20480, 65536, LINUX)]),
    ("dos", [(1, 2048, 8192, "83"), (2, 10240, 8192, "83"), (3, 18432, 8192, "83"), (4, 26624, 40960, "83")]),
    ("gpt", [(1, 2048, 98304, LINUX)]),
)
MIN_SECTORS = 102400 + 2048  # the layouts fit a 51 MiB disk (gpt keeps 33 sectors at the end)

RE_READER = r"""
disk=$1 pause=$2
while :; do
    blockdev --rereadpt "$disk" 2>/dev/null
    partx -u "$disk" 2>/dev/null
    if [ -S /run/udev/control ] && command -v udevadm >/dev/null; then
        udevadm trigger --action=change "$disk" 2>/dev/null
    fi
    echo re-read
    sleep "$pause"  # a busy loop would starve a one-CPU rescue VM and flood udev
done
"""


def table(disk: str, i: int) -> PartitionTable:
    label, parts = LAYOUTS[i % len(LAYOUTS)]
    return PartitionTable(label=label, device=disk, partitions=tuple(
        Partition(node=partition_path(disk, n), start=start, size=size, type=kind)
        for n, start, size, kind in parts))


def refuse(disk: str) -> str | None:
    """Why DISK must not be written (None: a loop device or a virtio disk other than vda)."""
    name = os.path.basename(disk)
    if not (re.fullmatch(r"/dev/loop\d+", disk) or re.fullmatch(r"/dev/vd[b-z]", disk)):
        return f"{disk} is neither a loop device nor a virtio disk /dev/vd[b-z]: its table would be destroyed"
    try:
        if not stat.S_ISBLK(os.stat(disk).st_mode):
            return f"{disk} is not a block device"
    except OSError as e:
        return f"{disk}: {e.strerror}"
    try:
        sectors = int(Path(f"/sys/class/block/{name}/size").read_text())
    except (OSError, ValueError):
        sectors = 0
    if sectors < MIN_SECTORS:
        return f"{disk} has {sectors} sectors, the layouts need {MIN_SECTORS}"
    return None


class _Direct:
    """The one thing read_table needs of a restore context: run a command."""

    @staticmethod
    def run(argv: list[str], **kw: object):  # -> rescue.run.Result
        from rescue.run import run

        return run(argv, **kw)  # type: ignore[arg-type]


def stress(disk: str, rounds: int, pause: float = 0.05, out=sys.stdout) -> tuple[bool, str]:
    """Write `rounds` tables under a re-reading neighbour; (ok, final line)."""
    why = refuse(disk)
    if why:
        return False, f"STRESS-TABLE: FAILED {why}"
    rereads = tempfile.TemporaryFile()  # a line per re-read: proof the neighbour really ran
    reader = subprocess.Popen(["sh", "-c", RE_READER, "re-reader", disk, str(pause)], start_new_session=True,
                              stdout=rereads, stderr=subprocess.DEVNULL)
    t0 = time.monotonic()
    try:
        for i in range(rounds):
            want = table(disk, i)
            try:
                write_table(disk, want)
            except Exception as e:  # noqa: BLE001 - any failure of a round is the finding
                return False, f"STRESS-TABLE: FAILED round {i + 1} ({want.label}, {len(want.partitions)} partitions): " \
                              + " | ".join(str(e).splitlines())
            # the kernel's view equalled the table when write_table returned; the disk must hold it too
            back = read_table(_Direct(), disk)  # type: ignore[arg-type]
            diffs = table_differences(want, back) if back else ["no table could be read back"]
            if diffs:
                return False, f"STRESS-TABLE: FAILED round {i + 1}: the disk holds another table: {'; '.join(diffs)}"
            if (i + 1) % 10 == 0 and i + 1 < rounds:
                print(f"stress: {i + 1} rounds in {time.monotonic() - t0:.1f} s", file=out, flush=True)
    finally:
        os.killpg(reader.pid, 9)
        reader.wait()
    # with the neighbour stopped (maybe halfway through a partx), the view must settle on the last table
    last = table(disk, rounds - 1)
    try:
        wait_table_settled(disk, [(p.number, p.start, p.size) for p in last.partitions], timeout=10)
    except Exception as e:  # noqa: BLE001
        return False, f"STRESS-TABLE: FAILED after the last round: {' | '.join(str(e).splitlines())}"
    rereads.seek(0)
    count = rereads.read().count(b"re-read")
    print(f"stress: {rounds} rounds in {time.monotonic() - t0:.1f} s", file=out, flush=True)
    return True, f"STRESS-TABLE: OK {rounds} rounds, {count} re-reads"


def main(argv: list[str]) -> int:
    try:
        if len(argv) not in (2, 3) or int(argv[1]) < 1:
            raise ValueError
        pause = float(argv[2]) if len(argv) == 3 else 0.05
    except ValueError:
        print("usage: stress_partition_table.py DISK ROUNDS [PAUSE]", file=sys.stderr)
        print("STRESS-TABLE: FAILED bad arguments")
        return 1
    ok, line = stress(argv[0], int(argv[1]), pause)
    print(line, flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
