"""Run a dirvish command inside its own mount namespace with a private /etc/dirvish.

Started by rescue.demo.dirvish.run_dirvish as
    unshare --mount --propagation private PYTHON -m rescue.demo.nsrun CONFDIR KEEP... -- ARGV...
It bind-mounts CONFDIR over /etc/dirvish (and its master.conf over
/etc/dirvish.conf when the host has one), then lets go of every loop-device
mount the namespace inherited that has nothing to do with the KEEP paths
(the banks and trees of this run). Without that, a namespace copied while
another test had its loop disk mounted would keep that filesystem alive
after the other test unmounts it, and that test's next mount of a same-UUID
twin (xfs, btrfs) would fail. Only this namespace's view changes; the host's
mounts are untouched. Then it execs ARGV.
"""

from __future__ import annotations

import ctypes
import os
import sys

from rescue.formats.mountinfo import read_mountinfo

MS_BIND = 4096
MNT_DETACH = 2


def _mounts() -> list[tuple[str, str]]:
    """(mount point, source) from /proc/self/mountinfo."""
    return [(m.target, m.source) for m in read_mountinfo()]


def _related(mountpoint: str, keep: list[str]) -> bool:
    for k in keep:
        if mountpoint == k or k.startswith(mountpoint.rstrip("/") + "/") or mountpoint.startswith(k.rstrip("/") + "/"):
            return True
    return False


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def main(args: list[str]) -> int:
    if "--" not in args or len(args) < 3:
        print("usage: nsrun CONFDIR KEEP... -- ARGV...", file=sys.stderr)
        return 2
    i = args.index("--")
    confdir, keep, argv = args[0], [os.path.realpath(k) for k in args[1:i]], args[i + 1:]
    libc = ctypes.CDLL(None, use_errno=True)
    _check(libc.mount(confdir.encode(), b"/etc/dirvish", None, MS_BIND, None), "bind /etc/dirvish")
    if os.path.isfile("/etc/dirvish.conf"):
        master = os.path.join(confdir, "master.conf").encode()
        _check(libc.mount(master, b"/etc/dirvish.conf", None, MS_BIND, None), "bind /etc/dirvish.conf")
    strangers = [mp for mp, src in _mounts() if src.startswith("/dev/loop") and not _related(mp, keep)]
    for mp in sorted(strangers, key=len, reverse=True):
        libc.umount2(os.fsencode(mp), MNT_DETACH)  # already gone with its parent: fine
    os.execvp(argv[0], argv)
    return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
