"""LUKS containers captured from a real loop disk (issue 18): every field of the header, the
crypttab line, the header itself kept (0600) so that written back it gives the same UUID and
keyslots, and the plan that writes it back.

Formatting, dumping and backing up a LUKS header need no device-mapper; opening does, and
this host's kernel has none: the containers are never opened here (the vm tier opens a
written-back header with its old passphrase). Passphrases go through stdin, never argv.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rescue.devices import attached, make_image_file, partition_path, rescan
from rescue.layout import Layout
from rescue.run import run

MiB = 1 << 20
FAST = ["--batch-mode", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"]


def _luks(dev: str, *args: str, secret: bytes = b"old passphrase") -> None:
    subprocess.run(["cryptsetup", *args, "--key-file=-", dev], input=secret, check=True, capture_output=True)


def _dump(dev: str) -> str:
    return run(["cryptsetup", "luksDump", dev]).stdout


@pytest.fixture()
def machine(tmp_path: Path):
    """A disk with / (ext4), a LUKS2 container (two keyslots, a label) and a LUKS1 one, both named
    in the machine's crypttab; / mounted under tmp_path/root."""
    img = make_image_file(tmp_path / "disk.img", 256 * MiB)
    with attached(img) as disk:
        run(["sfdisk", "-q", disk], input="label: gpt\n,64M\n,40M\n,40M\n")
        rescan(disk)
        root_part, v2, v1 = (partition_path(disk, n) for n in (1, 2, 3))
        run(["mkfs.ext4", "-q", "-L", "root", root_part])
        _luks(v2, "luksFormat", "--type", "luks2", "--label", "vault", *FAST)
        keyfile = tmp_path / "data.key"
        keyfile.write_bytes(os.urandom(64))
        keyfile.chmod(0o600)
        subprocess.run(["cryptsetup", "luksAddKey", *FAST, "--key-file=-", v2, str(keyfile)],
                       input=b"old passphrase", check=True, capture_output=True)
        _luks(v1, "luksFormat", "--type", "luks1", *FAST)
        uuids = {dev: run(["cryptsetup", "luksUUID", dev]).stdout.strip() for dev in (v2, v1)}
        root = tmp_path / "root"
        root.mkdir()
        run(["mount", root_part, str(root)])
        try:
            (root / "etc").mkdir()
            (root / "etc" / "crypttab").write_text(
                f"# <target> <source> <key> <options>\nsrv UUID={uuids[v2]} /etc/keys/data.key luks\n"
                f"old UUID={uuids[v1]} none luks\n")
            yield disk, root, v2, v1, uuids
        finally:
            run(["umount", str(root)])


def test_each_luks_container_is_recorded_with_its_header_kept_root_only(machine, tmp_path):
    disk, root, v2, v1, uuids = machine
    out = tmp_path / "cap"
    r = subprocess.run([sys.executable, "-m", "rescue", "capture", "--disk", disk, "--root", str(root),
                        "--out", str(out), "--client", "crypt"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    layout = Layout.loads((out / "layout.json").read_text())
    found = {c.device: c for c in layout.layers.luks}
    assert set(found) == {v2, v1}, found
    two, one = found[v2], found[v1]
    assert (two.version, two.uuid, two.label, two.cipher) == (2, uuids[v2], "vault", "aes-xts-plain64")
    assert two.key_bits == 512 and two.data_offset == 16 * MiB
    assert [(k.slot, k.kind, k.pbkdf, k.hash) for k in two.keyslots] == [(0, "luks2", "pbkdf2", "sha256"),
                                                                         (1, "luks2", "pbkdf2", "sha256")]
    assert two.crypttab == f"srv UUID={uuids[v2]} /etc/keys/data.key luks"
    assert (one.version, one.uuid, one.label, one.cipher) == (1, uuids[v1], None, "aes-xts-plain64")
    assert [k.slot for k in one.keyslots] == [0] and one.data_offset and one.data_offset % 512 == 0
    assert one.crypttab == f"old UUID={uuids[v1]} none luks"
    assert two.mapping is None  # never opened here
    for c in (two, one):
        header = out / c.header_file
        assert header.stat().st_mode & 0o777 == 0o600, oct(header.stat().st_mode)
    assert (out / "layout.json").stat().st_mode & 0o777 == 0o644

    # the kept header, written back onto a fresh partition, is the container's: same UUID, same slots
    spare = make_image_file(tmp_path / "new.img", 40 * MiB)
    with attached(spare) as part:
        run(["cryptsetup", "luksHeaderRestore", "--batch-mode", part, "--header-backup-file", str(out / two.header_file)])
        assert run(["cryptsetup", "luksUUID", part]).stdout.strip() == uuids[v2]
        dumped = _dump(part)
        assert dumped.count(": luks2\n") == 2 and "vault" in dumped

    # the plan writes each kept header back (found beside layout.json) and opens it by its crypttab name
    from rescue.backups.model import Image, ImageStatus, SourceKind
    from rescue.layout.legacy import image_layout
    from rescue.plan import PlanOptions, build_plan
    from rescue.target import TargetDisk

    bank = Path("/srv/backup/bank")  # never read: the plan is pure
    root_image = Image(kind=SourceKind.DIRVISH, bank=bank, vault="root", name="2026-1205", path=bank / "root",
                       tree=bank / "root" / "tree", client="crypt", source=str(root), status=ImageStatus.SUCCESS,
                       layout_dir=out)
    read = image_layout(root_image)
    plan = build_plan(read, (root_image,), TargetDisk(device="/dev/sdz", size=1 << 30), PlanOptions())
    headers = {s.uuid: s for s in plan.steps if s.kind == "luks-header"}
    assert set(headers) == {uuids[v2], uuids[v1]}
    assert headers[uuids[v2]].header == str(out.resolve() / two.header_file)
    assert {s.name for s in plan.steps if s.kind == "luks-open"} == {"srv", "old"}
    assert [s.kind for s in plan.steps][:2] == ["luks-key", "luks-key"]
