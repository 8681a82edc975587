"""`rescue doctor`: what costs the backup bank, and what its dirvish side lacks (reads only)."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from rescue.backups import Machine, find_backups
from rescue.backups.dirvish import banks_from_master, shown
from rescue.backups.doctor import (
    LOGROTATE_CONF,
    BackupDisk,
    backup_disk,
    Finding,
    changer_findings,
    dirvish_findings,
    disklabel_findings,
    expire_findings,
    fetch_client_files,
    logrotate_findings,
    subvolume_findings,
    unheld_findings,
    updatedb_findings,
)
from rescue.backups.health import machine_health, reference_of
from rescue.capture.probe import SshRunner
from rescue.errors import Exit, RescueError
from rescue.jsonform import to_json

NAME = "doctor"
ORDER = 15
HELP = "find what costs the backup bank (updatedb, logrotate) and what its dirvish side lacks (reads only)"
DESCRIPTION = (
    "Read the machine's configuration under --root (default /), or a client's over ssh (--ssh), and "
    "the dirvish banks, and tell each finding with its evidence and its fix. Nothing is written, "
    "here or on the client. Exit 0 with no finding, "
    "8 with findings, 2 on wrong arguments."
)
FINDINGS = 8
JSON_VERSION = 1


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", type=Path, default=Path("/"), metavar="DIR",
                   help="the machine's root: / for this machine, or where another system is mounted")
    p.add_argument("--ssh", metavar="HOST",
                   help="check the client HOST the bank pulls from, over ssh (BatchMode, known host key only; "
                        "reads its files with cat); --root then stays this machine, where the bank is")
    p.add_argument("--client", metavar="NAME",
                   help="with --ssh: the client's name in the bank (dirvish's client:), default HOST without user@")
    p.add_argument("--ssh-command", default="ssh", metavar="PROGRAM",
                   help="the ssh program to use (default ssh; always run with -o BatchMode=yes)")
    p.add_argument("--bank", action="append", type=Path, default=[], metavar="DIR",
                   help="a dirvish bank; default: the banks of ROOT/etc/dirvish/master.conf")
    p.add_argument("--config", type=Path, metavar="FILE",
                   help="dirvish's master.conf (default ROOT/etc/dirvish/master.conf)")
    p.add_argument("--nights", type=int, default=3, metavar="N",
                   help="a file that changes every night is one stored anew on each of the last N nights (3)")
    p.add_argument("--json", action="store_true", help="print JSON (stable, versioned)")


def run(args: argparse.Namespace) -> int:
    if args.ssh:
        runner = SshRunner(args.ssh, ssh=args.ssh_command)
        with tempfile.TemporaryDirectory(prefix="rescue-doctor-") as copy:
            fetch_client_files(runner, Path(copy))
            return _doctor(args, client_root=Path(copy), client=args.client or args.ssh.rpartition("@")[2])
    if args.client:
        raise RescueError("--client goes with --ssh", fix="name the client's host with --ssh HOST")
    return _doctor(args, client_root=args.root, client=None)


def _vault_sources(machine: Machine, root: str) -> list[tuple[str, str, bool | None]]:
    """(vault, source as the captured machine names it, xdev) of a machine's vaults; a source
    under a --root capture's root is named as the machine names it."""
    out = []
    base = root.rstrip("/")
    for v in machine.vaults:
        source = next((i.source for i in reversed(v.images) if i.source), None) or v.configured_source
        if not source:
            continue
        source = source.rstrip("/") or "/"
        if base and source == base:
            source = "/"
        elif base and source.startswith(base + "/"):
            source = source[len(base):]
        out.append((v.name, source, v.xdev))
    return out


def _doctor(args: argparse.Namespace, client_root: Path, client: str | None) -> int:
    """client_root: where the backed-up machine's files are (its root, or the copy fetched over ssh);
    args.root: the machine holding the bank (its updatedb and dirvish configuration)."""
    master = args.config or args.root / "etc" / "dirvish" / "master.conf"
    master_found = master if master.is_file() else None
    banks = list(args.bank) or (list(banks_from_master(master)) if master_found else [])
    findings: list[Finding] = []
    findings += updatedb_findings(args.root, [str(b) for b in banks])
    newest = reference = None
    if banks:
        backups = find_backups(banks)
        machines = [m for m in backups.machines if client in (None, m.client)]
        vaults = [v for m in machines for v in m.vaults]
        if client is not None and not vaults:
            raise RescueError(f"no vault in {', '.join(map(str, banks))} backs up the client {client}",
                              why="the findings about a client's files are weighed by its own images",
                              fix="give the client's name as the bank has it with --client NAME, or the bank "
                                  "with --bank")
        for v in vaults:
            usable = [i for i in v.images if i.usable]
            if usable and (usable[-1].tree / "var" / "log").is_dir():  # the vault of the machine's /
                newest = usable[-1].path
                reference = reference_of(newest)
    named = f"{args.ssh}:{LOGROTATE_CONF}" if client is not None else None
    findings += logrotate_findings(client_root, newest, reference, shown=named)
    if banks:
        for v in vaults:
            last = [i.path for i in v.images if i.usable][-(args.nights + 1):]
            findings += changer_findings(v.name, last)
        for m in machines:
            cover = machine_health(m)
            findings += unheld_findings(m.client, cover.unheld)
            findings += subvolume_findings(m.client, cover.unheld_subvolumes,
                                           _vault_sources(m, cover.layout_root or "/"), cover.layout_root or "/")
    disks: list[BackupDisk] = []
    for bank in banks:
        findings += dirvish_findings(master_found, bank)
        findings += expire_findings(master_found, bank)
        findings += disklabel_findings(bank)
        here = Path(bank).resolve()
        times = [i.created for v in backups.vaults if v.bank.resolve() == here for i in v.images
                 if i.usable and i.created]
        disks.append(backup_disk(Path(bank), max(times, default=None)))
    if args.json:
        json.dump({"version": JSON_VERSION, "findings": [to_json(f) for f in findings],
                   "disks": [to_json(d) for d in disks]}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for d in disks:  # which disk this is, and when a backup last wrote to it
            print(f"bank {shown(d.bank)}: backup disk {d.disklabel or '(no DISKLABEL)'}, "
                  f"last written {d.last_written.replace('T', ' ') if d.last_written else 'never (no good image)'}")
        for f in findings:
            print(f"{f.code}: {f.what}")
            print(f"  evidence: {f.evidence}")
            if f.cost_bytes is not None:
                print(f"  costs the bank: {f.cost_bytes} bytes a night")
            print(f"  fix: {f.fix}")
        if not findings:
            print(f"no findings ({args.ssh or shown(str(args.root))}, {len(banks)} bank(s))")
    return FINDINGS if findings else int(Exit.OK)
