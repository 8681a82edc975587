"""rescue doctor's readers on fabricated files: rsync options, PRUNEPATHS, dateext."""

from __future__ import annotations

from pathlib import Path

from rescue.backups.doctor import _keeps, dirvish_findings, logrotate_findings, updatedb_findings


def test_xattrs_and_acls_in_long_and_bundled_short_options():
    assert _keeps(["-aAX"], "--acls", "A") and _keeps(["-aAX"], "--xattrs", "X")
    assert _keeps(["--xattrs"], "--xattrs", "X") and not _keeps(["--xattrs"], "--acls", "A")
    assert not _keeps(["--exclude=A"], "--acls", "A")  # a long option's value is no short flag


def test_hook_found_in_the_vault_or_master_conf(tmp_path: Path):
    bank = tmp_path / "bank"
    for vault, hook in (("root", "post-server: /usr/local/bin/rescue capture\n"), ("home", "")):
        (bank / vault / "dirvish").mkdir(parents=True)
        (bank / vault / "dirvish" / "default.conf").write_text(f"tree: /\n{hook}rsync-option:\n\t-X\n\t--acls\n")
    codes = [(f.code, f.what.split(":")[0]) for f in dirvish_findings(None, bank)]
    assert codes == [("no-capture-hook", "vault home")]
    master = tmp_path / "master.conf"
    master.write_text("post-server: rescue capture\n")
    assert dirvish_findings(master, bank) == []


def test_prunepaths_covers_the_bank_or_a_folder_above_it(tmp_path: Path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "updatedb.conf").write_text('PRUNEPATHS="/tmp /backup"\n')
    assert updatedb_findings(tmp_path, ["/backup/dirvish", "/backup"]) == []
    [f] = updatedb_findings(tmp_path, ["/backups/dirvish"])  # /backups is not below /backup
    assert f.code == "updatedb-indexes-bank" and 'PRUNEPATHS="/tmp /backup"' in f.evidence
    assert updatedb_findings(tmp_path / "nothing-installed", ["/backup"]) == []


def test_dateext_anywhere_at_the_start_of_a_line(tmp_path: Path):
    (tmp_path / "etc").mkdir()
    conf = tmp_path / "etc" / "logrotate.conf"
    conf.write_text("weekly\n# dateext\n")
    assert [f.code for f in logrotate_findings(tmp_path)] == ["logrotate-no-dateext"]
    conf.write_text("weekly\ndateext\n")
    assert logrotate_findings(tmp_path) == []


def test_mount_points_in_no_vault_are_a_finding():
    from rescue.backups.doctor import unheld_findings

    assert unheld_findings("web", ()) == []
    [f] = unheld_findings("web", ("/home", "/var"))
    assert f.code == "mount-not-backed-up" and "machine web: 2 mount point(s)" in f.what
    assert "/home, /var" in f.evidence


def test_prunefs_of_the_banks_filesystem_type_leaves_it_alone(tmp_path: Path):
    from rescue.backups.doctor import fstype_of

    kind = fstype_of(tmp_path)
    assert kind, "the filesystem of a test folder has a type in /proc/self/mounts"
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "updatedb.conf").write_text(f'PRUNEFS="nfs {kind.upper()}"\nPRUNEPATHS="/tmp"\n')
    assert updatedb_findings(tmp_path, [str(tmp_path / "bank")]) == []
    (tmp_path / "etc" / "updatedb.conf").write_text('PRUNEFS="nfs"\nPRUNEPATHS="/srv"\n')
    assert [f.code for f in updatedb_findings(tmp_path, [str(tmp_path / "bank")])] == ["updatedb-indexes-bank"]


def test_client_without_ssh_is_refused_before_anything_is_read(tmp_path: Path, capsys):
    from rescue.cli import main
    from rescue.errors import Exit

    assert main(["doctor", "--client", "laptop", "--root", str(tmp_path)]) != Exit.OK
    assert "--client goes with --ssh" in capsys.readouterr().err


def test_the_clients_files_are_copied_under_their_own_paths(tmp_path: Path):
    """fetch_client_files asks for each file with plain cat and keeps every byte; a missing one is skipped."""
    from rescue.backups.doctor import CLIENT_FILES, fetch_client_files
    from rescue.run import Result

    asked = []

    def runner(argv, ok=(0,)):
        asked.append(list(argv))
        return Result(tuple(argv), 0, "weekly\n\xe9\n", "") if argv[-1] == "/etc/logrotate.conf" else \
            Result(tuple(argv), 1, "", "No such file")

    assert fetch_client_files(runner, tmp_path) == ["/etc/logrotate.conf"]
    assert asked == [["cat", "--", p] for p in CLIENT_FILES]
    assert (tmp_path / "etc" / "logrotate.conf").read_bytes() == b"weekly\n\xe9\n"
