from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from rescue.errors import LayoutError
from rescue.layout.fstab import parse_fstab
from rescue.layout.model import FstabEntry, RootMeta
from rescue.steps.base import Context, Step, at_root, confined

# Folders a Linux system needs that rsync backups usually leave out, with the usual modes.
SYSTEM_DIRS = (("/proc", 0o555), ("/sys", 0o555), ("/dev", 0o755), ("/run", 0o755),
               ("/tmp", 0o1777), ("/var/tmp", 0o1777))
# Made only when the folder two levels up exists (a Debian with apt whose backup left out
# /var/cache/apt/archives): apt expects its download folder; it sets _apt as owner itself.
APT_PARTIAL = ("/var/cache/apt/archives/partial", 0o700)
# Files of the restored system that name filesystems by UUID.
UUID_FILES = ("etc/fstab", "boot/grub/grub.cfg", "etc/initramfs-tools/conf.d/resume", "etc/crypttab")
NOT_PATHS = ("none", "swap", "")
LVM_DEVICES_FILE = "/etc/lvm/devices/system.devices"


def resolve_spec(spec: str, found: list[dict[str, str]]) -> dict[str, str] | None:
    """Which new filesystem an fstab spec names, or None."""
    key, _, value = spec.partition("=")
    value = value.strip('"')
    field = {"UUID": "UUID", "LABEL": "LABEL", "PARTUUID": "PART_ENTRY_UUID",
             "PARTLABEL": "PART_ENTRY_NAME"}.get(key.upper())
    if field is None:
        return None
    for fs in found:
        have = fs.get(field, "")
        if have and (have == value or have.lower() == value.lower()):
            return fs
    return None


@dataclass(frozen=True)
class Fixups(Step):
    """Put back what rsync never saved: root modes, /tmp 1777, /proc /sys /dev /run.

    Then check the restored fstab: every UUID=, LABEL=, PARTUUID= must name a
    filesystem now on the target. When a filesystem could not keep its UUID,
    fstab, grub.cfg and the initramfs resume file are rewritten and the report
    says so.
    """

    kind = "fixups"
    roots: tuple[RootMeta, ...]
    fstab: tuple[FstabEntry, ...] = ()  # mount points to create
    pvs: tuple[tuple[str, str], ...] = ()  # (new device, PV UUID) of the volume groups made again

    @property
    def key(self) -> str:
        return "fixups"

    def describe(self) -> str:
        return "restore filesystem root modes, create /proc /sys /dev /run, /tmp 1777"

    def script(self) -> list[str]:
        lines = []
        for r in self.roots:
            p = at_root(r.mountpoint)
            lines.append(f"chown {r.uid}:{r.gid} {p} && chmod {r.mode:04o} {p}")
        for e in self.fstab:
            if e.file.startswith("/") and e.file not in NOT_PATHS:
                lines.append(_mkdir_keeping_times(at_root(e.file)))
        for path, mode in SYSTEM_DIRS:
            lines.append(_mkdir_keeping_times(at_root(path), mode))
        path, mode = APT_PARTIAL
        lines.append(f"[ ! -d {at_root('/var/cache/apt')} ] || " + _mkdir_keeping_times(at_root(path), mode))
        lines.append('# every UUID=/LABEL=/PARTUUID= in "$ROOT"/etc/fstab must match blkid -p of the new partitions')
        return lines

    def run(self, ctx: Context) -> None:
        # What this step makes is recorded BEFORE it is made (verify expects exactly these to
        # differ from the image): a run killed half way leaves folders a rerun finds already
        # there, and must still know they were not restored from the backup.
        data = ctx.data()
        earlier = list(data.get("created", [])) if ctx.resuming else []
        planned = [p for e in self.fstab if e.file.startswith("/") and e.file not in NOT_PATHS and e.file != "/"
                   for p in _missing(ctx.root, e.file)]
        system_dirs = list(SYSTEM_DIRS)
        if confined(ctx.root, "/var/cache/apt").is_dir():
            system_dirs.append(APT_PARTIAL)
        planned += [p for path, _ in system_dirs for p in _missing(ctx.root, path)]
        data["created"] = list(dict.fromkeys(earlier + planned))
        # A new entry changes its folder's mtime, and verify compares times: the times of the
        # folders that get one are put back as the backup has them. Recorded before any change
        # (an earlier, interrupted run's record wins: by now it may have touched them).
        times = dict(data.get("parent_times", {})) if ctx.resuming else {}
        for p in planned:
            parent = confined(ctx.root, os.path.dirname(p))
            if parent.is_dir():
                st = os.stat(parent)
                times.setdefault("/" + str(parent.relative_to(ctx.root)).lstrip("."), [st.st_atime_ns, st.st_mtime_ns])
        data["parent_times"] = times
        ctx.save()
        created: list[str] = []
        for r in self.roots:
            p = ctx.path(r.mountpoint)
            os.chown(p, r.uid, r.gid, follow_symlinks=False)
            os.chmod(p, r.mode)
        for e in self.fstab:
            if not e.file.startswith("/") or e.file in NOT_PATHS or e.file == "/":
                continue
            confined(ctx.root, e.file, create=True, made=created)
        for path, mode in system_dirs:
            p = confined(ctx.root, path)
            if not p.exists() and not p.is_symlink():
                confined(ctx.root, os.path.dirname(path), create=True, made=created)
                os.mkdir(p, mode)
                os.chmod(p, mode)
                os.chown(p, 0, 0)
                created.append(path)
        data["created"] = list(dict.fromkeys(data["created"] + created))
        ctx.save()
        for rel, (atime_ns, mtime_ns) in times.items():
            os.utime(confined(ctx.root, rel), ns=(atime_ns, mtime_ns), follow_symlinks=False)
        if created:
            ctx.say("created " + ", ".join(created))
        self._check_fstab(ctx)
        self._lvm_devices_file(ctx)

    def _lvm_devices_file(self, ctx: Context) -> None:
        """An LVM devices file names each PV by the old disk's WWID or serial: LVM at boot would
        ignore the new disk's PVs and find no root. Each line of a PV made again now names it by
        device name (idtype devname; LVM finds it by its PVID if that name changes at boot)."""
        path = confined(ctx.root, LVM_DEVICES_FILE)
        if not self.pvs or not path.is_file() or path.is_symlink():
            return
        ours = {uuid.replace("-", ""): dev for dev, uuid in self.pvs}
        lines, changed = [], []
        for line in path.read_text(errors="surrogateescape").splitlines():
            fields = dict(f.split("=", 1) for f in line.split() if "=" in f) if not line.startswith("#") else {}
            dev = ours.get(fields.get("PVID", ""))
            # a PV in a LUKS container is named by the container's LUKS UUID and crypttab name
            # (CRYPT-LUKS2-UUID-NAME): both are restored as they were, so the line still fits
            if dev is None or (fields.get("IDTYPE") == "dm_uuid" and fields.get("IDNAME", "").startswith("CRYPT-")):
                lines.append(line)
                continue
            lines.append(f"IDTYPE=devname IDNAME={dev} DEVNAME={dev} PVID={fields['PVID']}")
            changed.append(f"{fields.get('IDTYPE', '?')}={fields.get('IDNAME', '?')} -> {dev}")
        if not changed:
            return
        path.write_text("\n".join(lines) + "\n", errors="surrogateescape")
        rewritten = ctx.data().setdefault("rewritten", [])
        if LVM_DEVICES_FILE not in rewritten:
            rewritten.append(LVM_DEVICES_FILE)  # verify expects it to differ from the image
        ctx.save()
        ctx.note(f"rewrote {LVM_DEVICES_FILE}: its PVs named the old disk ({'; '.join(changed)}); "
                 "after the first boot, `vgimportdevices -a` names them by the new disk's id again")

    def _check_fstab(self, ctx: Context) -> None:
        from rescue.steps.mkfs import probe
        from rescue.steps.wipe import partitions_of

        changes = ctx.uuid_changes()
        if not ctx.resuming:  # a killed run may have rewritten them already: keep its record
            ctx.data()["rewritten"] = []
        for ch in changes:
            for rel in UUID_FILES:
                _rewrite(ctx, confined(ctx.root, "/" + rel), ch["old"], ch["new"])
        fstab = confined(ctx.root, "/etc/fstab")
        if not fstab.is_file():
            ctx.note("the restored system has no /etc/fstab: nothing names its filesystems")
            return
        found = [probe(ctx, p) for disk in ctx.targets for p in partitions_of(disk)]
        bad, by_name = [], []
        try:
            entries = parse_fstab(fstab.read_bytes(), str(fstab))
        except LayoutError as e:
            ctx.note(f"fstab check skipped: {e} (edit etc/fstab before booting)")
            return
        for spec, file, vfstype in ((e.spec, e.file, e.vfstype) for e in entries):
            if spec.split("=", 1)[0].upper() in ("UUID", "LABEL", "PARTUUID", "PARTLABEL"):
                if resolve_spec(spec, found) is None:
                    bad.append(f"{spec} ({file})")
            elif spec.startswith("/dev/") and vfstype not in ("tmpfs", "proc", "sysfs", "devpts"):
                if not stable_device_name(spec):
                    by_name.append(f"{spec} ({file})")
                elif not os.path.exists(spec):  # the restore made every LV and array it names
                    bad.append(f"{spec} ({file})")
        data = ctx.data()
        data["fstab_unresolved"] = bad
        ctx.save()
        if bad:
            ctx.note("fstab names filesystems not on the restored disk(s): " + ", ".join(bad)
                     + " (fine for other disks; otherwise edit etc/fstab before booting)")
        else:
            ctx.note("fstab check: every UUID=/LABEL=/PARTUUID= entry names a filesystem on the restored disk")
        if by_name:
            ctx.note("fstab names devices by kernel name, which may differ on new hardware: " + ", ".join(by_name))


STABLE_PREFIXES = ("/dev/mapper/", "/dev/md/", "/dev/disk/by-")


def stable_device_name(spec: str) -> bool:
    """A device name that does not depend on the order disks are found in: an LV's
    /dev/mapper/VG-LV or /dev/VG/LV, an array's /dev/md/NAME, a /dev/disk/by-* link.
    /dev/sda1, /dev/vdb2 or /dev/md0 are not: new hardware may number them otherwise."""
    if spec.startswith(STABLE_PREFIXES):
        return True
    parts = spec.split("/")
    # /dev/VG/LV: a folder of links into device-mapper (while the restore has the VG active)
    return len(parts) == 4 and os.path.realpath(spec).startswith("/dev/dm-")


def _mkdir_keeping_times(p: str, mode: int | None = None) -> str:
    """Shell: make folder p if missing, and put back the times of the folder it was made in.

    Verify compares folder times with the backup; a new entry would change them.
    """
    chmod = f" && chmod {mode:04o} {p}" if mode is not None else ""
    return (f"[ -e {p} ] || {{ a={p}; while [ -n \"$a\" ] && [ ! -e \"$a\" ]; do a=${{a%/*}}; done; "
            f"touch -r \"$a\" \"$WORK\"/.times; mkdir -p {p}{chmod}; "
            f"touch -r \"$WORK\"/.times \"$a\"; rm -f \"$WORK\"/.times; }}")


def _missing(root: Path, path: str) -> list[str]:
    """The folders of `path` (and its parents) not yet in the restored system, outermost first."""
    out = []
    parts = [p for p in path.split("/") if p and p not in (".", "..")]
    for i in range(1, len(parts) + 1):
        sub = "/" + "/".join(parts[:i])
        real = confined(root, sub)
        if not real.exists() and not real.is_symlink():
            out.append(sub)
    return out


def _rewrite(ctx: Context, path: Path, old: str, new: str | None) -> None:
    if not new or not path.is_file() or path.is_symlink():
        return
    text = path.read_bytes()
    if old.encode() not in text:
        return
    path.write_bytes(text.replace(old.encode(), new.encode()))
    rel = "/" + str(path.relative_to(ctx.root))
    rewritten = ctx.data().setdefault("rewritten", [])
    if rel not in rewritten:
        rewritten.append(rel)  # verify expects these to differ from the image
    ctx.note(f"rewrote {rel}: UUID {old} -> {new}")
