"""`rescue doctor` over a real dirvish bank of three nights, and a clean machine.

The "machine" is a folder (its --root) backed up by the unmodified dirvish in
a private mount namespace (see test_backups_real.py): it rotates its logs
without dateext each night, its updatedb.conf does not prune the bank, and
its vault has neither the capture hook nor xattrs/ACLs.
"""

from __future__ import annotations

import json
import os
import re
import socket
from pathlib import Path

import pytest

from rescue.cli import main
from rescue.commands.doctor import FINDINGS
from rescue.errors import Exit
from rescue.run import run

from test_backups_real import dirvish  # noqa: E402  (tests/integration is on sys.path)


def rotate(log: Path, night: int) -> None:
    """What logrotate does without dateext: every old log moves to the next number."""
    for k in (3, 2, 1):
        older = log.with_name(f"{log.name}.{k}")
        if older.exists():
            older.rename(log.with_name(f"{log.name}.{k + 1}"))
    log.rename(log.with_name(f"{log.name}.1"))
    log.write_bytes(bytes([night]) * 30_000)
    # a day apart, as real nights are (rsync would take same size and same second for unchanged)
    os.utime(log, (1_780_000_000 + night * 86400,) * 2)


def machine(root: Path, bank: Path, *, clean: bool) -> None:
    (root / "etc").mkdir(parents=True)
    (root / "var" / "log").mkdir(parents=True)
    (root / "etc" / "logrotate.conf").write_text("weekly\nrotate 4\ncreate\n" + ("dateext\n" if clean else ""))
    prune = "/var/spool /media" + (f" {bank}" if clean else "")
    (root / "etc" / "updatedb.conf").write_text(f'PRUNE_BIND_MOUNTS="yes"\nPRUNEPATHS="{prune}"\n')
    (root / "var" / "log" / "syslog").write_bytes(b"0" * 30_000)
    if not clean:
        (root / "var" / "lib" / "db").mkdir(parents=True)
        (root / "var" / "mail").mkdir()
        (root / "var" / "lib" / "db" / "main.db").write_bytes(b"d" * 200_000)
        (root / "var" / "mail" / "root").write_bytes(b"m" * (11 << 20))
        (root / "etc" / "hostname").write_text("unchanged\n")


def nightly_changes(root: Path, night: int) -> None:
    """A database rewritten in place and an mbox that grows: new inodes in the bank each night."""
    db, mbox = root / "var" / "lib" / "db" / "main.db", root / "var" / "mail" / "root"
    db.write_bytes(bytes([night]) * 200_000)
    with open(mbox, "ab") as f:
        f.write(b"From someone\n" * 1000)
    for p in (db, mbox):
        os.utime(p, (1_780_000_000 + night * 86400,) * 2)


def test_doctor_finds_each_problem_with_its_cost(tmp_path, capsys):
    root, bank, conf = tmp_path / "machine", tmp_path / "bank", tmp_path / "conf"
    machine(root, bank, clean=False)
    conf.mkdir()
    (conf / "master.conf").write_text(f"bank:\n\t{bank}\nimage-default: %Y-%m%d-%H%M\n")
    (bank / "root" / "dirvish").mkdir(parents=True)
    (bank / "root" / "dirvish" / "default.conf").write_text(
        f"client: {socket.gethostname()}\ntree: {root}\nindex: none\n")
    dirvish(conf, "--vault", "root", "--init", "--image", "2026-1124-0300")
    for night, name in ((1, "2026-1125-0300"), (2, "2026-1126-0300")):
        rotate(root / "var" / "log" / "syslog", night)
        nightly_changes(root, night)
        dirvish(conf, "--vault", "root", "--image", name)

    # no expire rule: dirvish wrote Expire: Never; one image's summary is set to an expiry long past
    first = bank / "root" / "2026-1124-0300" / "summary"
    assert "Expire: Never" in first.read_text()
    first.write_text(first.read_text().replace("Expire: Never", "Expire: +15 days == 2026-11-09 03:00:00"))

    assert main(["doctor", "--root", str(root), "--bank", str(bank), "--config", str(conf / "master.conf"),
                 "--nights", "2", "--json"]) == FINDINGS
    found = {f["code"]: f for f in json.loads(capsys.readouterr().out)["findings"]}
    assert set(found) == {"updatedb-indexes-bank", "logrotate-no-dateext", "no-capture-hook", "no-xattrs-acls",
                          "changes-every-night", "mbox-changes-nightly", "expire-not-running", "never-expire", "no-disklabel"}
    assert found["expire-not-running"]["evidence"] == "root/2026-1124-0300 expired on 2026-11-09 03:00:00 " \
        "(its summary's Expire:)"
    assert "2 image(s) say Expire: Never" in found["never-expire"]["evidence"]
    assert str(bank) in found["updatedb-indexes-bank"]["what"]
    assert 'PRUNEPATHS="/var/spool /media"' in found["updatedb-indexes-bank"]["evidence"]
    # the third night renamed syslog.1 -> syslog.2 and syslog -> syslog.1: both stored anew, 30,000 bytes each
    tree = bank / "root" / "2026-1126-0300" / "tree" / "var" / "log"
    expect = sum((tree / n).lstat().st_blocks * 512 for n in ("syslog.1", "syslog.2"))
    assert found["logrotate-no-dateext"]["cost_bytes"] == expect and expect >= 60_000
    assert "2 rotated log(s)" in found["logrotate-no-dateext"]["evidence"]
    assert "vault root" in found["no-capture-hook"]["what"]
    assert "xattrs and ACLs" in found["no-xattrs-acls"]["what"]

    newest = bank / "root" / "2026-1126-0300" / "tree"
    size = {n: (newest / n).lstat().st_blocks * 512
            for n in ("var/mail/root", "var/lib/db/main.db", "var/log/syslog")}
    changers = found["changes-every-night"]
    # biggest first; the unchanged hostname and the rotated syslog.2 (new only last night) are not there
    assert changers["evidence"] == "; ".join(f"/{n} {size[n]} bytes" for n in
                                             ("var/mail/root", "var/lib/db/main.db", "var/log/syslog"))
    assert "3 file(s)" in changers["what"] and changers["cost_bytes"] == sum(size.values())
    assert found["mbox-changes-nightly"]["cost_bytes"] == size["var/mail/root"]
    assert "/var/mail/root" in found["mbox-changes-nightly"]["what"]

    assert main(["doctor", "--root", str(root), "--bank", str(bank), "--config", str(conf / "master.conf")]) \
        == FINDINGS
    text = capsys.readouterr().out
    assert "costs the bank: " in text and "fix: add 'dateext'" in text


def test_a_clean_machine_gives_no_finding(tmp_path, capsys):
    """The bank lies on a backup filesystem of its own (a tmpfs here) with its DISKLABEL."""
    disk = tmp_path / "backup"
    disk.mkdir()
    run(["mount", "-t", "tmpfs", "-o", "size=16m", "rescue-test-backup", str(disk)])
    try:
        (disk / "DISKLABEL").write_text("BACKUP-1\n")
        clean_machine(tmp_path, disk / "dirvish", capsys)
    finally:
        run(["umount", str(disk)])


def clean_machine(tmp_path, bank, capsys):
    root, conf = tmp_path / "machine", tmp_path / "conf"
    machine(root, bank, clean=True)
    conf.mkdir()
    (conf / "master.conf").write_text(f"bank:\n\t{bank}\npost-server: /usr/bin/rescue capture\n"
                                      "expire-default: +30 days\n")
    (bank / "root" / "dirvish").mkdir(parents=True)
    (bank / "root" / "dirvish" / "default.conf").write_text(
        f"client: {socket.gethostname()}\ntree: {root}\nrsync-option:\n\t--xattrs\n\t-A\n")
    assert main(["doctor", "--root", str(root), "--config", str(conf / "master.conf")]) == Exit.OK
    out = capsys.readouterr().out.splitlines()
    assert out[-1].startswith("no findings"), out
    if (bank.parent / "DISKLABEL").is_file():  # which disk, and when a backup last wrote to it (no image yet)
        assert out[0] == f"bank {bank}: backup disk BACKUP-1, last written never (no good image)", out


@pytest.fixture
def sshd_extra(tmp_path: Path) -> str:
    """The client behind the test's sshd sees the test machine's etc/ as its /etc (a private mount
    namespace per session), so `doctor --ssh` reads the test's files, never this host's."""
    client_etc = tmp_path / "client" / "etc"
    client_etc.mkdir(parents=True)
    script = tmp_path / "client-session"
    script.write_text("#!/bin/sh\nexec unshare --mount --propagation private sh -c "
                      f"'mount --bind {client_etc} /etc && exec sh -c \"$SSH_ORIGINAL_COMMAND\"'\n")
    script.chmod(0o755)
    return f"ForceCommand {script}\n"


def test_doctor_over_ssh_reads_the_clients_logrotate_and_weighs_it_by_its_images(tmp_path, sshd, capsys):
    root, bank, conf = tmp_path / "machine", tmp_path / "bank", tmp_path / "conf"
    machine(root, bank, clean=False)
    conf.mkdir()
    (conf / "master.conf").write_text(f"bank:\n\t{bank}\nimage-default: %Y-%m%d-%H%M\n")
    (bank / "root" / "dirvish").mkdir(parents=True)
    client = socket.gethostname()
    (bank / "root" / "dirvish" / "default.conf").write_text(f"client: {client}\ntree: {root}\nindex: none\n")
    dirvish(conf, "--vault", "root", "--init", "--image", "2026-1124-0300")
    rotate(root / "var" / "log" / "syslog", 1)
    dirvish(conf, "--vault", "root", "--image", "2026-1125-0300")
    server = tmp_path / "server"  # the backup server's root: its updatedb.conf prunes the bank
    (server / "etc").mkdir(parents=True)
    (server / "etc" / "updatedb.conf").write_text(f'PRUNEPATHS="{bank}"\n')
    client_etc = tmp_path / "client" / "etc"
    args = ["doctor", "--ssh", "laptop", "--ssh-command", str(sshd.ssh), "--client", client, "--root", str(server),
            "--bank", str(bank), "--config", str(conf / "master.conf"), "--json"]

    # the client rotates without dateext: found, named by host, and weighed by the client's own images
    (client_etc / "logrotate.conf").write_text("weekly\nrotate 4\n")
    assert main(args) == FINDINGS
    report = json.loads(capsys.readouterr().out)
    found = {f["code"]: f for f in report["findings"]}
    summary = (bank / "root" / "2026-1125-0300" / "summary").read_text()
    when = re.search(r"^Image-now: (\S+) (\S+)$", summary, re.M)
    assert report["disks"] == [{"bank": str(bank), "disklabel": None, "last_written": f"{when[1]}T{when[2]}"}]
    assert "updatedb-indexes-bank" not in found  # the server prunes the bank; the client's updatedb never sees it
    rot = found["logrotate-no-dateext"]
    assert rot["evidence"].startswith("laptop:/etc/logrotate.conf: no dateext; image 2026-1125-0300 stored "
                                      "1 rotated log(s)"), rot["evidence"]  # syslog.1: last night's syslog
    tree = bank / "root" / "2026-1125-0300" / "tree" / "var" / "log"
    assert rot["cost_bytes"] == (tree / "syslog.1").lstat().st_blocks * 512 > 0

    # with dateext on the client (the test machine's own logrotate.conf still lacks it): no such finding
    (client_etc / "logrotate.conf").write_text("weekly\nrotate 4\ndateext\n")
    main(args)
    assert "logrotate-no-dateext" not in {f["code"] for f in json.loads(capsys.readouterr().out)["findings"]}

    # a client the bank does not back up: a clear refusal, not an empty report
    assert main([*args[:5], "--client", "other", *args[7:]]) != Exit.OK
    out = capsys.readouterr()
    assert "no vault in" in out.err and "backs up the client other" in out.err and "--client NAME" in out.err, out
    assert '"findings"' not in out.out
