"""The shape every restore step shares.

A step is frozen data built by the plan. It can describe itself in a line,
render itself as shell for restore.sh, and run through a Context that the
Executor provides (the gateway, events, the mount root, cancellation).
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:
    from rescue.events import Event
    from rescue.run import Arg, Result


class Context(Protocol):
    """What a running step may use. Implemented by the engine (rescue.engine.context)."""

    root: Path  # private mount point under which the target's filesystems hang
    work: Path  # private folder for single-filesystem bind mounts (copy, verify)
    target: str  # the whole target disk (the first, when a restore writes several)
    targets: tuple[str, ...]  # every target disk of the run
    key: str  # the running step's journal key
    resuming: bool  # an earlier run started this step and did not finish it
    bootloader: str  # "auto" (not onto loop devices), "install" or "skip"
    verify_checksum: bool

    def run(self, argv: Sequence[Arg], **kwargs: object) -> Result: ...

    def spawn(self, argv: Sequence[Arg], **kwargs: object) -> Any: ...

    def child_done(self, proc: Any) -> None: ...

    def emit(self, event: Event) -> None: ...

    def say(self, line: str) -> None: ...

    def note(self, line: str) -> None: ...

    def cancelled(self) -> bool: ...

    def data(self, key: str | None = None) -> dict[str, Any]: ...

    def save(self) -> None: ...

    def path(self, mountpoint: str) -> Path: ...

    def uuid_changes(self) -> list[dict[str, Any]]: ...


def sh(*argv: object) -> str:
    """One shell-quoted command line for restore.sh."""
    return shlex.join(str(a) for a in argv)


def at_root(mountpoint: str) -> str:
    """A mount point under restore.sh's $ROOT, quoted for the shell: "$ROOT"'/home'."""
    rel = mountpoint.strip("/")
    return '"$ROOT"' + (shlex.quote("/" + rel) if rel else "")


def slug(mountpoint: str) -> str:
    """A folder name for a mount point: / -> root, /var/log -> var_log."""
    rel = mountpoint.strip("/").replace("/", "_")
    if rel and set(rel) == {"."}:  # "/.." must not name the folder above
        rel = rel.replace(".", "_")
    return rel or "root"


@dataclass(frozen=True)
class Step:
    kind: ClassVar[str] = "step"
    # False for steps whose effect does not survive a reboot or a rerun (mounts):
    # a resumed restore runs them again even when the journal says done.
    persistent: ClassVar[bool] = True

    @property
    def key(self) -> str:
        """Stable identity in the journal: kind plus what it acts on."""
        raise NotImplementedError

    def describe(self) -> str:
        """One line a person reads in the review and the progress list."""
        raise NotImplementedError

    def script(self) -> list[str]:
        """Shell lines that do the same by hand (restore.sh)."""
        raise NotImplementedError

    def run(self, ctx: Context) -> None:
        raise NotImplementedError(f"{self.kind} cannot run yet")


def rescan_disk(ctx: Context, disk: str) -> None:
    """Have the kernel and /dev show the disk's current partitions (udev or not)."""
    from rescue.devices import rescan
    from rescue.run import which

    ctx.run(["partprobe", disk], check=False)
    if which("udevadm"):
        ctx.run(["udevadm", "settle", "--timeout=30"], check=False)
    rescan(disk)


def let_go(ctx: Context, argv: list[str], tries: int = 10, check: bool = True) -> None:
    """Deactivate a VG, stop an array or close a LUKS mapping that was just unmounted.

    Closing a device it wrote makes udev probe it again (blkid, its watch rule), and a
    probe that holds the device open for that moment makes vgchange -an say "in use".
    Wait for udev and try again, a few times, before calling it a failure."""
    from rescue.run import CommandError, which

    for attempt in range(tries):
        if which("udevadm"):
            ctx.run(["udevadm", "settle", "--timeout=30"], check=False)
        try:
            ctx.run(argv)
            return
        except CommandError as e:
            busy = any(w in (e.stderr or "").lower() for w in ("in use", "busy", "open logical", "still in use"))
            if not busy or attempt == tries - 1:
                if busy:
                    who = who_holds_layers()
                    ctx.note(f"{argv[0]}: still in use after {tries} tries; " + ("; ".join(who) or
                             "no process shows it open or mounted"))
                if check:
                    raise
                return
            time.sleep(0.5 + attempt * 0.5)


def who_holds_layers(proc: Path = Path("/proc")) -> list[str]:
    """Processes that hold a device-mapper or md device: mounted in a mount namespace of
    their own, or open. For the note of a VG, array or mapping that will not let go."""
    import os

    own = os.readlink(proc / "self" / "ns" / "mnt") if (proc / "self").exists() else ""
    found: list[str] = []
    for pid in (p for p in os.listdir(proc) if p.isdigit()):
        try:
            comm = (proc / pid / "comm").read_text().strip()
            ns = os.readlink(proc / pid / "ns" / "mnt")
            if ns != own:
                for line in (proc / pid / "mountinfo").read_text().splitlines():
                    fields = line.split(" - ", 1)
                    source = fields[1].split()[1] if len(fields) == 2 and len(fields[1].split()) > 1 else ""
                    if source.startswith(("/dev/mapper/", "/dev/dm-", "/dev/md")):
                        found.append(f"{comm} (pid {pid}, its own mount namespace) has {source} "
                                     f"mounted at {line.split()[4]}")
            for fd in os.listdir(proc / pid / "fd"):
                target = os.readlink(proc / pid / "fd" / fd)
                if target.startswith(("/dev/mapper/", "/dev/dm-", "/dev/md")):
                    found.append(f"{comm} (pid {pid}) has {target} open")
        except OSError:
            continue  # gone, or not ours to read
    return sorted(set(found))[:10]


def confined(root: Path, path: str, *, create: bool = False, mode: int = 0o755,
             made: list[str] | None = None) -> Path:
    """`path` of the restored system as a real path under `root`, as chroot would see it.

    Symlinks inside the restored tree are followed with `root` as their /, so an
    absolute link such as /var/run -> /run never leads out to the rescue
    system's own folders. With create=True missing folders are made (root-owned)
    and, when `made` is given, listed there as paths of the restored system.
    """
    import os

    parts = [p for p in path.split("/") if p and p != "."]
    cur = root
    hops = 0
    while parts:
        name = parts.pop(0)
        if name == "..":
            cur = cur.parent if cur != root else root
            continue
        nxt = cur / name
        if nxt.is_symlink():
            hops += 1
            if hops > 40:
                raise OSError(f"too many symlinks resolving {path} in the restored system")
            link = os.readlink(nxt)
            parts = [p for p in link.split("/") if p and p != "."] + parts
            cur = root if link.startswith("/") else cur
            continue
        if not nxt.exists():
            if not create:
                return nxt.joinpath(*parts) if parts else nxt
            os.mkdir(nxt, mode)
            os.chmod(nxt, mode)
            if made is not None:
                made.append("/" + str(nxt.relative_to(root)))
        cur = nxt
    return cur
