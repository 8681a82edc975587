"""The layered demo machines (LVM now; md and LUKS next): built inside a rescue VM, backed up by dirvish.

The host kernel has no device-mapper and no md, so the machine's storage can only
exist inside a VM. Its files need no VM, so the work is split:

    host: the demo OS, configured for the layout (fstab by UUID and /dev/mapper names,
          UUIDs chosen now), with the drill's data, one folder per filesystem
          ─► a transfer disk: one tar per filesystem and the build script
    rescue VM (its shell): the layout's table, PVs, VG, LVs and filesystems made on a
          blank disk with those UUIDs, the tars unpacked onto them, then
          `rescue capture --disk --root` of the machine as it stands
          ─► the capture folder, back on the transfer disk
    host: real dirvish backs the same folders up, two nightly images, and each image gets
          that capture in its rescue/ folder, as the post-server hook would have put it

The folders dirvish reads hold exactly the files unpacked onto the machine's disk, so
the bank is the machine's backup; the capture is the machine's own, made by the rescue
system that the restore then boots. From there the drill is the plain one: the disk is
thrown away, the backup disk boots its unattended restore onto a blank disk, and the
result boots and reports, here with the LV and PV UUIDs and no failed unit checked too.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from rescue.drill import backup_disk, layouts
from rescue.drill.cache import drill_cache
from rescue.drill.demo_disk import (
    DISK_SIZE,
    HOSTNAME,
    DemoFacts,
    FsFact,
    configure_os,
    data_facts,
    fill_data,
    fstab_text,
    grub_cfg,
)
from rescue.drill.report import Phase, Run, Say
from rescue.drill.shell_vm import ShellVM, boot_shell
from rescue.devices import attached, make_image_file
from rescue.errors import RescueError
from rescue.layout.model import Layout as Captured
from rescue.qemu import Firmware
from rescue.run import run

MiB = 1 << 20
BUILD_TIMEOUT = 1200  # unpacking ~1 GiB onto LVs under TCG on a busy host
BUILT = "DRILL-BUILT-OK"
TAR_FLAGS = ("--numeric-owner", "--xattrs", "--xattrs-include=*", "--acls")


@dataclass(frozen=True)
class Trees:
    """The machine's files on the host, in one folder (its /): what make_bank backs up.

    Has the attributes rescue.demo.dirvish.make_bank reads of a demo machine. The
    builder VM mounts the machine's filesystems at the same path and captures it
    there (--root), so each vault's tree is the captured mount point under that root,
    as on a machine backed up while it runs."""

    top: Path
    filesystems: tuple[layouts.Volume, ...]  # those with a vault
    disk: str = "the builder VM's disk"  # make_bank asks for one; the capture is the VM's (hook=False)

    @property
    def root(self) -> Path:
        return self.top

    def dir_of(self, mountpoint: str) -> Path:
        return self.top / mountpoint.lstrip("/")

    def below(self, mountpoint: str) -> tuple[str, ...]:
        """The other vaults' mount points under this one, relative to it ("home" below "/"):
        dirvish (xdev) and the tars keep their empty mount point, never their files."""
        base = mountpoint.rstrip("/") + "/"
        return tuple(v.mountpoint[len(base):] for v in self.filesystems
                     if v.mountpoint and v.mountpoint != mountpoint and v.mountpoint.startswith(base))

    def excludes(self) -> tuple[str, ...]:
        """For every vault: the files of the other filesystems mounted below its tree."""
        return tuple(sorted({f"/{sub}/*" for v in self.filesystems for sub in self.below(str(v.mountpoint))}))


# The demo machine's passphrases: fixed demo strings, never secrets of anyone, and still
# treated as secrets (key files only: no command line, log or report holds them).
PASSPHRASE = b"rescue drill demo passphrase"
NEW_PASSPHRASE = b"rescue drill new passphrase"  # --luks-new-key: the restore's one keyslot


def make_keys(lay: layouts.Layout, work: Path) -> Path:
    """work/keys (0700): per container NAME.key (the passphrase typed at boot, or the keyfile
    crypttab names), NAME-recovery.key (its second keyslot) and NAME-new.key (--luks-new-key)."""
    keys = work / "keys"
    keys.mkdir(mode=0o700, exist_ok=True)
    for layer in layouts.luks_layers(lay):
        for name, data in ((f"{layer.name}.key", os.urandom(64) if layer.keyfile else PASSPHRASE),
                           (f"{layer.name}-recovery.key", os.urandom(16).hex().encode()),
                           (f"{layer.name}-new.key", NEW_PASSPHRASE)):
            path = keys / name
            path.touch(mode=0o600)
            path.chmod(0o600)
            path.write_bytes(data)
    return keys


def lay_out_files(lay: layouts.Layout, work: Path, os_tarball: Path,
                  vols: tuple[layouts.Volume, ...]) -> tuple[Trees, str, tuple[str, ...]]:
    """The demo OS configured for the layout, with the drill's data, in work/machine.

    A machine with arrays gets its mdadm.conf, and an initramfs made again to hold it, as
    the Debian installer leaves one; with LUKS containers, its crypttab and the keyfiles it
    names (mode 0400, in the root: so in the backup). Returns it and the data's fingerprint
    and listing."""
    root = work / "machine"
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    run(["tar", "-C", str(root), *TAR_FLAGS, "-xpf", str(os_tarball)])
    for v in vols:
        if v.mountpoint:
            (root / v.mountpoint.lstrip("/")).mkdir(parents=True, exist_ok=True)
    boot = next((v for v in vols if v.mountpoint == "/boot"), None)
    rootvol = next(v for v in vols if v.mountpoint == "/")
    sub = f"/{rootvol.subvol}" if rootvol.subvol else ""
    grub = grub_cfg(root, search_uuid=(boot or rootvol).uuid, prefix="" if boot else f"{sub}/boot",
                    root_spec=rootvol.fstab_spec + (f" rootflags=subvol={rootvol.subvol}" if sub else ""),
                    tarball=os_tarball)
    in_fstab = (v for v in vols if v.mountpoint or v.content == "swap")  # not a second ESP: a hook's copy
    configure_os(root, fstab_text((v.fstab_spec, v.mountpoint, v.content, v.options) for v in in_fstab), grub,
                 tmp=root / "tmp")
    if lay.nocow:  # folders the report checks for chattr +C, each with a file made inside it
        (root / "etc" / "demo-nocow").write_text("".join(f"{f}\n" for f in lay.nocow))
        for folder in lay.nocow:
            (root / folder.lstrip("/")).mkdir(parents=True, exist_ok=True)
            (root / folder.lstrip("/") / "demo.db").write_bytes(b"\0" * (1 << 20))
    conf = layouts.mdadm_conf(lay, vols)
    if conf is not None:
        (root / "etc" / "mdadm").mkdir(exist_ok=True)
        (root / "etc" / "mdadm" / "mdadm.conf").write_text(conf)
        _new_initramfs(root)
    tab = layouts.crypttab(lay, vols)
    if tab is not None:
        (root / "etc" / "crypttab").write_text(tab)
        for layer in layouts.luks_layers(lay):
            if layer.keyfile:
                path = root / layer.keyfile.lstrip("/")
                path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                shutil.copyfile(work / "keys" / f"{layer.name}.key", path)
                path.chmod(0o400)
    fill_data(root, home=root / "home")
    data_sum, listing = data_facts(root)
    return Trees(root, tuple(v for v in vols if v.vault)), data_sum, listing


def _new_initramfs(root: Path) -> None:
    """update-initramfs in the machine's folder, with a /proc of its own and no /dev: the
    host's disks are none of its business (its hooks then find no devices, and need none)."""
    proc = root / "proc"
    run(["mount", "-t", "proc", "proc", str(proc)])
    try:
        run(["chroot", str(root), "update-initramfs", "-u", "-k", "all"], timeout=900)
    finally:
        run(["umount", str(proc)], check=False)


def build_script(lay: layouts.Layout, fw: Firmware, vols: tuple[layouts.Volume, ...],
                 devices: dict[str, str], xfer: str, where: str) -> str:
    """What the rescue VM runs: storage, files unpacked at `where`, capture, everything let go of again."""
    vgs = " ".join(layer.name for layer in lay.layers if layer.kind == "lvm")
    lines = [
        "#!/bin/sh", "# rescue drill: build the demo machine of layout " + lay.name, "set -ex",
        *layouts.build_commands(lay, fw, devices, vols, keys=f"{xfer}/keys"),
        *layouts.fill_commands(vols, devices, where, tars=xfer, nocow=lay.nocow),
        *(initramfs_commands(where, xfer) if layouts.needs_passphrase(lay) else []),
        f"rescue capture --out {xfer}/capture --disk {' --disk '.join(devices[d.name] for d in lay.disks)} "
        f"--root {where} --client localhost",
        "sync",
        f"for m in $(findmnt -rn -o TARGET | grep '^{where}' | sort -r); do umount $m; done",
    ]
    if vgs:
        lines.append(f"vgchange -q -an {vgs}")
    for layer in reversed(layouts.luks_layers(lay)):
        lines.append(f"cryptsetup close {layer.name}")
    for layer in reversed([x for x in lay.layers if x.kind == "md"]):
        lines.append(f"mdadm --stop /dev/md/{layer.name}")
    lines.append(f"echo {BUILT}")
    return "\n".join(lines) + "\n"


def initramfs_commands(where: str, xfer: str) -> list[str]:
    """The initramfs made again in the machine, on its real devices: cryptsetup's hook finds
    the container under / and puts its crypttab line in, so the boot asks for the passphrase.
    The host's copy of the machine gets the new initramfs back (dirvish backs that copy up)."""
    binds = ("proc", "sys", "dev", "run")
    return [
        *(f"mount --bind /{d} {where}/{d}" for d in binds),
        f"chroot {where} update-initramfs -u -k all",
        f"chroot {where} sh -c 'lsinitramfs /boot/initrd.img-* | grep cryptroot' || true",  # for the build log
        *(f"umount {where}/{d}" for d in reversed(binds)),
        f"mkdir -p {xfer}/initrd && cp {where}/boot/initrd.img-* {xfer}/initrd/",
    ]


def guest_disks(lay: layouts.Layout) -> dict[str, str]:
    """The machine's disks as the builder VM (and so the capture) names them: the backup
    disk boots as vda, the machine's disks follow in the layout's order."""
    return {d.name: f"/dev/vd{chr(ord('b') + i)}" for i, d in enumerate(lay.disks)}


def build_in_vm(lay: layouts.Layout, fw: Firmware, vols: tuple[layouts.Volume, ...], trees: Trees,
                work: Path, backup_img: Path, ph: Phase, logs: list[str]) -> tuple[list[Path], Path]:
    """Boot the backup disk's rescue shell with the blank machine disks and the transfer disk;
    build the machine there. Returns the machine's disk images and the capture folder (host)."""
    disks = [make_image_file(work / f"demo-{d.name}.img", DISK_SIZE) for d in lay.disks]
    devices = guest_disks(lay)
    xfer_dev = f"/dev/vd{chr(ord('b') + len(lay.disks))}"
    xfer = work / "transfer.img"
    need = _du(trees.top)
    make_image_file(xfer, need + need // 4 + 256 * MiB)
    run(["mkfs.ext4", "-q", "-F", "-L", "DRILL-XFER", str(xfer)])
    mnt = work / "mnt-transfer"
    mnt.mkdir(exist_ok=True)
    with attached(xfer) as dev:
        run(["mount", dev, str(mnt)])
        try:
            for v in trees.filesystems:
                mp = str(v.mountpoint)
                skip = [f"--exclude=./{sub}/*" for sub in trees.below(mp)]
                run(["tar", "-C", str(trees.dir_of(mp)), *TAR_FLAGS, *skip, "-cf", str(mnt / f"{v.vault}.tar"), "."])
            if layouts.luks_layers(lay):
                shutil.copytree(work / "keys", mnt / "keys")
            (mnt / "build.sh").write_text(build_script(lay, fw, vols, devices, "/run/xfer", str(trees.top)))
        finally:
            run(["umount", str(mnt)])
    ph.notes.append(f"transfer disk: {len(trees.filesystems)} tars, {need >> 20} MiB of files")
    backup_disk.choose_boot_entry(backup_img, work, "shell")
    # The machine's disks get serials of their own: the restore's new disks are other disks.
    vm = ShellVM([backup_img, *disks, xfer], work, firmware=Firmware.BIOS, name="builder", serial_prefix="demo-d")
    logs.append(str(vm.serial_log))
    with vm:
        boot_shell(vm)
        out = vm.ask(f"mkdir -p /run/xfer && mount {xfer_dev} /run/xfer && sh /run/xfer/build.sh "
                     f"> /run/xfer/build.log 2>&1; echo RC=$?; tail -n 15 /run/xfer/build.log; umount /run/xfer",
                     timeout=BUILD_TIMEOUT)
        vm.type("poweroff")
        try:
            vm.wait_exit(180)
        except RescueError:
            ph.notes.append("the builder VM did not power off within 3 min; stopped")
    ph.check("the machine was built in the rescue VM", "RC=0" in out and BUILT in out, BUILT, out[-1500:])
    capture = work / "capture"
    if capture.exists():
        shutil.rmtree(capture)
    with attached(xfer) as dev:
        run(["mount", "-o", "ro", dev, str(mnt)])
        try:
            shutil.copytree(mnt / "capture", capture, symlinks=True)
            shutil.copyfile(mnt / "build.log", work / "builder-build.log")
            for initrd in sorted((mnt / "initrd").glob("initrd.img-*")):
                shutil.copyfile(initrd, trees.top / "boot" / initrd.name)
                ph.notes.append(f"/boot/{initrd.name}: made again in the VM (cryptsetup's hook)")
        finally:
            run(["umount", str(mnt)])
    xfer.unlink()
    return disks, capture


def back_up(trees: Trees, capture: Path, backup_img: Path, work: Path, ph: Phase) -> tuple[tuple[str, ...], Captured]:
    """Two nightly dirvish runs of the machine's folders; each image gets the VM's capture."""
    from rescue.demo.dirvish import REAL_WORLD_EXCLUDES, make_bank

    with backup_disk.mounted_partition(backup_img, "backup", work / "mnt-backup") as top:
        bank = make_bank(trees, top / backup_disk.BANK, client="localhost", hook=False,  # type: ignore[arg-type]
                         confdir=work / "etc-dirvish", excludes=(*REAL_WORLD_EXCLUDES, *trees.excludes()))
        for vault, _mp in bank.vaults:
            for image in bank.images:
                d = bank.image_dir(vault, image)
                summary = (d / "summary").read_text(errors="replace") if (d / "summary").is_file() else ""
                ph.check(f"{vault}/{image}: dirvish status success", "Status: success" in summary)
                shutil.copytree(capture, d / "rescue", symlinks=True)
        ph.notes.append(f"bank {backup_disk.BANK}/: vaults " + ", ".join(f"{v} ({mp})" for v, mp in bank.vaults)
                        + "; images " + ", ".join(bank.images) + "; each with the builder VM's capture")
    text = (capture / "layout.json").read_text()
    return bank.images, Captured.loads(text, str(capture / "layout.json"))


def facts_of(lay: layouts.Layout, fw: Firmware, vols: tuple[layouts.Volume, ...], captured: Captured,
             data: tuple[str, tuple[str, ...]], ph: Phase, keys: Path | None = None) -> DemoFacts:
    """What the restored machine must show: the UUIDs chosen for its filesystems, the LVM
    identifiers its capture recorded; checked against the capture first."""
    recorded = {fs.uuid.lower() for fs in captured.filesystems if fs.uuid}
    for v in vols:
        if v.content != "swap" and not (v.subvol and v.mountpoint != "/"):  # one btrfs: one UUID
            ph.check(f"capture recorded {v.mountpoint or v.label} ({v.content} on {v.device}, UUID {v.uuid[:8]}...)",
                     v.uuid.lower() in recorded, v.uuid, ",".join(sorted(recorded)))
    swap = next(v for v in vols if v.content == "swap")
    ph.check("capture recorded the swap UUID", any((s.uuid or '').lower() == swap.uuid for s in captured.swaps))
    want_mode = "uefi" if fw is Firmware.UEFI else "bios"
    ph.check(f"capture says boot mode {want_mode}", captured.boot.mode.value == want_mode,
             want_mode, captured.boot.mode.value)
    lvs, pvs = [], []
    vgs = captured.layers.vgs if captured.layers else ()
    for layer in (x for x in lay.layers if x.kind == "lvm"):
        vg = next((g for g in vgs if g.name == layer.name), None)
        ph.check(f"capture recorded VG {layer.name}", vg is not None and vg.config is not None)
        if vg is None:
            continue
        for name, *_ in layer.volumes:
            lv = next((x for x in vg.lvs if x.name == name), None)
            ph.check(f"capture recorded LV {layer.name}/{name}", lv is not None)
            if lv is not None:
                lvs.append(f"{vg.name}/{lv.name} {lv.uuid} {vg.uuid}")
        pvs.extend(pv.uuid for pv in vg.pvs)
    arrays = []
    for layer in (x for x in lay.layers if x.kind == "md"):
        md = next((a for a in (captured.layers.md if captured.layers else ())
                   if (a.name or "").split(":")[-1] == layer.name), None)
        ph.check(f"capture recorded array {layer.name} with {len(layer.members)} members",
                 md is not None and md.raid_devices == len(layer.members) and len(md.members) == len(layer.members))
        if md is not None:
            arrays.append(f"{md.name} {md.uuid} {md.raid_devices}")
    subvols: list[str] = []
    default: str | None = None
    options: list[str] = []
    for layer in (x for x in lay.layers if x.kind == "btrfs"):
        fs = next((b for b in captured.btrfs if (b.label or "") == layer.name), None)
        ph.check(f"capture recorded btrfs {layer.name} and its subvolumes",
                 fs is not None and {n for n, *_ in layer.volumes} <= {s.path for s in fs.subvolumes})
        if fs is None:
            continue
        subvols += [s.path for s in fs.subvolumes]
        default = str(fs.default_id)
        options += [f"{mp} subvol=/{name}" for name, _c, _m, mp in layer.volumes] + ["/ compress=zstd"]
        for folder in lay.nocow:
            ph.check(f"capture recorded the nocow folder {folder}", folder.lstrip("/") in
                     {n.lstrip("/") for n in fs.nocow}, folder, " ".join(fs.nocow))
    luks = luks_facts(lay, vols, captured, ph)
    passphrase = next((x for x in layouts.luks_layers(lay) if x.keyfile is None), None)
    return DemoFacts(
        firmware=fw.value, hostname=HOSTNAME, label="gpt" if fw is Firmware.UEFI else "dos",
        disk_size=DISK_SIZE * len(lay.disks),
        filesystems=tuple(FsFact(v.mountpoint, v.content, v.uuid) for v in vols if v.mountpoint),
        swap_uuid=swap.uuid, data_sum=data[0], data_list=data[1], lvs=tuple(lvs), pvs=tuple(pvs),
        arrays=tuple(arrays), no_failed_units=True, subvolumes=tuple(subvols), btrfs_default=default,
        nocow=lay.nocow, mount_options=tuple(options), luks=luks,
        passphrase_file=str(keys / f"{passphrase.name}.key") if passphrase and keys else None,
    )


@dataclass(frozen=True)
class Built:
    """A builder VM's result kept for the next drill: the UUIDs the machine was made with and
    the capture its rescue system took. The machine's files are laid out on the host again
    with those UUIDs (they are the same files), so only the ~1-2 min VM boot is saved."""

    vols: tuple[layouts.Volume, ...]
    capture: Path
    log: Path
    folder: Path


def build_key(lay: layouts.Layout, fw: Firmware, os_tarball: Path, rescue_image: Path) -> str:
    """What the builder's result depends on: the layout, the firmware, the demo OS and the rescue
    image (its capture code and tools; a change to rescue's source makes another image)."""
    h = hashlib.sha256()
    for part in (repr(lay), fw.value, str(DISK_SIZE)):
        h.update(part.encode() + b"\0")
    for f in (os_tarball, rescue_image):
        st = f.stat()
        h.update(f"{f.name} {st.st_size} {st.st_mtime_ns}".encode() + b"\0")
    return h.hexdigest()[:16]


def _cache_folder(lay: layouts.Layout, fw: Firmware, key: str, root: Path | None) -> Path:
    return (root or drill_cache() / "machines") / f"{lay.name}-{fw.value}-{key}"


def cached_build(lay: layouts.Layout, fw: Firmware, key: str, root: Path | None = None) -> Built | None:
    """The builder's result for this key from an earlier drill, or None."""
    folder = _cache_folder(lay, fw, key, root)
    try:
        vols = tuple(layouts.Volume(**v) for v in json.loads((folder / "volumes.json").read_text()))
    except (OSError, ValueError, TypeError):
        return None
    if not (folder / "capture" / "layout.json").is_file():
        return None
    return Built(vols, folder / "capture", folder / "build.log", folder)


def keep_build(lay: layouts.Layout, fw: Firmware, key: str, vols: tuple[layouts.Volume, ...], capture: Path,
               log: Path, root: Path | None = None) -> Path:
    """Store a builder's result (whole or not at all: a folder renamed into place) and drop the
    older builds of the same layout and firmware."""
    folder = _cache_folder(lay, fw, key, root)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    shutil.copytree(capture, tmp / "capture", symlinks=True)
    if log.is_file():
        shutil.copyfile(log, tmp / "build.log")
    (tmp / "volumes.json").write_text(json.dumps([dataclasses.asdict(v) for v in vols], indent=1))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    for old in folder.parent.glob(f"{lay.name}-{fw.value}-*"):
        if old != folder:
            shutil.rmtree(old, ignore_errors=True)
    return folder


def _reroot(layout_json: Path, top: Path) -> None:
    """The capture says where the machine was mounted when it was taken (its root; each vault's
    tree is a mount point under it). A reused capture was taken in an earlier drill's folder:
    it is pointed at this drill's copy of the same files. The raw dumps beside it stay as taken."""
    data = json.loads(layout_json.read_text())
    data["root"] = str(top)
    layout_json.write_text(json.dumps(data, indent=1))


def luks_facts(lay: layouts.Layout, vols: tuple[layouts.Volume, ...], captured: Captured,
               ph: Phase) -> tuple[str, ...]:
    """Per container "NAME UUID VERSION KEYSLOTS MOUNTPOINT" (- for a PV's): the UUID chosen
    before the build, the version and keyslots the capture recorded; its header kept."""
    out = []
    found = captured.layers.luks if captured.layers else ()
    for layer in layouts.luks_layers(lay):
        uuid = layouts.luks_uuid(lay, layer.name, vols)
        c = next((x for x in found if x.uuid.lower() == uuid), None)
        version = int(layer.luks_type[-1])
        ph.check(f"capture recorded LUKS{version} {layer.name} (UUID {uuid[:8]}...) with 2 keyslots and "
                 "its header kept", c is not None and c.version == version and len(c.keyslots) == 2
                 and bool(c.header_file), f"{uuid} LUKS{version} 2 keyslots",
                 f"{c.uuid} LUKS{c.version} {len(c.keyslots)} keyslots {c.header_file}" if c else "")
        ph.check(f"capture recorded the crypttab line of {layer.name}",
                 c is not None and (c.crypttab or "").split()[:1] == [layer.name], layer.name,
                 c.crypttab or "" if c else "")
        mount = next((v.mountpoint for v in vols if v.device == f"/dev/mapper/{layer.name}" and v.mountpoint), "-")
        out.append(f"{layer.name} {uuid} {version} {len(c.keyslots) if c else 2} {mount}")
    return tuple(out)


def build_machine(lay: layouts.Layout, fw: Firmware, os_tarball: Path, work: Path, backup_img: Path,
                  run_: Run, say: Say, rescue_image: Path | None = None,
                  rebuild: bool = False) -> tuple[DemoFacts, tuple[str, ...], list[Path]]:
    """The phases that make the layered machine and its backup; returns its facts, the bank's
    images and the machine's disk images (the disaster deletes them).

    With `rescue_image`, a machine an earlier drill built from the same layout, demo OS and
    rescue image is reused (the builder VM is not booted again) unless `rebuild`. A machine
    with LUKS is always built: its headers hold keys made for that build, and its initramfs
    comes back from the builder into the files dirvish backs up."""
    cacheable = rescue_image is not None and not layouts.luks_layers(lay)
    key = build_key(lay, fw, os_tarball, rescue_image) if cacheable and rescue_image is not None else None
    reused = cached_build(lay, fw, key) if key is not None and not rebuild else None
    vols = reused.vols if reused is not None else layouts.volumes(lay, fw)
    keys = make_keys(lay, work) if layouts.luks_layers(lay) else None
    with run_.phase("demo machine's files (on the host)", say) as ph:
        trees, data_sum, listing = lay_out_files(lay, work, os_tarball, vols)
        ph.notes.append(", ".join(f"{v.mountpoint} {v.content} on {v.device}" for v in vols if v.mountpoint)
                        + ", swap on " + next(v.device for v in vols if v.content == "swap"))
        ph.check("data fingerprint recorded", len(data_sum) == 64, "sha256", data_sum)
    with run_.phase(f"demo machine built in a rescue VM ({lay.name})", say) as ph:
        if reused is not None:
            disks, capture = [], work / "capture"
            shutil.rmtree(capture, ignore_errors=True)
            shutil.copytree(reused.capture, capture, symlinks=True)
            if reused.log.is_file():
                shutil.copyfile(reused.log, work / "builder-build.log")
            _reroot(capture / "layout.json", trees.top)
            ph.notes.append(f"reused the machine an earlier drill built from the same layout, demo OS and "
                            f"rescue image ({reused.folder}); --rebuild-machine builds it again")
            ph.check("the cached build has its capture", (capture / "layout.json").is_file())
        else:
            disks, capture = build_in_vm(lay, fw, vols, trees, work, backup_img, ph, run_.logs)
    with run_.phase("backup (dirvish x2 + the machine's capture)", say) as ph:
        images, captured = back_up(trees, capture, backup_img, work, ph)
        facts = facts_of(lay, fw, vols, captured, (data_sum, listing), ph, keys)
        if reused is None and key is not None and run_.ok:  # only a build whose capture checked out
            ph.notes.append(f"the build is kept for the next drill: "
                            f"{keep_build(lay, fw, key, vols, capture, work / 'builder-build.log')}")
    shutil.rmtree(trees.top, ignore_errors=True)
    return facts, images, disks


def _du(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total

