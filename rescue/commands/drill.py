"""`rescue drill`: prove a backup restores, by restoring it into a virtual disk and booting it."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from rescue.errors import Exit, RescueError

NAME = "drill"
ORDER = 5
HELP = "restore a backup into a virtual disk and boot it (with no --bank: the demo disaster, BIOS and UEFI)"
DESCRIPTION = """\
Without --bank (or with --demo): build a small Debian machine on a virtual
disk, back it up twice with dirvish (rescue capture as hook) onto a backup
disk made by `rescue prepare-disk`, throw the machine's disk away, boot the
backup disk in qemu with a blank, bigger disk and let the unattended restore
run, then boot the restored disk and check that it reaches multi-user with its
data, /tmp 1777, swap and the filesystem UUIDs it had. BIOS, then UEFI.

With --bank DIR --client NAME (or --rsnapshot ROOT --client HOST): restore
that machine's newest good images (or --image DATE, or a snapshot's name such
as daily.1) the same way into a virtual disk and boot it. The bank is only
read (the images are copied into the drill's own backup disk image); no real
disk is ever written.

Everything happens in image files under --workdir; the rescue image and the
demo OS are cached in /var/cache/rescue, and so is each layered demo machine's
build (its UUIDs and capture; --rebuild-machine makes it again). Exit 0 when every check passed.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--demo", action="store_true", help="the demo disaster (the default without --bank)")
    p.add_argument("--firmware", choices=("bios", "uefi"), help="run one firmware only (default: BIOS then UEFI)")
    p.add_argument("--bank", type=Path, metavar="DIR", help="a real bank to restore from (read only)")
    p.add_argument("--rsnapshot", type=Path, metavar="ROOT",
                   help="a real rsnapshot snapshot_root to restore from instead (read only)")
    p.add_argument("--client", metavar="NAME", help="with --bank or --rsnapshot: the machine to restore")
    p.add_argument("--image", metavar="DATE", help="with --bank: the newest good image at or before DATE")
    p.add_argument("--workdir", type=Path, metavar="DIR",
                   help="where the disk images and serial logs go (default /var/tmp/rescue-drill-TIME)")
    p.add_argument("--keep", action="store_true", help="keep the disk images (serial logs are always kept)")
    p.add_argument("--memory", type=int, default=1024, metavar="MIB", help="guest memory (default 1024)")
    p.add_argument("--layout", metavar="NAME",
                   help="the demo machine's storage layout (default plain); --layout list shows them")
    p.add_argument("--onto-one-disk", action="store_true",
                   help="restore a demo machine of several disks onto one new disk (mirrors run degraded)")
    p.add_argument("--rebuild-machine", action="store_true",
                   help="a layered demo machine (built in a rescue VM, then cached): build it again")
    p.add_argument("--luks-new-key", action="store_true",
                   help="a demo machine with LUKS: the restore makes each container with a new master key, "
                        "the new passphrase its one keyslot (instead of writing the kept header back)")
    p.add_argument("--compare-tar", nargs="?", type=int, const=3, default=0, metavar="RUNS",
                   help="the demo: after the restore, in the same rescue boot, time a plain tar pipe of the "
                        "same images onto a third blank disk, RUNS times (default 3; under emulation one "
                        "run's time varies widely); the report sets the copy's time against the best")


def _say(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {msg}", flush=True)


def run(args: argparse.Namespace) -> int:
    from rescue.drill import demo, layouts

    if args.layout == layouts.LIST:
        print(layouts.render_list())
        return int(Exit.OK)
    if args.layout is not None and (args.bank is not None or args.rsnapshot is not None):
        raise RescueError("--layout goes with the demo drill",
                          fix="a real bank is restored in the layout it was captured with: drop --layout")
    layout = layouts.layout_of(args.layout)  # a bad name stops here, before anything is written
    if args.onto_one_disk and len(layout.disks) < 2:
        raise RescueError(f"--onto-one-disk goes with a machine of several disks; {layout.name!r} has one",
                          fix="choose a layout of two disks (rescue drill --layout list), or drop --onto-one-disk")
    if args.luks_new_key and not layouts.needs_passphrase(layout):
        raise RescueError(f"--luks-new-key goes with a demo machine whose LUKS passphrase is typed at boot; "
                          f"{layout.name!r} has none",
                          fix="choose luks-lvm (a machine opened by a keyfile would not open at boot with a new key)")
    if os.geteuid() != 0:
        raise RescueError("rescue drill must run as root",
                          why="it attaches loop devices, mounts filesystems and runs dirvish")
    real = args.bank if args.bank is not None else args.rsnapshot
    if args.bank is not None and args.rsnapshot is not None:
        raise RescueError("--bank and --rsnapshot do not go together",
                          fix="drill one backup at a time: the dirvish bank or the rsnapshot root")
    if real is None and (args.client or args.image):
        raise RescueError("--client and --image go with --bank or --rsnapshot",
                          fix="add --bank DIR (or --rsnapshot ROOT), or drop them for the demo")
    if real is not None and args.compare_tar:
        raise RescueError("--compare-tar goes with the demo drill", fix="drop it, or drill the demo")
    if not 0 <= args.compare_tar <= 9:
        raise RescueError(f"--compare-tar {args.compare_tar}: the tar pipe runs 1 to 9 times",
                          fix="give a number from 1 to 9, or --compare-tar alone for 3")
    if real is not None and args.demo:
        raise RescueError("--demo and --bank do not go together", fix="choose the demo or a real bank")
    if real is not None and not args.client:
        option = "--bank DIR" if args.bank is not None else "--rsnapshot ROOT"
        raise RescueError(f"{option.split()[0]} needs --client NAME",
                          fix=f"rescue list {option} shows the machines in it")
    workdir = (args.workdir or demo.default_workdir()).resolve()
    firmwares = (tuple(demo.firmwares_of(args.firmware)) if real is not None
                 else layouts.firmwares_for(layout, args.firmware))
    if real is not None:
        from rescue.drill import bank as bankdrill

        bank_opts = bankdrill.BankOptions(
            bank=args.bank.resolve() if args.bank is not None else None, client=args.client, image=args.image,
            workdir=workdir, firmware=firmwares[0] if args.firmware else None, keep=args.keep,
            memory_mib=args.memory, rsnapshot=args.rsnapshot.resolve() if args.rsnapshot is not None else None)
        chosen = bankdrill.choose(bank_opts)  # a bad --bank, --client or --image stops here
        _say(f"rescue drill: working in {workdir}")
        report = bankdrill.run_bank(bank_opts, _say, chosen)
    else:
        _say(f"rescue drill: working in {workdir}")
        opts = demo.Options(workdir=workdir, firmwares=firmwares, keep=args.keep, memory_mib=args.memory,
                            compare_tar=args.compare_tar, layout=layout.name, onto_one_disk=args.onto_one_disk,
                            rebuild_machine=args.rebuild_machine, luks_new_key=args.luks_new_key)
        report = demo.run_demo(opts, _say)
    print()
    print(report.render())
    print(f"(report: {workdir / 'report.json'})")
    if report.ok:
        return int(Exit.OK)
    logs = [log for r in report.runs for log in r.logs]
    if logs:
        print("serial logs kept:", file=sys.stderr)
        for log in logs:
            print(f"  {log}", file=sys.stderr)
    return int(Exit.FAILED)

