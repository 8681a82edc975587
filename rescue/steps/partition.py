from __future__ import annotations

from dataclasses import dataclass

from rescue.devices import wait_table_settled
from rescue import libparted
from rescue.errors import LayoutError, RescueError, StepFailed
from rescue.layout.model import Partition, PartitionTable
from rescue.layout.sfdisk import parse_sfdisk, render_sfdisk
from rescue.run import CommandError
from rescue.steps.base import Context, Step, rescan_disk, sh

SFDISK_WRITE = ["sfdisk", "--wipe", "always", "--wipe-partitions", "always", "--no-reread"]


def _norm_type(t: str) -> str:
    t = t.strip().lower()
    return t[2:] if t.startswith("0x") else t


def _norm_id(v: str | None) -> str:
    v = (v or "").strip().lower()
    if v.startswith("0x"):
        v = v[2:].lstrip("0") or "0"
    return v


def table_differences(plan: PartitionTable, disk: PartitionTable) -> list[str]:
    """What differs between the planned table and the one on the disk (empty: same)."""
    diffs = []
    if plan.label != disk.label:
        diffs.append(f"label {disk.label or 'none'} instead of {plan.label}")
    if plan.label_id and _norm_id(plan.label_id) != _norm_id(disk.label_id):
        diffs.append(f"label-id {disk.label_id} instead of {plan.label_id}")
    want = {p.number: p for p in plan.partitions}
    have = {p.number: p for p in disk.partitions}
    for n in sorted(set(want) | set(have)):
        w, h = want.get(n), have.get(n)
        if w is None or h is None:
            diffs.append(f"partition {n} {'missing' if h is None else 'not planned'}")
            continue
        for what, a, b in (
            ("start", w.start, h.start), ("size", w.size, h.size),
            ("type", _norm_type(w.type), _norm_type(h.type)),
        ):
            if a != b:
                diffs.append(f"partition {n} {what} {b} instead of {a}")
        if w.uuid and _norm_id(w.uuid) != _norm_id(h.uuid):
            diffs.append(f"partition {n} PARTUUID {h.uuid} instead of {w.uuid}")
        if w.name and w.name != h.name:
            diffs.append(f"partition {n} name {h.name!r} instead of {w.name!r}")
        if plan.label == "dos" and w.bootable != h.bootable:
            diffs.append(f"partition {n} bootable flag {h.bootable} instead of {w.bootable}")
    return diffs


def read_table(ctx: Context, disk: str) -> PartitionTable | None:
    """The table on the disk now; None when there is none or the dump parser refuses it (both are rewritten)."""
    try:
        out = ctx.run(["sfdisk", "--dump", disk]).stdout
    except CommandError:
        return None  # no table (a blank disk)
    try:
        return parse_sfdisk(out, file=f"sfdisk --dump {disk}")
    except LayoutError as e:
        ctx.say(f"the table on {disk} does not read as a partition table: {e}")
        return None


@dataclass(frozen=True)
class WritePartitionTable(Step):
    """Write the planned table with sfdisk, then read it back with sfdisk and libparted and compare.

    A rerun after an interruption rewrites the table only when the one on the
    disk differs from the plan, so finished filesystems are not disturbed.
    """

    kind = "partition"
    disk: str
    table: PartitionTable  # already migrated to the target: device, sizes, no stale last-lba

    @property
    def key(self) -> str:
        return f"partition:{self.disk}"

    def describe(self) -> str:
        return f"write {self.table.label} partition table ({len(self.table.partitions)} partitions) to {self.disk}"

    def script(self) -> list[str]:
        body = render_sfdisk(self.table, self.disk).rstrip("\n").splitlines()
        return [
            sh(*SFDISK_WRITE, self.disk) + " <<'SFDISK'",
            *body,
            "SFDISK",
            sh("partprobe", self.disk) + " || true",
            sh("settled", self.disk, *self._kernel_view()),
            sh("sfdisk", "--dump", self.disk),
        ]

    def _kernel_view(self) -> list[str]:
        """Each partition as the kernel must show it once the table is re-read: node, start and
        size in 512-byte sectors (a dos extended partition: any size)."""
        scale = (self.table.sector_size or 512) // 512
        return [str(x) for p in self.table.partitions
                for x in (p.node, p.start * scale, "-" if _extended(self.table, p) else p.size * scale)]

    def run(self, ctx: Context) -> None:
        current = read_table(ctx, self.disk)
        if current is not None and not table_differences(self.table, current):
            ctx.say(f"{self.disk} already holds the planned table; not rewritten")
        else:
            ctx.run([*SFDISK_WRITE, self.disk], input=render_sfdisk(self.table, self.disk))
        rescan_disk(ctx, self.disk)
        back = read_table(ctx, self.disk)
        diffs = table_differences(self.table, back) if back else ["no partition table could be read back"]
        diffs += libparted.differences(self.table, libparted.read_table(self.disk))
        if diffs:
            raise StepFailed(
                f"the partition table on {self.disk} is not the one planned",
                why="; ".join(diffs),
                fix="check the disk (sfdisk --dump) and rerun; a faulty disk may not keep what is written",
            )
        # udev and the kernel re-read the new table on their own time: partitions come and go
        settle(self.disk, self.table)


def settle(disk: str, table: PartitionTable) -> None:
    """Wait until the kernel and /dev show `table` on `disk` (the partition step's last check)."""
    try:
        wait_table_settled(disk, [(p.number, p.start, None if _extended(table, p) else p.size)
                                  for p in table.partitions],
                           sector_size=table.sector_size or 512)
    except RescueError as e:
        raise StepFailed(e.what, why=e.why, fix=e.fix) from e


def _extended(table: PartitionTable, p: Partition) -> bool:
    """A dos extended partition: the kernel shows it 1 KiB long, whatever its extent."""
    return table.label == "dos" and _norm_type(p.type) in ("5", "f", "85")


def write_table(disk: str, table: PartitionTable) -> None:
    """Write `table` to `disk` exactly as the partition step does and wait until the kernel shows it.

    For callers without a restore context (the stress driver, tests).
    """
    from rescue.devices import rescan
    from rescue.run import run

    run([*SFDISK_WRITE, disk], input=render_sfdisk(table, disk))
    diffs = libparted.differences(table, libparted.read_table(disk))
    if diffs:
        raise StepFailed(f"the partition table on {disk} is not the one planned", why="; ".join(diffs))
    rescan(disk)
    settle(disk, table)
