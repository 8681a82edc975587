"""Read errors in the backup: a restore gives back what it can and says it is incomplete.

This build machine's kernel has no device-mapper (`dmsetup version`: "Failure
to communicate with kernel device-mapper driver"; no dm_mod module), so the
bad sectors are made another real way here: the bank sits on a btrfs
filesystem (loop device) and one 4 KiB data block of each chosen file is
overwritten in the image file. btrfs checks every data block's checksum, so
reading those files fails with EIO exactly as a bad sector does, while
everything else reads fine. (tests/vm/test_faults_read_errors.py uses a real
device-mapper `error` target inside the rescue system.)

The real `rescue restore` of the demo machine (real dirvish bank) runs from
that bank, mounted read-only from a read-only loop device, onto a loop disk:
- it exits 7 (INCOMPLETE), never 0; the report says INCOMPLETE, never OK;
- the report lists exactly the unreadable files, by their path in their
  filesystem (/home: damaged/photo 1.jpg), not cp/rsync's lines;
- verify names them instead of failing;
- every other file is restored equal (metadata by diff_trees, content by
  sha256), and the unreadable ones are absent (no half-written copies);
- a rerun of the same command says the same (7, the same list);
- the bytes of the backup's device are unchanged.
A second bank holds an unreadable file with two names (a hard link): cp leaves
a partial copy under both, and rsync -H (3.5.0 here) then waited forever for
it; the restore must end, INCOMPLETE, listing both names. A third holds a
folder that cannot even be looked at (made a btrfs subvolume of its own, whose
tree block is damaged): the copy's planning must not stop on it; the restore
ends INCOMPLETE naming the folder once, everything beside it restored.
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rescue.demo import DemoMachine, diff_trees, make_bank
from rescue.demo.dirvish import REAL_WORLD_EXCLUDES

# These restores finish their copies with rsync --delete, which tries to remove the /tmp mount
# point when the root image left /tmp out (rmdir: busy, one more "problem" in the report):
# a known gap of the copy step (issue 14 follow-up); here the root vault keeps the mount point.
EXCLUDES = tuple(e for e in REAL_WORLD_EXCLUDES if e != "/tmp/")
from rescue.devices import loop_disk, partition_path
from rescue.errors import Aborted, Exit
from rescue.formats.units import sha256_file
from rescue.run import run

MiB = 1 << 20
GiB = 1 << 30
BLOCK = 4096
# (mountpoint, path in that filesystem): the files whose first data block goes bad
DAMAGED = (("/home", "damaged/photo 1.jpg"), ("/home", "damaged/café.txt"), ("/", "srv/blob.bin"))
NEIGHBOURS = (("/home", "damaged/ok.bin"), ("/", "srv/ok.bin"))


def marker(rel: str) -> bytes:
    return b"RESCUE-BAD-BLOCK:" + hashlib.sha256(rel.encode()).hexdigest()[:32].encode()




def damage(image: Path, rels: list[str]) -> None:
    """Overwrite the first data block of each file (found by its unique marker) in the btrfs image."""
    with open(image, "r+b") as f, mmap.mmap(f.fileno(), 0) as mm:
        for rel in rels:
            hits = []
            at = mm.find(marker(rel))
            while at >= 0:
                hits.append(at)
                at = mm.find(marker(rel), at + 1)
            assert len(hits) == 1 and hits[0] % BLOCK == 0, f"{rel}: marker at {hits}"
            mm[hits[0]:hits[0] + BLOCK] = b"\xde\xad" * (BLOCK // 2)
        mm.flush()


def backup_partition(tmp: Path, bank, *mkfs_options: str, then=None) -> Path:
    """The backup partition: btrfs in an image file (a loop device while filled), the bank
    copied onto it as a person would; `then(bank_dir)` changes it before the unmount."""
    fs_image = tmp / "backup-btrfs.img"
    with loop_disk(fs_image, 768 * MiB) as dev:
        run(["mkfs.btrfs", "-q", *mkfs_options, dev])
        mnt = tmp / "fill"
        mnt.mkdir()
        run(["mount", dev, str(mnt)])
        try:
            run(["cp", "-a", str(bank.bank), str(mnt / "dirvish")])
            if then:
                then(mnt / "dirvish")
        finally:
            run(["umount", str(mnt)])
    return fs_image


@pytest.fixture(scope="module")
def bad_bank(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("readerr")
    with DemoMachine(tmp / "machine") as m:
        for mountpoint, rel in DAMAGED + NEIGHBOURS:
            path = m.dir_of(mountpoint) / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(marker(rel) + os.urandom(64 * 1024))
        bank = make_bank(m, tmp / "bank", images=("2026-1126-0300",), excludes=EXCLUDES)
        parts = list(m.partitions)
        m.detach_keep_image()
    fs_image = backup_partition(tmp, bank, "-L", "BADBACKUP")
    damage(fs_image, [rel for _, rel in DAMAGED])
    yield {"bank": bank, "parts": parts, "image": fs_image, "tmp": tmp}


@contextlib.contextmanager
def backup_mounted(bank: dict) -> Iterator[Path]:
    """The bank's backup partition mounted read-only (from a read-only loop device) at tmp/backup."""
    where = bank["tmp"] / "backup"
    where.mkdir(exist_ok=True)
    dev = run(["losetup", "--find", "--show", "--read-only", str(bank["image"])]).stdout.strip()
    try:
        run(["mount", "-t", "btrfs", "-o", "ro", dev, str(where)])
        try:
            yield where
        finally:
            run(["umount", str(where)], check=False)
    finally:
        run(["losetup", "-d", dev], check=False)


def restore(bank_dir: Path, client: str, target: str, state: Path) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-u", "-m", "rescue", "restore", "--bank", str(bank_dir), "--client", client,
            "--target", target, "--state-dir", str(state), "--yes"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=900)


def report_of(out: str) -> str:
    assert "rescue restore report" in out, out[-3000:]
    return out[out.index("rescue restore report"):]


def listed(report: str) -> dict[str, list[str]]:
    """The 'not restored' section: {mountpoint: [paths]}."""
    m = re.search(r"^not restored, the backup could not be read.*?\n((?:  .*\n)+)", report, re.M)
    assert m, report
    out: dict[str, list[str]] = {}
    where = ""
    for line in m.group(1).splitlines():
        if line.startswith("    "):
            out[where].append(line.strip())
        else:
            where = line.strip().split(" (vault")[0]
            out[where] = []
    return out


def test_unreadable_files_are_listed_and_the_restore_is_incomplete(bad_bank):
    tmp = bad_bank["tmp"]
    bank = bad_bank["bank"]
    before = sha256_file(bad_bank["image"])
    want = {}
    for mountpoint, rel in DAMAGED:
        want.setdefault(mountpoint, []).append(rel)
    with backup_mounted(bad_bank) as mnt:
        bank_dir = mnt / "dirvish"
        with open(bank_dir / bank.vault_of("/home") / "2026-1126-0300" / "tree" / "damaged" / "ok.bin", "rb") as f:
            assert f.read()  # the neighbour reads; the damaged ones do not:
        for mountpoint, rel in DAMAGED:
            with pytest.raises(OSError):
                (bank_dir / bank.vault_of(mountpoint) / "2026-1126-0300" / "tree" / rel).read_bytes()

        with loop_disk(tmp / "target.img", GiB) as target:
            first = restore(bank_dir, bank.client, target, tmp / "state")
            out = first.stdout + first.stderr
            assert first.returncode == Exit.INCOMPLETE, out[-5000:]
            report = report_of(first.stdout)
            assert re.search(r"^result:   INCOMPLETE: 3 file\(s\) could not be read", report, re.M), report
            assert "result:   OK" not in report and "success" not in report.lower(), report
            assert {k: sorted(v) for k, v in listed(report).items()} == {k: sorted(v) for k, v in want.items()}
            # verify named them, and called nothing else a difference
            assert "MISMATCH" not in report, report
            for mountpoint, rels in want.items():
                line = next(ln for ln in report.splitlines() if f"tree {mountpoint}: equal to vault" in ln)
                assert f"except {len(rels)} file(s) the backup could not give back" in line, line
                assert all(r in line for r in rels), line
            # the copy's note names files, not cp/rsync lines
            assert "rsync:" not in report and "cp: " not in report, report
            kept = next(tmp.joinpath("state").rglob("restore-*.txt"))
            assert "INCOMPLETE" in kept.read_text()

            compare_restored(bad_bank, target, tmp / "cmp", bank_dir, want)

            again = restore(bank_dir, bank.client, target, tmp / "state")
            out2 = again.stdout + again.stderr
            assert again.returncode == Exit.INCOMPLETE, out2[-5000:]
            report2 = report_of(again.stdout)
            # an INCOMPLETE restore finished: a new one starts over (issue 14, point 4) and meets
            # the same unreadable files again
            assert "every step runs again" in again.stdout and "done already" not in again.stdout, out2[-5000:]
            assert {k: sorted(v) for k, v in listed(report2).items()} == {k: sorted(v) for k, v in want.items()}
            assert "result:   INCOMPLETE" in report2, report2
    assert sha256_file(bad_bank["image"]) == before, "the backup device's bytes changed"


def compare_restored(bad_bank, target: str, where: Path, bank_dir: Path, want: dict[str, list[str]],
                     neighbours: tuple[tuple[str, str], ...] = NEIGHBOURS) -> None:
    """Every readable file equal (metadata and content); the unreadable ones absent."""
    where.mkdir(exist_ok=True)
    for p in sorted((p for p in bad_bank["parts"] if p.mountpoint), key=lambda p: len(p.mountpoint)):
        opts = "ro,norecovery,nouuid" if p.fstype == "xfs" else "ro,noload" if p.fstype.startswith("ext") else "ro"
        run(["mount", "-t", p.fstype, "-o", opts, partition_path(target, p.number), str(where)])
        try:
            bad = want.get(p.mountpoint, [])
            for rel in bad:
                assert not os.path.lexists(where / rel), f"{p.mountpoint}: {rel} is there (half-written?)"
            exclude = [*bad, *(["lost+found"] if p.fstype.startswith("ext") else [])]
            if p.mountpoint == "/":
                exclude += ["proc", "sys", "dev", "run", "var"]
            tree = bank_dir / p.vault / "2026-1126-0300" / "tree"
            assert diff_trees(tree, where, times=True, exclude=exclude) == [], p.mountpoint
            skip = set(exclude)
            differ = []
            for dirpath, dirnames, filenames in os.walk(tree):
                rel_dir = os.path.relpath(dirpath, tree)
                dirnames[:] = [d for d in dirnames if os.path.normpath(os.path.join(rel_dir, d)) not in skip]
                for n in filenames:
                    rel = os.path.normpath(os.path.join(rel_dir, n))
                    src = Path(dirpath) / n
                    if rel in skip or src.is_symlink() or not src.is_file():
                        continue
                    if sha256_file(src) != sha256_file(where / rel):
                        differ.append(rel)
            assert differ == [], f"{p.mountpoint}: content differs: {differ[:10]}"
            for mountpoint, rel in neighbours:
                if mountpoint == p.mountpoint:
                    assert (where / rel).read_bytes().startswith(marker(rel))
        finally:
            run(["umount", str(where)])


LINKED = ("/home", "linked/a.bin")
LINKED_TWIN = "linked/sub/b.bin"


@pytest.fixture(scope="module")
def linked_bank(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("readerr-linked")
    with DemoMachine(tmp / "machine") as m:
        top = m.dir_of("/home")
        (top / "linked" / "sub").mkdir(parents=True)
        (top / LINKED[1]).write_bytes(marker(LINKED[1]) + os.urandom(64 * 1024))
        os.link(top / LINKED[1], top / LINKED_TWIN)
        bank = make_bank(m, tmp / "bank", images=("2026-1126-0300",), excludes=EXCLUDES)
        parts = list(m.partitions)
        m.detach_keep_image()
    fs_image = backup_partition(tmp, bank)
    damage(fs_image, [LINKED[1]])
    yield {"bank": bank, "parts": parts, "image": fs_image, "tmp": tmp}


def test_an_unreadable_hard_linked_file_does_not_hang_the_restore(linked_bank):
    tmp = linked_bank["tmp"]
    bank = linked_bank["bank"]
    with backup_mounted(linked_bank) as mnt:
        with loop_disk(tmp / "target.img", GiB) as target:
            argv = [sys.executable, "-u", "-m", "rescue", "restore", "--bank", str(mnt / "dirvish"),
                    "--client", bank.client, "--target", target, "--state-dir", str(tmp / "state"), "--yes"]
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            try:
                out, _ = proc.communicate(timeout=180)  # about 20 s when it works
            except subprocess.TimeoutExpired:
                proc.terminate()  # like Ctrl-C: the copy is ended, the mounts released
                out, _ = proc.communicate(timeout=120)
                raise AssertionError("the restore hung on the unreadable hard-linked file:\n" + out[-3000:])
            assert proc.returncode == Exit.INCOMPLETE, out[-5000:]
            report = report_of(out)
            assert listed(report) == {"/home": sorted([LINKED[1], LINKED_TWIN])}, report
            compare_restored(linked_bank, target, tmp / "cmp", mnt / "dirvish",
                             {"/home": [LINKED[1], LINKED_TWIN]}, neighbours=())


DIR = ("/home", "damaged-dir")  # a folder of the backup that cannot even be looked at
DIR_ENTRY = b"RESCUE-DIR-ENTRY-"
DIR_NEIGHBOUR = ("/home", "damaged-dir-neighbour/ok.bin")
NODE = 16384  # mkfs.btrfs's default node size


def damage_folder(image: Path, name: bytes) -> int:
    """Overwrite (past the header) every btrfs tree block of `image` that holds `name`: the
    folder made a subvolume of its own holds its entries in blocks no other file shares.
    Only blocks that are tree blocks of this filesystem (its fsid in the header) are hit,
    never a file's data. Returns how many live or stale blocks were hit."""
    with open(image, "r+b") as f, mmap.mmap(f.fileno(), 0) as mm:
        fsid = mm[0x10000 + 0x20:0x10000 + 0x30]  # the superblock at 64 KiB
        nodes = set()
        at = mm.find(name)
        while at >= 0:
            node = at - at % NODE
            if mm[node + 0x20:node + 0x30] == fsid:
                nodes.add(node)
            at = mm.find(name, at + 1)
        for node in nodes:
            mm[node + 0x65:node + NODE] = b"\xde" * (NODE - 0x65)
        mm.flush()
    return len(nodes)


@pytest.fixture(scope="module")
def folder_bank(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("readerr-folder")
    with DemoMachine(tmp / "machine") as m:
        top = m.dir_of(DIR[0])
        (top / DIR[1] / "inner").mkdir(parents=True)
        for i in range(5):
            (top / DIR[1] / f"{DIR_ENTRY.decode()}{i}").write_bytes(os.urandom(2048))
        (top / DIR[1] / "inner" / "deep.txt").write_text("below the damage\n")
        neighbour = top / DIR_NEIGHBOUR[1]
        neighbour.parent.mkdir()
        neighbour.write_bytes(marker(DIR_NEIGHBOUR[1]) + os.urandom(4096))
        bank = make_bank(m, tmp / "bank", images=("2026-1126-0300",), excludes=EXCLUDES)
        parts = list(m.partitions)
        m.detach_keep_image()

    def own_subvolume(bank_dir: Path) -> None:
        folder = bank_dir / bank.vault_of(DIR[0]) / "2026-1126-0300" / "tree" / DIR[1]
        sub = folder.with_name(".subvolume")
        run(["btrfs", "-q", "subvolume", "create", str(sub)])
        run(["cp", "-a", f"{folder}/.", f"{sub}/"])
        run(["cp", "-a", "--attributes-only", "--no-target-directory", str(folder), str(sub)])
        run(["rm", "-rf", str(folder)])
        run(["mv", str(sub), str(folder)])

    # single metadata: with the default second copy btrfs would read that one instead
    fs_image = backup_partition(tmp, bank, "-m", "single", then=own_subvolume)
    assert damage_folder(fs_image, DIR_ENTRY) >= 1
    yield {"bank": bank, "parts": parts, "image": fs_image, "tmp": tmp}


def test_an_unreadable_folder_is_listed_and_the_rest_restored(folder_bank):
    tmp = folder_bank["tmp"]
    bank = folder_bank["bank"]
    before = sha256_file(folder_bank["image"])
    with backup_mounted(folder_bank) as mnt:
        bank_dir = mnt / "dirvish"
        tree = bank_dir / bank.vault_of(DIR[0]) / "2026-1126-0300" / "tree"
        with pytest.raises(OSError):
            os.lstat(tree / DIR[1])  # the folder cannot be looked at; its neighbour reads
        assert (tree / DIR_NEIGHBOUR[1]).read_bytes().startswith(marker(DIR_NEIGHBOUR[1]))
        with loop_disk(tmp / "target.img", GiB) as target:
            first = restore(bank_dir, bank.client, target, tmp / "state")
            out = first.stdout + first.stderr
            assert first.returncode == Exit.INCOMPLETE, out[-5000:]
            report = report_of(first.stdout)
            assert re.search(r"^result:   INCOMPLETE: 1 folder\(s\) could not be read", report, re.M), report
            assert "a name ending in / is a folder, nothing under it restored" in report, report
            assert listed(report) == {DIR[0]: [DIR[1] + "/"]}, report
            line = next(ln for ln in report.splitlines() if f"tree {DIR[0]}: equal to vault" in ln)
            assert f"except 1 folder(s) the backup could not give back (not restored): {DIR[1]}/" in line, line
            assert "MISMATCH" not in report, report
            assert "rsync:" not in report and "cp: " not in report, report
            compare_restored(folder_bank, target, tmp / "cmp", bank_dir, {DIR[0]: [DIR[1]]},
                             neighbours=(DIR_NEIGHBOUR,))
            again = restore(bank_dir, bank.client, target, tmp / "state")
            assert again.returncode == Exit.INCOMPLETE, (again.stdout + again.stderr)[-5000:]
            assert listed(report_of(again.stdout)) == {DIR[0]: [DIR[1] + "/"]}
    assert sha256_file(folder_bank["image"]) == before, "the backup device's bytes changed"


class _Deadline:
    """The gateway with a cancel after `seconds`: a hung copy ends (Aborted) instead of the test run."""

    def __init__(self, seconds: float) -> None:
        from rescue.engine.copy import Unjournalled

        self.inner = Unjournalled()
        self.end = time.monotonic() + seconds

    def run(self, argv, **kwargs):
        return self.inner.run(argv, **kwargs)

    def spawn(self, argv, **kwargs):
        return self.inner.spawn(argv, **kwargs)

    def child_done(self, proc) -> None:
        pass

    def cancelled(self) -> bool:
        return time.monotonic() > self.end


def test_cp_lines_that_name_no_file_do_not_hang_the_finishing_rsync(linked_bank, monkeypatch):
    """The parallel cp runs share one stderr: two read errors at the same moment (the two
    names of one unreadable file, in two units) can interleave into lines that name no
    file. Then the half-written copy stayed, and the finishing rsync -H waited for it
    forever (the restore hung about 1 run in 4 under load). Interleaving cannot be forced,
    so here cp's lines are made to name nothing (classify is replaced: the one stand-in);
    the copy must still end, listing both names, with no half-written copy left."""
    import rescue.engine.copy as copy_mod
    from rescue.engine.copyerrors import CopyErrors

    monkeypatch.setattr(copy_mod, "classify", lambda lines, source, dest: CopyErrors((), (), tuple(lines)))
    tmp = linked_bank["tmp"]
    with backup_mounted(linked_bank) as mnt, loop_disk(tmp / "garbled.img", 256 * MiB) as dev:
        run(["mkfs.ext4", "-q", "-E", "lazy_itable_init=0,lazy_journal_init=0", dev])
        dest = tmp / "garbled"
        dest.mkdir(exist_ok=True)
        run(["mount", dev, str(dest)])
        try:
            source = mnt / "dirvish" / "home" / "2026-1126-0300" / "tree"
            try:
                result = copy_mod.copy_tree(_Deadline(120), source, dest, resume=False)
            except Aborted:
                raise AssertionError("the copy hung on a half-written hard-linked file") from None
            named = " ".join(result.unreadable)
            assert result.method == "cp+rsync" and LINKED[1] in named and LINKED_TWIN in named, result
            assert not (dest / LINKED[1]).exists() and not (dest / LINKED_TWIN).exists()
            assert (dest / "corpus").is_dir()
        finally:
            run(["umount", str(dest)])
