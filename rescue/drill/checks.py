"""Read what the restored demo machine printed on its serial console.

The machine's report service prints DEMO-* lines once it has reached
multi-user (see files/demo-report); they are compared here with the facts
the drill recorded before the original disk was thrown away.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from rescue.drill.demo_disk import DemoFacts
from rescue.drill.report import Phase
from rescue.events import STEP_DONE
from rescue.qemu import plain

_LINE = re.compile(r"(DEMO-[A-Z-]+)(?: (.*))?$")
_STEP_DONE = re.compile(rf"^\s*{STEP_DONE} (\S.*?)\s*$", re.M)

# The firmware found nothing to boot: OVMF falls back to its shell (SeaBIOS
# prints only on the screen, then resets, and qemu -no-reboot exits).
NOT_BOOTABLE = (
    "UEFI Interactive Shell",
    "No bootable option or device was found",
)

# Lines that mean the machine will never reach multi-user: fail fast on them.
BOOT_FAILURES = (
    "Kernel panic",
    "You are in emergency mode",
    "Give root password for maintenance",
    "ALERT!  UUID=",  # initramfs: root device not found
    "grub rescue>",
    *NOT_BOOTABLE,
)


@dataclass
class Console:
    """The DEMO-* lines of one boot, parsed."""

    up: str | None = None
    tmp_mode: str | None = None
    swaps: list[str] = field(default_factory=list)
    filesystems: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # mp -> uuid, fstype, mode
    data: str | None = None
    files: list[str] = field(default_factory=list)
    lvs: list[str] = field(default_factory=list)  # "VG/LV LV-UUID VG-UUID"
    pvs: list[str] = field(default_factory=list)
    arrays: dict[str, tuple[str, str, int, int]] = field(default_factory=dict)  # name -> uuid, state, degraded, disks
    failed_units: list[str] | None = None  # None: the machine did not say
    subvolumes: list[str] = field(default_factory=list)
    btrfs_default: str | None = None
    options: dict[str, str] = field(default_factory=dict)  # btrfs mount point -> options in use
    nocow: dict[str, str] = field(default_factory=dict)  # folder -> yes/no
    luks: dict[str, tuple[str, str, str, str]] = field(default_factory=dict)  # name -> uuid, version, slots, mount
    done: bool = False


def parse_console(text: str) -> Console:
    c = Console()
    for raw in text.replace("\r", "").splitlines():
        start = raw.find("DEMO-")
        if start < 0:
            continue
        m = _LINE.match(raw[start:].rstrip())
        if not m:
            continue
        key, rest = m.group(1), m.group(2) or ""
        if key == "DEMO-UP":
            c.up = rest
        elif key == "DEMO-TMP":
            pass
        elif key == "DEMO-SWAP":
            parts = rest.split()
            if parts and parts[-1] == "active":
                c.swaps.append(parts[0] if len(parts) > 1 else "")
        elif key == "DEMO-FS":
            parts = rest.split()
            if len(parts) >= 3:
                c.filesystems[parts[0]] = (parts[1], parts[2], parts[3] if len(parts) > 3 else "")
        elif key == "DEMO-DATA":
            c.data = rest.strip()
        elif key == "DEMO-FILE":
            c.files.append(rest)
        elif key == "DEMO-LV":
            c.lvs.append(" ".join(rest.split()))
        elif key == "DEMO-PV":
            c.pvs.append(rest.strip())
        elif key == "DEMO-SUBVOL":
            c.subvolumes.append(rest.strip())
        elif key == "DEMO-SUBVOL-DEFAULT":
            c.btrfs_default = rest.strip()
        elif key == "DEMO-OPTS":
            parts = rest.split()
            if len(parts) == 2:
                c.options[parts[0]] = parts[1]
        elif key == "DEMO-NOCOW":
            parts = rest.split()
            if len(parts) == 2:
                c.nocow[parts[0]] = parts[1]
        elif key == "DEMO-LUKS":
            parts = rest.split()
            if len(parts) == 5:
                c.luks[parts[0]] = (parts[1], parts[2], parts[3], parts[4])
        elif key == "DEMO-MD":
            parts = rest.split()
            if len(parts) == 5 and parts[3].isdigit() and parts[4].isdigit():
                c.arrays[parts[0]] = (parts[1], parts[2], int(parts[3]), int(parts[4]))
        elif key == "DEMO-FAILED":
            c.failed_units = rest.split()[1:]
        elif key == "DEMO-DONE":
            c.done = True
    m = re.search(r"DEMO-TMP-MODE (\d+)", text)
    if m:
        c.tmp_mode = m.group(1)
    return c


def steps_done(console: str) -> set[str]:
    """Keys of the steps a restore said it finished (its RESCUE-STEP-DONE lines)."""
    return set(_STEP_DONE.findall(plain(console)))


def check_restored(text: str, facts: DemoFacts, phase: Phase, data: bool = True) -> None:
    """Every fact the drill promises, as checks on `phase` (data=False: no data fingerprint)."""
    c = parse_console(text)
    phase.check("reached multi-user (report service ran)", c.up is not None, "DEMO-UP", c.up or "")
    phase.check("hostname", (c.up or "").strip() == facts.hostname, facts.hostname, c.up or "")
    phase.check("/tmp mode 1777", c.tmp_mode == "1777", "1777", c.tmp_mode or "")
    phase.check("swap active with its UUID", facts.swap_uuid in c.swaps, facts.swap_uuid, " ".join(c.swaps))
    for fs in facts.filesystems:
        got = c.filesystems.get(fs.mountpoint)
        phase.check(
            f"{fs.mountpoint} mounted, {fs.fstype}, UUID as captured",
            got is not None and got[0].lower() == fs.uuid.lower() and got[1] == fs.fstype,
            f"{fs.uuid} {fs.fstype}", " ".join(got[:2]) if got else "",
        )
    for lv in facts.lvs:
        name = lv.split()[0]
        phase.check(f"LV {name} active, its UUID and its VG's as captured", _same_ids(lv) in map(_same_ids, c.lvs),
                    lv, next((x for x in c.lvs if x.split()[0] == name), ""))
    for pv in facts.pvs:
        phase.check("PV UUID as captured", _same_ids(pv) in map(_same_ids, c.pvs), pv, " ".join(c.pvs))
    for array in facts.arrays:
        name, uuid, disks = array.split()
        got = c.arrays.get(name)
        phase.check(f"array {name} assembled, its UUID as captured", got is not None and
                    _same_ids(got[0]) == _same_ids(uuid), uuid, got[0] if got else "")
        if facts.arrays_degraded:
            want = f"{disks} slots, {facts.arrays_degraded} missing (the new disks are fewer)"
            ok = got is not None and got[3] == int(disks) and got[2] == facts.arrays_degraded
        else:
            want = f"{disks} slots, none missing, clean or resyncing"
            ok = (got is not None and got[3] == int(disks) and got[2] == 0
                  and got[1] in ("clean", "active", "active-idle", "write-pending"))
        phase.check(f"array {name}: {want}", ok, want,
                    f"{got[3]} slots, {got[2]} missing, {got[1]}" if got else "not reported")
    for item in facts.luks:
        name, uuid, version, slots, mount = item.split()
        got = c.luks.get(name)
        phase.check(f"LUKS {name} open, its UUID as captured", got is not None and got[0].lower() == uuid.lower(),
                    uuid, got[0] if got else "not open")
        phase.check(f"LUKS {name}: LUKS{version}, {slots} keyslot(s)", got is not None and got[1:3] == (version, slots),
                    f"LUKS{version} {slots}", f"LUKS{got[1]} {got[2]}" if got else "")
        if mount != "-":
            phase.check(f"{mount} mounted from /dev/mapper/{name}", got is not None and got[3] == mount,
                        mount, got[3] if got else "")
    for sub in facts.subvolumes:
        phase.check(f"btrfs subvolume {sub} as captured", sub in c.subvolumes, sub, " ".join(c.subvolumes))
    if facts.btrfs_default is not None:
        phase.check("btrfs default subvolume as captured", c.btrfs_default == facts.btrfs_default,
                    facts.btrfs_default, c.btrfs_default or "")
    for item in facts.mount_options:
        where, option = item.split()
        got = c.options.get(where, "")
        # the kernel shows compress=zstd as compress=zstd:3 (its level)
        shown = any(o == option or o.startswith(option + ":") for o in got.split(","))
        phase.check(f"{where} mounted with {option}", shown, option, got)
    for folder in facts.nocow:
        phase.check(f"{folder} keeps chattr +C (nocow)", c.nocow.get(folder) == "yes", "yes",
                    c.nocow.get(folder, "not reported"))
    if facts.no_failed_units:
        phase.check("no failed systemd unit", c.failed_units == [], "none",
                    "not reported" if c.failed_units is None else " ".join(c.failed_units))
    if data:
        _check_data(c, facts, phase)
    phase.check("report complete, powered off", c.done, "DEMO-DONE", "")


def _same_ids(line: str) -> str:
    """LVM prints its UUIDs with dashes, mdadm with colons, in one case or another:
    compare them without either."""
    return line.replace("-", "").replace(":", "").lower()


def _check_data(c: Console, facts: DemoFacts, phase: Phase) -> None:
    same = c.data == facts.data_sum
    phase.check("data (names, modes, owners, times, links, contents)", same, facts.data_sum, c.data or "")
    if not same and c.files:
        # as the console shows them: undecodable bytes replaced, no trailing blanks
        want = [f.encode("utf-8", "surrogateescape").decode("utf-8", "replace").rstrip() for f in facts.data_list]
        got = [f.rstrip() for f in c.files]
        missing = [f for f in want if f not in set(got)]
        extra = [f for f in got if f not in set(want)]
        for f in missing[:5]:
            phase.notes.append(f"backed up, not restored as such: {f}")
        for f in extra[:5]:
            phase.notes.append(f"restored as: {f}")


_STEP_START = re.compile(r"^\[(\d+)/\d+\] (?!done already:)(.+?)\s*$")
_STEP_PROGRESS = re.compile(r"^\s+([\d.]+ (?:B|KiB|MiB|GiB|TiB)) of ([\d.]+ (?:B|KiB|MiB|GiB|TiB)) \(")
_STEP_END = re.compile(r"^\s+done in ([\d.]+)s\s*$")
_UNIT = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}


@dataclass(frozen=True)
class StepTime:
    """One restore step as the rescue VM's console showed it: its time, and for a copy its bytes."""

    what: str
    seconds: float
    copied: int = 0  # bytes, from the step's last progress line (copies only)


def _bytes(text: str) -> int:
    number, unit = text.split()
    return int(float(number) * _UNIT[unit])


def step_times(console: str) -> list[StepTime]:
    """The finished steps of the restore printed on `console` ([N/M] what ... done in S s)."""
    steps: list[StepTime] = []
    what: str | None = None
    copied = 0
    for line in plain(console).splitlines():
        if m := _STEP_START.match(line):
            what, copied = m.group(2), 0
        elif what and (m := _STEP_PROGRESS.match(line)):
            copied = _bytes(m.group(1))
        elif what and (m := _STEP_END.match(line)):
            steps.append(StepTime(what, float(m.group(1)), copied if what.startswith("copy ") else 0))
            what = None
    return steps


_COMPARED = re.compile(r"RESCUE-RESTORE: COMPARE tar ([\d.]+) MiB in ([\d.]+) s[^(\n]*(?:\(best of \d+: ([\d., ]+) s\))?")


def compared(console: str) -> tuple[float, float, tuple[float, ...]] | None:
    """(MiB, best seconds, each run's seconds) of the plain tar pipe the unattended restore
    timed after the restore (rescue.unattended.compare_tar, the drill's --compare-tar), if it did."""
    m = _COMPARED.search(plain(console))
    if not m:
        return None
    runs = tuple(float(t) for t in m.group(3).split(", ")) if m.group(3) else (float(m.group(2)),)
    return float(m.group(1)), float(m.group(2)), runs


def timing_notes(steps: list[StepTime], tar: tuple[float, float, tuple[float, ...]] | None = None) -> list[str]:
    """What the restore's time went to, for the drill's report: the copy's throughput and what
    verify cost beside it (rescue's goal: at most half of the copy); with a tar pipe timed in
    the same boot, the copy's time against the tar pipe's for the same bytes."""
    if not steps:
        return []
    kinds = {"copy": 0.0, "verify": 0.0, "bootloader": 0.0, "mkfs": 0.0, "other": 0.0}
    copied = 0
    for s in steps:
        kind = ("copy" if s.what.startswith("copy ") else "verify" if s.what.startswith("verify ")
                else "bootloader" if s.what.startswith("install ") else "mkfs" if s.what.startswith("make ")
                else "other")
        kinds[kind] += s.seconds
        copied += s.copied
    mib = copied / (1 << 20)
    notes = [f"restore steps: {', '.join(f'{k} {v:.1f} s' for k, v in kinds.items() if v)}"]
    if kinds["copy"] > 0:
        notes.append(f"copy: {mib:.1f} MiB in {kinds['copy']:.1f} s = {mib / kinds['copy']:.1f} MiB/s")
        if kinds["verify"]:
            ratio = kinds["verify"] / kinds["copy"]
            notes.append(f"verify: {kinds['verify']:.1f} s = {ratio:.2f} of the copy's time "
                         f"({'within' if ratio <= 0.5 else 'OVER'} rescue's goal of at most half)")
        if tar and tar[1] > 0 and mib > 0:
            tar_rate = tar[0] / tar[1]
            runs = f" (best of {len(tar[2])}: {', '.join(f'{t:.1f}' for t in tar[2])} s)" if len(tar[2]) > 1 else ""
            notes.append(f"tar pipe, same images, same boot: {tar[0]:.1f} MiB in {tar[1]:.1f} s{runs} = {tar_rate:.1f} MiB/s; "
                         f"restore's copy / tar = {(kinds['copy'] / mib) / (tar[1] / tar[0]):.2f} (time per MiB)")
    return notes
