"""A real dirvish bank of a DemoMachine: one vault per partition, two nightly images.

dirvish insists on /etc/dirvish/master.conf (or /etc/dirvish.conf): it
reads it before it parses its command line, so --config cannot replace it
(see $CONFDIR and the master-configuration block in /usr/sbin/dirvish).
Rather than touch the host's /etc, every dirvish run here happens in a
private mount namespace (`unshare --mount`) in which a private folder is
bind-mounted over /etc/dirvish. The host's /etc is never written, runs of
different tests cannot see each other's master.conf, and dirvish itself is
the unmodified /usr/sbin/dirvish.
"""

from __future__ import annotations

import datetime as dt
import os
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rescue.demo.machine import DemoMachine
from rescue.errors import RescueError
from rescue.run import Result, run

@dataclass(frozen=True)
class DemoBank:
    """What make_bank made: where, which vaults, which images (oldest first)."""

    bank: Path  # the bank folder (holds one folder per vault)
    confdir: Path  # the private /etc/dirvish (master.conf)
    client: str  # what the summaries name as client ("localhost" by default)
    vaults: tuple[tuple[str, str], ...]  # (vault name, mount point), e.g. ("home", "/home")
    images: tuple[str, ...]  # image names, oldest first, the same in every vault

    def vault_of(self, mountpoint: str) -> str:
        for name, mp in self.vaults:
            if mp == mountpoint:
                return name
        raise KeyError(mountpoint)

    def image_dir(self, vault: str, image: str | None = None) -> Path:
        """bank/vault/image (the newest image when image is None)."""
        return self.bank / vault / (image or self.images[-1])


def rescue_command() -> list[str]:
    """The rescue of this interpreter (the venv's), as argv for a hook line."""
    exe = Path(sys.executable)
    script = exe.parent / "rescue"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [str(exe), "-m", "rescue"]


def hook_line(argv: Sequence[str]) -> str:
    """A dirvish hook command: shell-quoted, % doubled (hooks pass through strftime),
    and free of single quotes (dirvish wraps the hook in '...')."""
    line = shlex.join(argv)
    if "'" in line:
        raise RescueError(
            f"a dirvish hook cannot contain a single quote: {line}",
            why="dirvish runs hooks as /bin/sh -c '...' without escaping",
            fix="use paths without quotes or spaces for the demo",
        )
    return line.replace("%", "%%")


def default_image_names(count: int = 2) -> tuple[str, ...]:
    """Nightly names one day apart ending today, dirvish's usual %Y-%m%d-%H%M form."""
    today = dt.datetime.now().replace(hour=3, minute=0, second=0, microsecond=0)
    return tuple((today - dt.timedelta(days=count - 1 - i)).strftime("%Y-%m%d-%H%M") for i in range(count))


# What a real vault's default.conf leaves out (as in the wild: kernel and runtime
# filesystems, scratch and download folders, removable-media mount points, swap files).
# rsync patterns anchored at the vault's tree; a trailing / matches folders only.
REAL_WORLD_EXCLUDES = (
    "/proc/", "/sys/", "/dev/", "/run/", "/tmp/", "/var/tmp/", "/var/cache/apt/archives/",
    "lost+found/", "/mnt/", "/media/", "/swapfile", "/swap.img",
)


def write_master_conf(confdir: Path, bank: Path, vaults: Sequence[str]) -> Path:
    confdir.mkdir(parents=True, exist_ok=True)
    master = confdir / "master.conf"
    master.write_text(
        "# private master.conf of a rescue demo bank\n"
        f"bank:\n\t{bank}\n"
        "image-default: %Y-%m%d-%H%M\n"
        "index: none\n"
        "Runall:\n" + "".join(f"\t{v}\n" for v in vaults)
    )
    return master


def write_vault_conf(
    bank: Path, vault: str, *, client: str, tree: Path, hook: str | None, rsync_options: Sequence[str],
    excludes: Sequence[str] = (),
) -> Path:
    conf_dir = bank / vault / "dirvish"
    conf_dir.mkdir(parents=True, exist_ok=True)
    text = (
        f"client: {client}\n"
        f"tree: {tree}\n"
        "xdev: 1\n"
        "sparse: 1\n"
        "numeric-ids: 1\n"
        "index: none\n"
        "rsync-option:\n" + "".join(f"\t{o}\n" for o in rsync_options)
    )
    if excludes:
        text += "exclude:\n" + "".join(f"\t{e}\n" for e in excludes)
    if hook:
        text += f"post-server: {hook}\n"
    conf = conf_dir / "default.conf"
    conf.write_text(text)
    return conf


def run_dirvish(
    confdir: Path, argv: Sequence[str], *, keep: Sequence[Path] = (), check: bool = True, timeout: float = 600
) -> Result:
    """Run dirvish (or dirvish-runall, or a script calling them) with confdir as its /etc/dirvish.

    The run happens in a private mount namespace (rescue.demo.nsrun). The
    banks named in confdir/master.conf and the trees of their vaults stay
    visible, with the keep paths; other tests' loop mounts are let go of in
    that namespace so it never holds them busy. keep: paths the run needs
    that master.conf does not lead to (trees whose bank is on a disk the
    command mounts itself).
    """
    if not Path("/etc/dirvish").is_dir():
        raise RescueError(
            "/etc/dirvish does not exist, so no private master.conf can be mounted over it",
            fix="install the dirvish package (scripts/setup.sh)",
        )
    paths = [str(confdir), *(str(k) for k in keep), *_banks_and_trees(confdir)]
    return run(
        ["unshare", "--mount", "--propagation", "private",
         sys.executable, "-m", "rescue.demo.nsrun", str(confdir), *paths, "--", *argv],
        check=check, timeout=timeout,
    )


def _banks_and_trees(confdir: Path) -> list[str]:
    """bank: entries of master.conf, and every vault's tree: below them."""
    master = confdir / "master.conf"
    banks: list[str] = []
    if master.is_file():
        in_bank = False
        for line in master.read_text().splitlines():
            if line.startswith("bank:"):
                in_bank = True
            elif in_bank and line.startswith(("\t", " ")) and line.strip():
                banks.append(line.strip())
            else:
                in_bank = False
    paths = list(banks)
    for bank in banks:
        for conf in Path(bank).glob("*/dirvish/default.conf"):
            for line in conf.read_text().splitlines():
                if line.startswith("tree:"):
                    paths.append(line.split(":", 1)[1].strip().split()[0])
    return paths


def make_bank(
    machine: DemoMachine,
    bank: Path,
    *,
    client: str = "localhost",
    images: Sequence[str] | None = None,
    hook: bool = True,
    hook_argv: Sequence[str] | None = None,
    rsync_options: Sequence[str] = ("--acls", "--xattrs"),
    confdir: Path | None = None,
    excludes: Sequence[str] = REAL_WORLD_EXCLUDES,
) -> DemoBank:
    """Back up every filesystem of `machine` with real dirvish, one vault each.

    The first image is made with `dirvish --vault V --init`, every later one
    with a plain nightly `dirvish --vault V` (hard-linked to the one before).
    With hook=True each vault's post-server hook is
    `rescue capture --disk DISK --root ROOT` (the venv's rescue), so every
    image gets rescue/layout.json; hook_argv replaces that command.
    client must be this host's name or "localhost" (dirvish then runs rsync
    locally). excludes: each vault's exclude list (a real-world one unless
    told). Any dirvish failure raises CommandError.
    """
    if machine.disk is None:
        raise RescueError("the demo machine is not attached; back it up before detaching it")
    names = tuple(images) if images is not None else default_image_names(2)
    if not names or len(set(names)) != len(names):
        raise ValueError("image names must be distinct, and at least one")
    bank = Path(bank)
    bank.mkdir(parents=True, exist_ok=True)
    os.chmod(bank, 0o700)
    confdir = confdir or bank.parent / (bank.name + "-etc-dirvish")
    vaults = tuple((p.vault, p.mountpoint) for p in machine.filesystems if p.vault and p.mountpoint)
    write_master_conf(confdir, bank, [v for v, _ in vaults])
    line = None
    if hook:
        argv = list(hook_argv) if hook_argv is not None else [
            *rescue_command(), "capture", "--disk", machine.disk, "--root", str(machine.root),
        ]
        line = hook_line(argv)
    for vault, mountpoint in vaults:
        write_vault_conf(
            bank, vault, client=client, tree=machine.dir_of(mountpoint), hook=line, rsync_options=rsync_options,
            excludes=excludes,
        )
    for i, image in enumerate(names):
        when = dt.datetime.strptime(image, "%Y-%m%d-%H%M") if _is_dated(image) else None
        for vault, _ in vaults:
            argv = ["dirvish", "--vault", vault, "--image", image]
            if when is not None:
                argv += ["--image-time", when.strftime("%Y-%m-%d %H:%M:%S")]
            if i == 0:
                argv.append("--init")
            run_dirvish(confdir, argv)
            if hook and hook_argv is None:
                _check_capture(bank / vault / image)
    return DemoBank(bank=bank, confdir=confdir, client=client, vaults=vaults, images=names)


def _is_dated(name: str) -> bool:
    try:
        dt.datetime.strptime(name, "%Y-%m%d-%H%M")
    except ValueError:
        return False
    return True


def _check_capture(image_dir: Path) -> None:
    """The hook's failure does not fail dirvish; a demo bank without layouts would mislead tests."""
    if not (image_dir / "rescue" / "layout.json").is_file():
        log = image_dir / "log"
        tail = log.read_text(errors="replace").splitlines()[-8:] if log.is_file() else []
        raise RescueError(
            f"the capture hook wrote no rescue/layout.json into {image_dir}",
            why="\n       ".join(tail) or "no dirvish log",
        )
