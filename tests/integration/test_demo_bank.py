"""The shared harness itself: a demo machine backed up twice by real dirvish, with the capture hook."""

from __future__ import annotations

import datetime
import os
import re
from pathlib import Path

from rescue.demo import ODD_GID, ODD_UID, DemoMachine, diff_trees, make_bank, snapshot
from rescue.layout import load_layout


def test_dirvish_bank_of_a_demo_machine(tmp_path: Path) -> None:
    # a % in the path: dirvish passes hook lines through strftime, so the hook must say %%
    with DemoMachine(tmp_path / "machine-100%d", label="gpt", home_fs="xfs") as m:
        etc_before = {p.name: p.stat().st_mtime_ns for p in Path("/etc/dirvish").iterdir()}
        bank = make_bank(m, tmp_path / "bank", images=("2026-1125-0300", "2026-1126-0300"))
        assert {p.name: p.stat().st_mtime_ns for p in Path("/etc/dirvish").iterdir()} == etc_before
        assert bank.vaults == (("root", "/"), ("home", "/home"), ("tmp", "/tmp"))
        for vault, mountpoint in bank.vaults:
            first, second = (bank.image_dir(vault, i) for i in bank.images)
            for image in (first, second):
                summary = (image / "summary").read_text()
                assert "Status: success" in summary and f"tree: {m.dir_of(mountpoint)}" in summary
                lay = load_layout(image)
                assert lay is not None and lay.source == "capture" and lay.root == str(m.root)
                assert lay.filesystem_at(mountpoint).uuid == m.partition(mountpoint).uuid
            assert "--init" not in (second / "summary").read_text()
            # the second night hard-links what did not change
            a = first / "tree" / "etc" / "fstab" if vault == "root" else first / "tree"
            if vault == "root":
                assert os.stat(a).st_ino == os.stat(second / "tree" / "etc" / "fstab").st_ino
            # everything the corpus holds survived dirvish (xattrs, ACLs, hard links, sparse, odd names)
            # what the vault's real-world exclude list leaves out is not in the image, the rest is
            left_out = [n for n in ("lost+found", "tmp") if (m.dir_of(mountpoint) / n).exists()
                        and (n == "lost+found" or mountpoint == "/")]
            assert mountpoint != "/" or left_out == ["lost+found", "tmp"]
            assert not any((second / "tree" / n).exists() for n in left_out)
            assert diff_trees(m.dir_of(mountpoint), second / "tree", sparse=True, exclude=left_out) == []
        corpus = snapshot(bank.image_dir("home") / "tree" / "corpus")
        odd = corpus.entries[b"odd-dir"]
        assert (odd.mode, odd.uid, odd.gid) == (0o2750, ODD_UID, ODD_GID)
        assert corpus.entries[b"names/latin1-caf\xe9"].kind == "file"
        assert any(k == "system.posix_acl_access" for k, _ in corpus.entries[b"acl-file"].xattrs)
        assert frozenset({b"links/hard-a", b"links/hard-b", b"links/sub/hard-c"}) in corpus.hardlinks
        tmp_top = snapshot(bank.image_dir("tmp") / "tree").entries[b"."]
        assert tmp_top.mode == 0o1777

        disk = m.disk
        m.detach_keep_image()
        assert m.disk is None and not any(disk + "p" in line for line in Path("/proc/mounts").read_text().splitlines())
        assert m.image.is_file() and m.partition("/home").uuid  # facts stay on record


def test_diff_trees_sees_what_a_naive_copy_loses(tmp_path: Path) -> None:
    with DemoMachine(tmp_path / "m", corpus=True) as m:
        src = m.dir_of("/home") / "corpus"
        naive = tmp_path / "naive"
        os.system(f"cp -r {src} {naive}")  # no -a: modes, owners, links, xattrs lost
        problems = "\n".join(diff_trees(src, naive, sparse=True))
        for words in ("odd-dir: owner", "hard links not kept together", "xattrs", "mtime"):
            assert words in problems, words


SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "nightly-backup"


def test_nightly_backup_script_mounts_logs_runs_and_always_unmounts(tmp_path: Path) -> None:
    """scripts/nightly-backup with real mount -L, DISKLABEL, dirvish-runall and the capture hook."""
    import secrets

    from rescue.demo import run_dirvish
    from rescue.devices import loop_disk
    from rescue.run import run

    label = "RB" + secrets.token_hex(4)  # unique: mount -L must find only our disk
    mnt, drivelog = tmp_path / "backup", tmp_path / "drivelog"
    with DemoMachine(tmp_path / "m", corpus=False) as m, loop_disk(tmp_path / "backup.img", 512 * 1024**2) as dev:
        run(["mkfs.ext4", "-q", "-L", label, dev])
        mnt.mkdir()
        run(["mount", dev, mnt])
        try:
            (mnt / "DISKLABEL").write_text("backup-disk-A\n")
            bank = make_bank(m, mnt / "dirvish", images=("2000-0101-0300",), confdir=tmp_path / "etc-dirvish")
        finally:
            run(["umount", mnt])

        def nightly(*settings: str):
            check = (
                f'env BACKUP_LABEL={label} BACKUP_MOUNT={mnt} BACKUP_DRIVELOG={drivelog} {" ".join(settings)} '
                f'sh {SCRIPT}; rc=$?; if mountpoint -q {mnt}; then echo STILL-MOUNTED; fi; exit $rc'
            )
            # keep: the bank is on the backup disk the script mounts itself, so the
            # machine's trees cannot be found through master.conf beforehand
            return run_dirvish(bank.confdir, ["sh", "-c", check], keep=(m.root,), check=False)

        r = nightly()
        assert r.returncode == 0, r.stderr
        assert "STILL-MOUNTED" not in r.stdout
        (line,) = drivelog.read_text().splitlines()
        assert line.startswith("backup-disk-A ") and str(datetime.date.today().year) in line

        r = nightly("DIRVISH_RUNALL=false")
        assert r.returncode != 0 and "STILL-MOUNTED" not in r.stdout
        assert "failed" in r.stderr
        assert len(drivelog.read_text().splitlines()) == 2

        run(["mount", "-o", "ro", dev, mnt])
        try:
            for vault, _ in bank.vaults:
                images = sorted(p.name for p in (mnt / "dirvish" / vault).iterdir() if p.name != "dirvish")
                assert len(images) == 2 and images[0] == "2000-0101-0300", images
                assert (mnt / "dirvish" / vault / images[1] / "rescue" / "layout.json").is_file()
        finally:
            run(["umount", mnt])


def test_dirvish_namespace_keeps_its_trees_and_lets_go_of_other_mounts(tmp_path: Path) -> None:
    """run_dirvish's private namespace must not hold other tests' loop filesystems busy."""
    from rescue.demo import run_dirvish
    from rescue.demo.dirvish import write_master_conf, write_vault_conf
    from rescue.devices import loop_disk
    from rescue.run import run

    other = tmp_path / "someone-elses-mount"
    other.mkdir()
    with DemoMachine(tmp_path / "m", corpus=False) as m, loop_disk(tmp_path / "other.img", 64 * 1024**2) as dev:
        run(["mkfs.ext4", "-q", dev])
        run(["mount", dev, other])
        try:
            bank = tmp_path / "bank"
            write_master_conf(tmp_path / "etc", bank, ["home"])
            write_vault_conf(bank, "home", client="localhost", tree=m.dir_of("/home"), hook=None, rsync_options=())
            seen = run_dirvish(tmp_path / "etc", ["sh", "-c", "findmnt -rn -o TARGET; cat /etc/dirvish/master.conf"]).stdout
        finally:
            run(["umount", other])
        targets = set(seen.split())
        assert str(m.dir_of("/home")) in targets and str(m.root) in targets
        assert str(other) not in targets
        assert f"\t{bank}" in seen  # the private master.conf, not the host's


def test_the_master_conf_example_works_with_real_dirvish(tmp_path: Path) -> None:
    """scripts/dirvish-master.conf.example, with this run's paths, drives a real backup and capture."""
    from rescue.demo import rescue_command, run_dirvish
    from rescue.demo.dirvish import hook_line, write_vault_conf

    example = (SCRIPT.parent / "dirvish-master.conf.example").read_text()
    assert "\tpost-server: " not in example and "\npost-server: /usr/local/bin/rescue capture\n" in example
    bank = tmp_path / "bank"
    conf = example.replace("\t/backup/dirvish\n", f"\t{bank}\n")
    conf = conf.replace("/usr/local/bin/rescue capture", hook_line([*rescue_command(), "capture"]))
    conf = conf.replace("\tlaptop-root\t03:00\n\tlaptop-home\t03:00\n", "\thome\n")
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "master.conf").write_text(conf)
    with DemoMachine(tmp_path / "m", corpus=False) as m:
        # the vault names only client and tree: everything else comes from the example
        write_vault_conf(bank, "home", client="localhost", tree=m.dir_of("/home"), hook=None, rsync_options=())
        r = run_dirvish(etc, ["dirvish", "--vault", "home", "--init", "--image", "2026-1126-0300"], check=False)
        assert r.returncode == 0, r.stderr
        image = bank / "home" / "2026-1126-0300"
        summary = (image / "summary").read_text()
        assert "Status: success" in summary and "\t--acls\n" in summary and "\t--xattrs\n" in summary
        # the expire rules parsed: a weekday gets the default, a Monday one of the rules
        assert re.search(r"Expire: \+(15 days|3 months|1 year) == 20", summary), summary
        assert (image / "rescue" / "layout.json").is_file(), (image / "log").read_text()[-800:]
        assert diff_trees(m.dir_of("/home"), image / "tree", exclude=["lost+found"]) == []
