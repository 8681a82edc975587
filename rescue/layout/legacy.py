"""Layouts of old banks: the files of the original hand-written dirvish hook.

That hook (dirvish-post, 2003) saved, per image, `df` output as `df.N` in
the image folder, and `sfdisk -d` of the client's disk as `sfdisk.N` two
levels up (bank/<client>/sfdisk.N with the vaults beside it). No filesystem
types, UUIDs or labels were recorded; the types are taken from the etc/fstab
found in the same night's image of the vault holding /, when there is one.

`load_layout(image_dir)` is what the rest of rescue calls: it prefers
rescue/layout.json (written by `rescue capture`) and falls back to these
files, so old banks stay restorable.
"""

from __future__ import annotations

import dataclasses

import datetime as dt
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rescue.devices import disk_of
from rescue.errors import LayoutError
from rescue.layout.df import parse_df
from rescue.layout.fstab import parse_fstab
from rescue.layout.model import Boot, Disk, Filesystem, FstabEntry, Layout, Swap
from rescue.layout.sfdisk import parse_sfdisk

if TYPE_CHECKING:
    from rescue.backups.model import Image

DOS_SWAP = "82"
GPT_SWAP = "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F"


def load_layout(image_dir: Path | str) -> Layout | None:
    """The captured layout of an image: rescue/layout.json, else the legacy files, else None."""
    image_dir = Path(image_dir)
    current = image_dir / "rescue" / "layout.json"
    if current.is_file():
        return _with_vg_configs(Layout.loads(_read(current).decode("utf-8", "surrogateescape"), str(current)),
                                current.parent)
    return load_legacy(image_dir)


def _with_vg_configs(layout: Layout, folder: Path) -> Layout:
    """A layout written before it carried each VG's vgcfgbackup text gets it from the file
    kept beside it (the restore makes the VG again from that text); each kept LUKS header is
    named by its full path (the restore writes it back from there)."""
    layout = _with_luks_headers(layout, folder)
    if not layout.layers or not any(vg.config is None and vg.config_file for vg in layout.layers.vgs):
        return layout
    vgs = []
    for vg in layout.layers.vgs:
        path = folder / vg.config_file if vg.config_file and vg.config is None else None
        if path is not None and path.is_file() and "/" not in vg.config_file:
            vg = dataclasses.replace(vg, config=_read(path).decode("utf-8", "surrogateescape"))
        vgs.append(vg)
    return dataclasses.replace(layout, layers=dataclasses.replace(layout.layers, vgs=tuple(vgs)))


def _with_luks_headers(layout: Layout, folder: Path) -> Layout:
    """header_file names a file beside layout.json: the plan needs where it is on this backup disk."""
    if not layout.layers or not any(c.header_file and "/" not in c.header_file for c in layout.layers.luks):
        return layout
    luks = tuple(dataclasses.replace(c, header_file=str(folder.resolve() / c.header_file))
                 if c.header_file and "/" not in c.header_file and (folder / c.header_file).is_file() else c
                 for c in layout.layers.luks)
    return dataclasses.replace(layout, layers=dataclasses.replace(layout.layers, luks=luks))


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise LayoutError(str(path), None, f"cannot be read: {e.strerror}") from None


def _summary(image_dir: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    path = image_dir / "summary"
    if path.is_file():
        for line in _read(path).decode("utf-8", "replace").splitlines():
            m = re.match(r"([A-Za-z-]+): (.*)", line)
            if m and m.group(1) not in out:
                out[m.group(1)] = m.group(2).strip()
    return out


def _pick(files: list[Path], suffix: str | None) -> Path | None:
    if not files:
        return None
    if suffix is not None:
        for f in files:
            if f.name.split(".", 1)[1] == suffix:
                return f
    return max(files, key=lambda f: (f.stat().st_mtime, f.name))


def _root_fstab(image_dir: Path) -> tuple[FstabEntry, ...]:
    """etc/fstab from the same night's image of whichever vault holds / (same bank)."""
    candidates = [image_dir / "tree" / "etc" / "fstab"]
    bank = image_dir.parent.parent
    if bank.is_dir():
        for vault in sorted(bank.iterdir()):
            candidates.append(vault / image_dir.name / "tree" / "etc" / "fstab")
    for path in candidates:
        if path.is_file():
            try:
                return parse_fstab(_read(path), str(path))
            except LayoutError:
                continue
    return ()


def load_legacy(image_dir: Path | str) -> Layout | None:
    """A Layout (source="legacy") from df.N and ../../sfdisk.N; None when neither exists."""
    image_dir = Path(image_dir)
    dfs = sorted(image_dir.glob("df.*"))
    bank_dir = image_dir.parent.parent
    sfdisks = sorted(bank_dir.glob("sfdisk.*")) if bank_dir.is_dir() else []
    if not dfs and not sfdisks:
        return None
    df_file = _pick(dfs, None)
    suffix = df_file.name.split(".", 1)[1] if df_file else None
    sf_file = _pick(sfdisks, suffix)
    summary = _summary(image_dir)
    warnings = [
        "legacy capture (df.N and sfdisk.N of the original hook): no UUIDs, labels or "
        "root modes were recorded; new ones will be made and fstab may need UUID= lines fixed",
    ]

    disks: tuple[Disk, ...] = ()
    table = None
    if sf_file is not None:
        table = parse_sfdisk(_read(sf_file), str(sf_file))
        nodes = [p.node for p in table.partitions]
        device = table.device or (disk_of(nodes[0]) if nodes else "/dev/sda")
        end = max((p.end for p in table.partitions), default=0)
        # The disk's size was never recorded: the end of its last partition is the best lower bound.
        disks = (Disk(device=device, size=end * table.sector_size, sector_size=table.sector_size, table=table),)
        warnings.append(f"disk size of {device} unknown; taken as the end of its last partition")
    else:
        warnings.append("no sfdisk.N found two levels above the image: the partition table is unknown")

    fstab = _root_fstab(image_dir)
    types = {e.file: e.vfstype for e in fstab}
    names = {e.file: e.spec for e in fstab}
    filesystems: list[Filesystem] = []
    if df_file is not None:
        for e in parse_df(_read(df_file), str(df_file)):
            if not e.source.startswith("/dev/"):
                continue
            fstype = e.fstype or types.get(e.target) or "unknown"
            spec = names.get(e.target, "")
            filesystems.append(Filesystem(
                device=e.source, fstype=fstype, mountpoint=e.target, size=e.size, used=e.used,
                uuid=spec[5:] if spec.startswith("UUID=") else None,
                label=spec[6:] if spec.startswith("LABEL=") else None,  # fstab mounts by it: keep it
            ))
        if any(f.fstype == "unknown" for f in filesystems):
            warnings.append("some filesystem types are unknown (no etc/fstab in the image of /)")
    swaps: list[Swap] = []
    if table is not None:
        for p in table.partitions:
            if p.type in (DOS_SWAP, GPT_SWAP):
                swaps.append(Swap(device=p.node, size=p.size * table.sector_size))
                filesystems.append(Filesystem(device=p.node, fstype="swap"))

    captured = summary.get("Image-now")
    if captured:
        captured = captured.replace(" ", "T")
    else:
        stamp = (df_file or sf_file).stat().st_mtime  # type: ignore[union-attr]
        captured = dt.datetime.fromtimestamp(stamp, dt.timezone.utc).replace(microsecond=0).isoformat()
    grub_disk = disks[0].device if disks else None
    return Layout(
        client=summary.get("client") or image_dir.parent.parent.name,
        captured_at=captured,
        source="legacy",
        disks=disks,
        filesystems=tuple(filesystems),
        swaps=tuple(swaps),
        fstab=fstab,
        boot=Boot(grub_disk=grub_disk),
        warnings=tuple(warnings),
    )


__all__ = ["load_layout", "load_legacy"]


def newest_layout(images: Sequence[Image]) -> Layout | None:
    """The layout captured with the newest of the chosen images (layout.json, or an old bank's files).

    Every vault's image carries its own copy from the same night's hook; the
    newest describes the disk as it was last seen.
    """
    for image in sorted(images, key=lambda i: (i.created or "", i.name), reverse=True):
        layout = image_layout(image)
        if layout is not None:
            return layout
    return None


def image_layout(image: Image) -> Layout | None:
    """The layout kept with one image: where its source puts it (rsnapshot: .rescue/HOST/ in the
    snapshot, a plain folder: .rescue/ in it), else the image folder's rescue/ or legacy files."""
    found = image.layout_dir / "layout.json" if image.layout_dir is not None else None
    if found is not None and found.is_file():
        return _with_vg_configs(Layout.loads(_read(found).decode("utf-8", "surrogateescape"), str(found)),
                                found.parent)
    return load_layout(image.path)
