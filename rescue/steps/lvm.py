"""LVM volume groups made again with every identifier: PV UUIDs, the VG's name and UUID, each
LV's name, UUID, size and place, from the `vgcfgbackup` text the capture kept.

The failing old disk may still be attached and carry the same PV and VG UUIDs. Every LVM
command here is given `--devices` (lvm2 2.03.12 and later): it sees the new devices named
there and nothing else, neither the old disks nor the machine's devices file, so it can
neither read nor change them. (A `filter` in --config would do the same for LVM, but
`--devices` also keeps a devices file out of it, and reads plainly in the log.)
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rescue.errors import UnsafeTarget
from rescue.steps.base import Context, Step, let_go, sh


def dm_name(vg: str, lv: str) -> str:
    """The device-mapper name of an LV: dashes doubled, joined by one ("vg-data", "root")."""
    return f"{vg.replace('-', '--')}-{lv.replace('-', '--')}"


def _devices(devices: tuple[str, ...]) -> str:
    return "--devices=" + ",".join(devices)


@dataclass(frozen=True)
class ThinPool:
    """A thin pool made by lvcreate (vgcfgrestore cannot make its metadata). Bytes."""

    name: str
    size: int  # data
    metadata_size: int | None = None
    chunk_size: int | None = None


@dataclass(frozen=True)
class ThinVolume:
    name: str
    pool: str
    size: int  # virtual bytes


@dataclass(frozen=True)
class MakeVolumeGroup(Step):
    """pvcreate --uuid --restorefile on each new PV, vgcfgrestore, activate: that VG only."""

    kind = "lvm-vg"
    # run again on a resume: after a reboot its LVs must be active before anything uses them
    persistent = False
    name: str
    uuid: str
    pvs: tuple[tuple[str, str], ...]  # (new device, the PV's captured UUID)
    config: str  # the captured `vgcfgbackup` text
    lvs: tuple[str, ...] = ()  # LV names, to check before activation that no other VG holds their names
    pools: tuple[ThinPool, ...] = ()  # made after vgcfgrestore (its text leaves them out)
    thin: tuple[ThinVolume, ...] = ()

    @property
    def key(self) -> str:
        return f"lvm-vg:{self.uuid}"

    @property
    def devices(self) -> tuple[str, ...]:
        return tuple(dev for dev, _ in self.pvs)

    def describe(self) -> str:
        pvs = ", ".join(dev for dev, _ in self.pvs)
        return f"make LVM volume group {self.name} (UUID {self.uuid}) on {pvs} and activate it"

    def script(self) -> list[str]:
        conf = f"/tmp/rescue-vg-{self.name}.txt"
        devs = _devices(self.devices)
        lines = [f"cat > {sh(conf)} <<'RESCUE_VG_EOF'", *self.config.rstrip("\n").splitlines(), "RESCUE_VG_EOF"]
        for dev, uuid in self.pvs:
            lines.append(f"pvs {sh(devs)} --noheadings -o pv_uuid {sh(dev)} 2>/dev/null | grep -q {sh(uuid)} || "
                         f"{{ wipefs -a -q {sh(dev)} && {sh(*self.pvcreate_argv(dev, uuid, conf))}; }}")
        lines.append(f"vgs {sh(devs)} --noheadings -o vg_uuid {sh(self.name)} 2>/dev/null | grep -q {sh(self.uuid)} || "
                     f"{sh(*self.vgcfgrestore_argv(conf))}")
        lines.append(sh(*self.activate_argv()))
        for argv in self.thin_argvs():
            lv = argv[argv.index("-n") + 1]
            lines.append(f"[ -e /dev/mapper/{sh(dm_name(self.name, lv))} ] || {sh(*argv)}")
        return lines

    def thin_argvs(self) -> list[list[str]]:
        """lvcreate of each thin pool (data, metadata and chunk sizes as captured), then its thin LVs."""
        devs = _devices(self.devices)
        out = []
        for p in self.pools:
            argv = ["lvcreate", devs, "-y", "--type", "thin-pool", "-L", f"{p.size}b"]
            if p.metadata_size:
                argv += ["--poolmetadatasize", f"{p.metadata_size}b"]
            if p.chunk_size:
                argv += ["--chunksize", f"{p.chunk_size // 1024}k"]
            out.append([*argv, "-n", p.name, self.name])
        for t in self.thin:
            out.append(["lvcreate", devs, "-y", "--type", "thin", "-V", f"{t.size}b", "--thinpool", t.pool,
                        "-n", t.name, self.name])
        return out

    def pvcreate_argv(self, dev: str, uuid: str, conf: str) -> list[str]:
        return ["pvcreate", _devices(self.devices), "-ff", "-y", "--uuid", uuid, "--restorefile", conf, dev]

    def vgcfgrestore_argv(self, conf: str) -> list[str]:
        """--yes: vgcfgrestore counts every device-mapper name that splits as VG-NAME as an active
        LV of the VG and asks (a LUKS mapping demo-crypt under VG demo stopped a restore here). LVs
        of this VG mapped from other devices are refused before (_refuse_foreign_mappings)."""
        return ["vgcfgrestore", _devices(self.devices), "--yes", "-f", conf, self.name]

    def activate_argv(self) -> list[str]:
        return ["vgchange", _devices(self.devices), "-ay", self.name]

    def run(self, ctx: Context) -> None:
        # noted first: a run killed from here on leaves a VG active that the next run deactivates
        ctx.data()["vg"] = {"name": self.name, "uuid": self.uuid, "devices": list(self.devices)}
        ctx.save()
        self._refuse_foreign_mappings(ctx)
        with tempfile.TemporaryDirectory(prefix="rescue-vg-") as tmp:
            conf = str(Path(tmp) / f"{self.name}.txt")
            Path(conf).write_text(self.config)
            for dev, uuid in self.pvs:
                found = ctx.run(["pvs", _devices(self.devices), "--noheadings", "-o", "pv_uuid", dev], check=False)
                if found.returncode == 0 and found.stdout.strip() == uuid:
                    continue
                ctx.run(["wipefs", "-a", "-q", dev])
                ctx.run(self.pvcreate_argv(dev, uuid, conf))
            found = ctx.run(["vgs", _devices(self.devices), "--noheadings", "-o", "vg_uuid", self.name], check=False)
            if not (found.returncode == 0 and found.stdout.strip() == self.uuid):
                ctx.run(self.vgcfgrestore_argv(conf))
        ctx.run(self.activate_argv())
        for argv in self.thin_argvs():  # made once: a resumed run finds them (activated above)
            lv = argv[argv.index("-n") + 1]
            found = ctx.run(["lvs", _devices(self.devices), "--noheadings", "-o", "lv_name", f"{self.name}/{lv}"],
                            check=False)
            if found.returncode != 0 or found.stdout.strip() != lv:
                ctx.run(argv)
        ctx.run(["udevadm", "settle", "--timeout=30"], check=False)

    def _refuse_foreign_mappings(self, ctx: Context) -> None:
        """An LV of this name already mapped from other devices is the old VG (activated by
        hand from the old disk): activating ours would clash with it, writing could hit it."""
        ours = {os.path.basename(os.path.realpath(d)) for d in self.devices}
        for lv in self.lvs:
            name = dm_name(self.name, lv)
            deps = ctx.run(["dmsetup", "deps", "-o", "devname", name], check=False)
            if deps.returncode != 0:
                continue  # not mapped
            under = {part.strip("()") for part in deps.stdout.split() if part.startswith("(")}
            if under and not under <= ours:
                raise UnsafeTarget(
                    f"/dev/mapper/{name} is already active, on {', '.join(sorted(under))}",
                    why=f"those are not the new devices of volume group {self.name}: it is likely the old "
                        "volume group, and nothing may be written onto the old disks",
                    fix=f"deactivate it (vgchange -an {self.name}, after unmounting its LVs) or detach the old "
                        "disk, then rerun the same command",
                )


@dataclass(frozen=True)
class DeactivateVolumeGroups(Step):
    """Deactivate the volume groups the restore made, once their LVs are unmounted, so the
    disk can be pulled (or the machine rebooted) cleanly."""

    kind = "lvm-off"
    persistent = False  # a rerun deactivates them again
    groups: tuple[tuple[str, tuple[str, ...]], ...]  # (VG name, its new devices)

    @property
    def key(self) -> str:
        return "lvm-off:" + ",".join(name for name, _ in self.groups)

    def describe(self) -> str:
        return "deactivate LVM volume group " + ", ".join(name for name, _ in self.groups)

    def script(self) -> list[str]:
        return [f"vgchange {sh(_devices(devs))} -an {sh(name)}" for name, devs in self.groups]

    def run(self, ctx: Context) -> None:
        for name, devs in self.groups:
            let_go(ctx, ["vgchange", _devices(devs), "-an", name])


def deactivate_left_group(run: Callable[..., Any], name: str, uuid: str, devices: list[str]) -> bool:
    """Deactivate a VG an earlier, killed run made (its journal names it), seen on its own
    devices only and only if it has that UUID. Returns whether it was deactivated."""
    devs = _devices(tuple(devices))
    found = run(["vgs", devs, "--noheadings", "-o", "vg_uuid", name], check=False)
    if found.returncode != 0 or found.stdout.strip() != uuid:
        return False
    return run(["vgchange", devs, "-an", name], check=False).returncode == 0
