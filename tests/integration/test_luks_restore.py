"""`rescue restore` of a machine with a LUKS2 partition (issue 18), on loop disks.

The machine is captured for real (`rescue capture --disk --root`: its header kept beside
layout.json) and restored from a plain folder with `--luks-key NAME=FILE`:
- a wrong key is said ("wrong passphrase for LUKS UUID ..., try again"), the exit is non-zero
  and the target disk is not changed by one byte;
- the right key passes the check; the table is written and the kept header written back
  (same UUID, every keyslot: the old passphrase opens the new partition's header). Opening it
  needs device-mapper, which this host's kernel lacks: the restore stops at `cryptsetup open`
  (the vm tier opens it). Neither key appears in the log, the journal, plan.json or the report.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rescue.devices import attached, make_image_file, partition_path, rescan
from rescue.run import run

MiB = 1 << 20
FAST = ["--batch-mode", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"]
SECRET = b"old passphrase 4 the vault"
WRONG = b"not the passphrase at all"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def captured(tmp_path: Path):
    """A plain folder holding the machine: tree/ (its files) and rescue/ (its captured layout with
    the LUKS2 header kept); the source disk is detached afterwards, as in a disaster."""
    img = make_image_file(tmp_path / "old.img", 160 * MiB)
    box = tmp_path / "crypt"
    box.mkdir()
    with attached(img) as disk:
        run(["sfdisk", "-q", disk], input="label: gpt\n,64M\n,48M\n")
        rescan(disk)
        root_part, vault = partition_path(disk, 1), partition_path(disk, 2)
        run(["mkfs.ext4", "-q", "-L", "root", root_part])
        subprocess.run(["cryptsetup", "luksFormat", "--type", "luks2", *FAST, "--key-file=-", vault],
                       input=SECRET, check=True, capture_output=True)
        uuid = run(["cryptsetup", "luksUUID", vault]).stdout.strip()
        root = tmp_path / "root"
        root.mkdir()
        run(["mount", root_part, str(root)])
        try:
            (root / "etc").mkdir()
            (root / "etc" / "crypttab").write_text(f"srv UUID={uuid} none luks\n")
            (root / "etc" / "hostname").write_text("crypt\n")
            r = subprocess.run([sys.executable, "-m", "rescue", "capture", "--disk", disk, "--root", str(root),
                                "--out", str(box / "rescue"), "--client", "crypt"],
                               capture_output=True, text=True, timeout=300, cwd=REPO)
            assert r.returncode == 0, r.stdout + r.stderr
            (box / "tree").mkdir()
            run(["cp", "-a", f"{root}/.", str(box / "tree")])
        finally:
            run(["umount", str(root)])
    return box, uuid


def _restore(box: Path, dev: str, state: Path, keyfile: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rescue", "restore", "--tree", str(box / "tree"),
                           "--client", "crypt", "--target", dev, "--yes", "--bootloader", "skip",
                           "--state-dir", str(state), "--luks-key", f"srv={keyfile}"],
                          capture_output=True, text=True, timeout=600, cwd=REPO, stdin=subprocess.DEVNULL)


def _kept(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


def test_a_wrong_key_writes_nothing_and_the_right_one_writes_the_kept_header_back(captured, tmp_path):
    box, uuid = captured
    wrong, right = tmp_path / "wrong.key", tmp_path / "right.key"
    wrong.write_bytes(WRONG)
    right.write_bytes(SECRET)
    for k in (wrong, right):
        k.chmod(0o600)
    target = make_image_file(tmp_path / "new.img", 256 * MiB)
    state = tmp_path / "state"
    with attached(target) as dev:
        run(["mkfs.ext4", "-q", "-L", "olddata", dev])  # something the restore would destroy
        before = run(["sha256sum", dev]).stdout.split()[0]
        r = _restore(box, dev, state, wrong)
        out = r.stdout + r.stderr
        assert r.returncode != 0, out
        assert f"wrong passphrase for LUKS UUID {uuid} (srv), try again" in out, out
        assert "Traceback" not in out, out
        assert run(["sha256sum", dev]).stdout.split()[0] == before  # not one byte written

        r = _restore(box, dev, state, right)
        out = r.stdout + r.stderr
        # the check passed; the table and the header were written; the open needs device-mapper
        assert "wrong passphrase" not in out, out
        assert "write the kept LUKS header" in out and "open LUKS" in out, out
        part = partition_path(dev, 2)
        rescan(dev)
        assert run(["cryptsetup", "luksUUID", part]).stdout.strip() == uuid
        test = subprocess.run(["cryptsetup", "open", "--test-passphrase", "--key-file=-", part],
                              input=SECRET, capture_output=True)
        assert test.returncode == 0, test.stderr  # the old passphrase opens the new disk's header
        if "device-mapper" in Path("/proc/misc").read_text():  # a kernel with device-mapper goes on to the end
            assert r.returncode == 0, out
        else:
            assert r.returncode != 0 and "cryptsetup open" in out, out
    assert SECRET not in out.encode() and WRONG not in out.encode()
    kept = _kept(state)
    assert kept, "the journal, plan.json, log and report are kept in the state folder"
    assert SECRET not in kept and WRONG not in kept
    assert b"--key-file=-" in kept  # the log shows the command: the key went on its stdin
    assert os.stat(right).st_mode & 0o777 == 0o600


def test_a_new_master_key_keeps_the_captured_identity_with_one_keyslot(captured, tmp_path):
    """--luks-new-key's luksFormat, run for real on a loop disk with the identity the capture kept."""
    import json

    from rescue.layout.model import Layout
    from rescue.plan.luks import ContainersOnDisk, plan_containers
    from rescue.steps.luks import LuksKey

    box, uuid = captured
    layout = Layout.loads((box / "rescue" / "layout.json").read_text())
    (c,) = layout.layers.luks
    new = make_image_file(tmp_path / "fresh.img", 64 * MiB)
    with attached(new) as dev:
        plan = plan_containers(ContainersOnDisk((c,)), {c.device: dev}, new_key=True)
        (ask,), (fmt, _open) = plan.checks, plan.make
        assert ask.kind == "luks-new-key" and fmt.kind == "luks-format"

        class Ctx:
            def run(self, argv, **kw):
                return run(argv, **kw)

            def luks_key(self, want):
                return LuksKey(b"a new passphrase", "new passphrase typed twice") if want == uuid else None

        fmt.run(Ctx())
        dump = json.loads(run(["cryptsetup", "luksDump", "--dump-json-metadata", dev]).stdout)
        assert run(["cryptsetup", "luksUUID", dev]).stdout.strip() == uuid
        assert list(dump["keyslots"]) == ["0"]  # one keyslot: the new passphrase
        assert dump["segments"]["0"]["encryption"] == c.cipher and int(dump["segments"]["0"]["offset"]) == c.data_offset
        for key, ok in ((b"a new passphrase", 0), (SECRET, 2)):  # the old one no longer opens it
            r = subprocess.run(["cryptsetup", "open", "--test-passphrase", "--key-file=-", dev], input=key,
                               capture_output=True)
            assert r.returncode == ok, r.stderr


def test_restore_sh_checks_the_passphrase_before_it_writes(captured, tmp_path):
    """restore.sh asks for the passphrase itself (from the terminal, hidden) and checks it against
    the kept header before its first write. Without a terminal here, a key set beforehand in its
    variable is checked the same way: a wrong one stops it with the disk untouched; the right one
    goes on to write the table and the kept header (and stops at `cryptsetup open` on a kernel
    without device-mapper)."""
    from rescue.steps.luks import key_variable

    box, uuid = captured
    script = tmp_path / "restore.sh"
    target = make_image_file(tmp_path / "new.img", 256 * MiB)
    with attached(target) as dev:
        run(["mkfs.ext4", "-q", "-L", "olddata", dev])
        before = run(["sha256sum", dev]).stdout.split()[0]
        r = subprocess.run([sys.executable, "-m", "rescue", "plan", "--tree", str(box / "tree"), "--client", "crypt",
                            "--target", dev, "--no-bootloader", "--script", str(script)],
                           capture_output=True, text=True, timeout=300, cwd=REPO)
        assert r.returncode == 0, r.stdout + r.stderr
        text = script.read_text()
        assert SECRET.decode() not in text and "read -rs -p" in text
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "RESCUE_STATE": str(tmp_path / "marks"),
               "RESCUE_ROOT": str(tmp_path / "root"), "RESCUE_WORK": str(tmp_path / "work")}

        def sh(key: bytes) -> subprocess.CompletedProcess:
            return subprocess.run(["setsid", "bash", str(script)], env={**env, key_variable(uuid): key.decode()},
                                  capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)

        wrong = sh(WRONG)
        assert wrong.returncode != 0, wrong.stderr
        assert f"wrong passphrase for LUKS UUID {uuid}, try again" in wrong.stderr, wrong.stderr
        assert "nothing was written" in wrong.stderr, wrong.stderr
        assert run(["sha256sum", dev]).stdout.split()[0] == before  # not one byte written
        right = sh(SECRET)
        assert "wrong passphrase" not in right.stderr, right.stderr
        # udev re-reads the table the script wrote: the partition may be gone for a moment
        for _ in range(20):
            rescan(dev)
            read = run(["cryptsetup", "luksUUID", partition_path(dev, 2)], check=False)
            if read.returncode == 0:
                break
            time.sleep(0.25)
        assert read.stdout.strip() == uuid, right.stderr + read.stderr
        if "device-mapper" not in Path("/proc/misc").read_text():
            assert right.returncode != 0 and "open LUKS" in right.stderr, right.stderr
        assert SECRET.decode() not in right.stdout + right.stderr


def test_a_new_master_key_gets_crypttabs_keyfile_back_from_the_copied_system(captured, tmp_path):
    """After --luks-new-key the keyfile crypttab names (a file of the restored system) is added
    to the new header, for real: the machine opens the container at boot as it did. A keyfile
    the backup did not hold is said, and nothing fails."""
    import dataclasses
    import json

    from rescue.layout.model import Layout
    from rescue.plan.luks import ContainersOnDisk, plan_containers
    from rescue.steps.luks import LuksKey

    box, uuid = captured
    layout = Layout.loads((box / "rescue" / "layout.json").read_text())
    (c,) = layout.layers.luks
    c = dataclasses.replace(c, crypttab=f"srv-crypt UUID={uuid} /etc/keys/srv.key luks")
    root = tmp_path / "root"
    (root / "etc" / "keys").mkdir(parents=True)
    (root / "etc" / "keys" / "srv.key").write_bytes(os.urandom(64))
    said: list[str] = []

    class Ctx:
        def __init__(self, root: Path) -> None:
            self.root = root

        def run(self, argv, **kw):
            return run(argv, **kw)

        def say(self, line: str) -> None:
            said.append(line)

        def luks_key(self, want):
            return LuksKey(b"a new passphrase", "new passphrase typed twice") if want == uuid else None

    new = make_image_file(tmp_path / "fresh.img", 64 * MiB)
    with attached(new) as dev:
        plan = plan_containers(ContainersOnDisk((c,)), {c.device: dev}, new_key=True)
        (fmt, _open), (add,) = plan.make, plan.keyfiles
        fmt.run(Ctx(root))
        add.run(Ctx(root))
        dump = json.loads(run(["cryptsetup", "luksDump", "--dump-json-metadata", dev]).stdout)
        assert sorted(dump["keyslots"]) == ["0", "1"]  # the new passphrase and the keyfile
        r = subprocess.run(["cryptsetup", "open", "--test-passphrase", "--key-file", str(root / "etc/keys/srv.key"),
                            dev], capture_output=True)
        assert r.returncode == 0, r.stderr
        assert said == []
        add.run(Ctx(tmp_path / "a-root-without-the-key"))
        assert len(said) == 1 and "/etc/keys/srv.key" in said[0] and "add it by hand" in said[0]
        dump = json.loads(run(["cryptsetup", "luksDump", "--dump-json-metadata", dev]).stdout)
        assert sorted(dump["keyslots"]) == ["0", "1"]
