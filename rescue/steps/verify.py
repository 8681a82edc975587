from __future__ import annotations

import errno
import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rescue.engine.copy import RSYNC_PARTIAL, XFS_ACL_FILTER, skip_filters
from rescue.engine.copyerrors import NOISE, classify, counted, mark_folders, rsync_unescape, unmarked
from rescue.errors import StepFailed
from rescue.run import CommandError
from rescue.layout.model import BootMode
from rescue.steps.base import Context, Step, at_root, confined, sh, slug
from rescue.steps.copy import CopyTree
from rescue.steps.mkfs import MakeFilesystem, probe, same_uuid
from rescue.steps.mkswap import MakeSwap


MAX_LISTED = 1000  # unreadable files kept per filesystem in the journal and report
# errno values that mean the backup's medium or filesystem could not give the data back
READ_ERRORS = frozenset({errno.EIO, errno.EUCLEAN, errno.EBADMSG, errno.ENODATA, errno.ENXIO})
MAX_PROBES = 1000  # differing files read back from the image to see whether it can give them


def verify_argv(source: str, dest: str, *, checksum: bool, xattrs: bool = True, acls: bool = True,
                skip: Sequence[str] = ()) -> list[str]:
    """A dry-run rsync that itemizes every difference in content or metadata.

    After a read error in the image rsync skips --delete ("IO error encountered"), so
    files the target has beyond an image that could not be read whole go unnamed, as
    the copy's own rsync leaves them (--ignore-errors there would delete what an
    earlier run could still read from a failing disk)."""
    argv = ["rsync", "-n", "-aH", "--numeric-ids", "--delete", "--itemize-changes"]
    if acls:
        argv.append("-A")
    if xattrs:
        argv += ["-X", XFS_ACL_FILTER]  # xfs's second view of ACLs (see rescue.engine.copy)
    if checksum:
        argv.append("--checksum")
    argv += skip_filters(skip)  # a whole-machine image's child mount points: their own trees
    return argv + ["--", f"{source}/", f"{dest}/"]


def itemized_path(line: str) -> str:
    """The path of one --itemize-changes line ("YXcstpoguax path" or "*deleting   path")."""
    return line[12:] if len(line) > 12 else ""


def _under(path: str, parent: str) -> str | None:
    """path relative to parent (both absolute in the restored system), or None if outside."""
    if parent == "/":
        return path.lstrip("/")
    if path == parent:
        return ""
    if path.startswith(parent.rstrip("/") + "/"):
        return path[len(parent.rstrip("/")) + 1:]
    return None


# grub-install copies its modules and fonts here and update-grub writes grub.cfg:
# after the bootloader step these folders differ from the backup on purpose.
GRUB_DIRS = ("/boot/grub", "/boot/grub2")


def written_by_bootloader(mountpoint: str, boot: dict) -> tuple[str, ...]:
    """Folders (relative to the filesystem at mountpoint) that the bootloader step rewrote."""
    if not boot.get("attempted"):
        return ()
    return tuple(rel for d in GRUB_DIRS if (rel := _under(d, mountpoint)))


def expected_differences(mountpoint: str, fstype: str, children: list[str], created: list[str]) -> set[str]:
    """Paths (relative to the filesystem root) that differ from the tree on purpose.

    The root itself (Fixups sets its captured mode and owner), the folders
    child filesystems are mounted on, what Fixups created or rewrote (fstab
    after a UUID change), and lost+found that mkfs.ext* makes.
    """
    out = {"", "."}
    for p in [*children, *created]:
        rel = _under(p, mountpoint)
        if rel:
            out.add(rel)
    if fstype.startswith("ext"):
        out.add("lost+found")
    return out


@dataclass(frozen=True)
class Verify(Step):
    """Restored trees equal the image trees; UUIDs as captured; boot code present."""

    kind = "verify"
    disk: str
    copies: tuple[CopyTree, ...]
    filesystems: tuple[MakeFilesystem, ...]
    swaps: tuple[MakeSwap, ...] = ()
    mode: BootMode = BootMode.BIOS
    check_boot: bool = True

    @property
    def key(self) -> str:
        return "verify"

    def describe(self) -> str:
        return f"verify {len(self.copies)} trees, UUIDs and boot code on {self.disk}"

    def script(self) -> list[str]:
        lines = []
        for c in self.copies:
            work = '"$WORK"/' + shlex.quote(f"verify-{slug(c.mountpoint)}")
            argv = verify_argv(str(c.source), "DEST", checksum=False, xattrs=c.xattrs, acls=c.acls, skip=c.skip)
            lines += [f"mkdir -p {work}", f"mount --bind {at_root(c.mountpoint)} {work}",
                      sh(*argv[:-1]) + f" {work}/", f"umount {work}"]
        for fs in (*self.filesystems, *self.swaps):
            lines.append(sh("blkid", "-p", "-o", "export", fs.device))
        if self.check_boot:
            if self.mode is BootMode.UEFI:
                lines.append("ls -l \"$ROOT\"/boot/efi/EFI/BOOT/BOOTX64.EFI")
            else:
                lines.append(f"dd if={sh(self.disk)} bs=440 count=1 status=none | grep -aq GRUB")
        return lines

    def run(self, ctx: Context) -> None:
        problems: list[str] = []
        lines: list[str] = []
        fixed = ctx.data("fixups")
        created = list(fixed.get("created", [])) + list(fixed.get("rewritten", []))
        fstypes = {fs.mountpoint: fs.fstype for fs in self.filesystems if fs.mountpoint}
        mountpoints = [c.mountpoint for c in self.copies] + [m for m in fstypes if m]
        boot = ctx.data("bootloader")
        ctx.data().pop("unreadable", None)
        missing: dict[str, list[str]] = {}
        for c in self.copies:
            children = [m for m in mountpoints if m != c.mountpoint and _under(m, c.mountpoint)]
            known = {unmarked(u) for u in ctx.data(c.key).get("unreadable", [])}
            diffs, unreadable = self._compare(ctx, c, expected_differences(
                c.mountpoint, fstypes.get(c.mountpoint, ""), children, created),
                # a child that is a btrfs subvolume seen inside this tree (/var/lib/machines) shows
                # its files through the bind mount: they are its own copy's to verify
                written_by_bootloader(c.mountpoint, boot) + tuple(r for m in children if (r := _under(m, c.mountpoint))),
                known)
            what = (f"({'content by checksum, ' if ctx.verify_checksum else ''}metadata, hard links, "
                    f"{'xattrs, ' if c.xattrs else ''}{'ACLs' if c.acls else ''})")
            if unreadable:
                missing[c.mountpoint] = unreadable[:MAX_LISTED]
            if diffs:
                problems.append(f"{c.mountpoint}: {len(diffs)} difference(s) from image {c.image}: "
                                + "; ".join(diffs[:10]))
                ctx.data()[f"differences:{c.mountpoint}"] = diffs[:200]
            elif unreadable:
                shown = ", ".join(unreadable[:5]) + (f" and {len(unreadable) - 5} more" if len(unreadable) > 5 else "")
                lines.append(f"tree {c.mountpoint}: equal to vault {c.vault} image {c.image} {what}, except "
                             f"{counted(unreadable)} the backup could not give back (not restored): {shown}")
            else:
                lines.append(f"tree {c.mountpoint}: equal to vault {c.vault} image {c.image} {what}")
        if missing:
            # The Executor calls a restore with unreadable files incomplete; the report lists them.
            ctx.data()["unreadable"] = missing
        changed = {ch["device"]: ch for ch in ctx.uuid_changes()}
        for fs in (*self.filesystems, *self.swaps):
            kind = fs.fstype if isinstance(fs, MakeFilesystem) else "swap"
            found = probe(ctx, fs.device)
            want = changed[fs.device]["new"] if fs.device in changed else fs.uuid
            where = getattr(fs, "mountpoint", None) or kind
            if found.get("TYPE") != kind:
                problems.append(f"{fs.device} ({where}): {found.get('TYPE') or 'no filesystem'} instead of {kind}")
            elif want and not same_uuid(found.get("UUID"), want):
                problems.append(f"{fs.device} ({where}): UUID {found.get('UUID')} instead of {want}")
            elif fs.label and found.get("LABEL") != fs.label:
                problems.append(f"{fs.device} ({where}): label {found.get('LABEL')!r} instead of {fs.label!r}")
            else:
                lines.append(f"{fs.device} ({where}): {kind} UUID {found.get('UUID')}"
                             f"{' label ' + found['LABEL'] if found.get('LABEL') else ''} as captured"
                             f"{' (UUID changed, see above)' if fs.device in changed else ''}")
        if not self.check_boot:
            lines.append("boot code: not checked (the plan asked not to)")
        elif not boot.get("attempted"):
            lines.append(f"boot code: not checked, bootloader not installed ({boot.get('reason', 'no bootloader step')})")
        elif self.mode is BootMode.UEFI:
            efi = confined(ctx.root, "/boot/efi/EFI/BOOT/BOOTX64.EFI")
            esp = next((fs.mountpoint for fs in self.filesystems if fs.fstype == "vfat" and fs.mountpoint), None)
            if esp:
                efi = confined(ctx.root, f"{esp}/EFI/BOOT/BOOTX64.EFI")
            if efi.is_file() and efi.stat().st_size > 0:
                lines.append(f"boot code: {efi.relative_to(ctx.root)} present")
            else:
                problems.append("boot code: no EFI/BOOT/BOOTX64.EFI on the ESP")
        else:
            with open(self.disk, "rb") as f:
                mbr = f.read(512)
            if b"GRUB" in mbr[:440]:
                lines.append(f"boot code: GRUB in the MBR of {self.disk}")
            else:
                problems.append(f"boot code: no GRUB boot code in the MBR of {self.disk}")
        for line in lines:
            ctx.note(line)
        if problems:
            for p in problems:
                ctx.note("MISMATCH " + p)
            raise StepFailed("the restored disk does not match the backup",
                             why="; ".join(problems[:5]),
                             fix="see the report and the log; rerun the same command to redo the failed parts")

    def _compare(self, ctx: Context, c: CopyTree, expected: set[str],
                 rewritten_dirs: tuple[str, ...] = (), unreadable: set[str] | frozenset[str] = frozenset()
                 ) -> tuple[list[str], list[str]]:
        """(differences, files the backup cannot give back) for one tree.

        A difference whose file cannot be read from the image (the copy step listed
        it, or reading it now fails) is not the restore's fault: it is named, apart.
        """
        work = ctx.work / f"verify-{slug(c.mountpoint)}"
        os.makedirs(work, exist_ok=True)
        ctx.run(["mount", "--bind", str(ctx.path(c.mountpoint)), str(work)])
        argv = verify_argv(str(c.source), str(work), checksum=ctx.verify_checksum, xattrs=c.xattrs, acls=c.acls,
                           skip=c.skip)
        try:
            result = ctx.run(argv, check=False)
        finally:
            ctx.run(["umount", str(work)], check=False)
        missing: list[str] = []
        if result.returncode in RSYNC_PARTIAL:
            found = classify(result.stderr.splitlines(), c.source, work)
            if not found.unreadable:
                raise CommandError(argv, result.returncode, result.stderr)
            missing += found.unreadable
        elif result.returncode != 0:
            raise CommandError(argv, result.returncode, result.stderr)
        diffs = []
        probes = 0
        for line in result.stdout.splitlines():
            if not line.strip() or line.startswith(NOISE):
                continue
            path = itemized_path(line).rstrip("/")
            if line.startswith("h") and " => " in path:  # hf+++++++++ name => first name
                path = path.split(" => ", 1)[0]
            if path in expected:
                continue
            if any(path == d or path.startswith(d + "/") for d in rewritten_dirs):
                continue
            name = rsync_unescape(path)
            lost = next((u for u in (*unreadable, *missing) if name == u or name.startswith(u + "/")), None)
            if lost is not None:
                missing.append(lost)  # a folder the image cannot give back: named once, not its contents
                continue
            if line[1:2] == "f" and probes < MAX_PROBES:
                probes += 1
                if not _readable(c.source, name):
                    missing.append(name)
                    continue
            diffs.append(line)
        return diffs, sorted(mark_folders(c.source, dict.fromkeys(missing)))


def _readable(tree: Path, rel: str) -> bool:
    """Whether a file of the image can be read to its end (a bad sector says no)."""
    path = confined(tree, rel)
    try:
        with open(path, "rb", buffering=0) as f:
            while f.read(1 << 20):
                pass
    except OSError as e:
        return e.errno not in READ_ERRORS
    return True
