"""Read errors in the backup, inside the booted rescue system (qemu, TCG), with device-mapper.

A third disk holds a dirvish bank of the demo machine on a plain ext4
filesystem (no partition table). On the host, the physical blocks of three
chosen files are read with debugfs; in the guest, `dmsetup create` puts a
table over that disk: `linear` everywhere, an `error` segment over each of
those files' data blocks, exactly as a disk with bad sectors answers. The
filesystem is mounted read-only from the device-mapper device and the real
`rescue restore` runs from it onto the blank second disk:
- it exits 7 and its report says INCOMPLETE (never OK, never success);
- the report lists exactly the three files, by path in their filesystem;
- verify names them and calls nothing else a difference;
- on the host afterwards: every other file is restored equal (diff_trees
  and contents), the three are absent, the bank disk's bytes are unchanged.
One rescue boot (about 3-5 minutes under TCG).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from rescue.demo import DemoMachine, diff_trees, make_bank
from rescue.devices import attached, make_image_file, partition_path
from rescue.qemu import Firmware
from rescue.image.build import sha256_file
from rescue.run import run
from test_security_rescue import ShellVM, boot_shell

MiB = 1 << 20
GiB = 1 << 30
IMAGE = "2026-1126-0300"
DAMAGED = (("/home", "damaged/photo 1.jpg"), ("/home", "damaged/café.txt"), ("/", "srv/blob.bin"))
NEIGHBOURS = (("/home", "damaged/ok.bin"), ("/", "srv/ok.bin"))
BANK_DISK_MIB = 512




def error_table(disk_bytes: int, bad_blocks: list[int], block: int, device: str) -> list[str]:
    """A dm table: linear over `device`, an error segment over every bad filesystem block."""
    per = block // 512
    total = disk_bytes // 512
    ranges: list[list[int]] = []
    for b in sorted(set(bad_blocks)):
        if ranges and ranges[-1][1] == b:
            ranges[-1][1] = b + 1
        else:
            ranges.append([b, b + 1])
    lines, at = [], 0
    for first, end in ranges:
        start, stop = first * per, end * per
        if start > at:
            lines.append(f"{at} {start - at} linear {device} {at}")
        lines.append(f"{start} {stop - start} error")
        at = stop
    if at < total:
        lines.append(f"{at} {total - at} linear {device} {at}")
    return lines


def bank_disk(tmp: Path) -> tuple[Path, object, list, list[str]]:
    """The demo machine's bank on a whole-disk ext4 image; the dm table that breaks the chosen files."""
    with DemoMachine(tmp / "machine", size=GiB) as m:
        for mountpoint, rel in DAMAGED + NEIGHBOURS:
            path = m.dir_of(mountpoint) / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(rel.encode() + os.urandom(96 * 1024))
        bank = make_bank(m, tmp / "bank", images=(IMAGE,))
        parts = list(m.partitions)
        m.detach_keep_image()
    image = make_image_file(tmp / "bank-disk.img", BANK_DISK_MIB * MiB)
    run(["mkfs.ext4", "-q", "-F", "-b", "4096", "-L", "BANK2", str(image)])
    mnt = tmp / "fill"
    mnt.mkdir()
    inodes = []
    with attached(image) as dev:
        run(["mount", dev, str(mnt)])
        try:
            run(["cp", "-a", str(bank.bank), str(mnt / "dirvish")])
            for mountpoint, rel in DAMAGED:
                inodes.append(os.stat(mnt / "dirvish" / bank.vault_of(mountpoint) / IMAGE / "tree" / rel).st_ino)
        finally:
            run(["umount", str(mnt)])
    blocks: list[int] = []
    for ino in inodes:
        out = run(["debugfs", "-R", f"blocks <{ino}>", str(image)]).stdout.split()
        assert out, f"debugfs found no blocks for inode {ino}"
        blocks += [int(b) for b in out]
    return image, bank, parts, error_table(BANK_DISK_MIB * MiB, blocks, 4096, "/dev/vdc")


@pytest.mark.slow
def test_read_errors_under_device_mapper_make_the_restore_incomplete(backup_disk, tmp_path):
    disk = backup_disk("readerr.img")
    with attached(disk) as dev:  # boot the "Rescue shell" entry, as a person would pick it
        where = tmp_path / "backup"
        where.mkdir()
        run(["mount", partition_path(dev, 4), str(where)])
        try:
            (where / "rescue").mkdir(exist_ok=True)
            (where / "rescue" / "boot.cfg").write_text("set default=shell\nset timeout=1\n")
        finally:
            run(["umount", str(where)])
    image, bank, parts, table = bank_disk(tmp_path)
    assert any(" error" in line for line in table), table
    before = sha256_file(image)
    target = make_image_file(tmp_path / "target.img", GiB)
    tree = {mp: f"/mnt/bad/dirvish/{bank.vault_of(mp)}/{IMAGE}/tree" for mp, _ in DAMAGED}

    with ShellVM([disk, target, image], tmp_path, firmware=Firmware.BIOS, name="readerr") as vm:
        boot_shell(vm)
        printf = "printf '%s\\n' " + " ".join(f"'{line}'" for line in table)
        made = vm.ask(f"{printf} | timeout 60 dmsetup create badbank --verifyudev; echo DM=$?; "
                      "dmsetup table badbank")
        assert "DM=0" in made and "error" in made, made
        mounted = vm.ask("mkdir -p /mnt/bad && mount -o ro,noload /dev/mapper/badbank /mnt/bad; echo MOUNT=$?")
        assert "MOUNT=0" in mounted, mounted
        reads = vm.ask(f"cat '{tree['/home']}/damaged/ok.bin' > /dev/null && echo GOOD-READ; "
                       f"cat '{tree['/home']}/damaged/photo 1.jpg' > /dev/null || echo BAD-READ")
        assert "GOOD-READ" in reads and "BAD-READ" in reads and "Input/output error" in reads, reads

        since = len(vm.console().replace("\r", ""))
        vm.type(f"rescue restore --bank /mnt/bad/dirvish --client {bank.client} --target /dev/vdb --yes "
                "--state-dir /run/rescue-state; echo RESTORE-EXIT=$?")
        code = vm.wait_for_pattern(r"RESTORE-EXIT=(\d+)", 1500, since)
        console = vm.console().replace("\r", "")[since:]
        vm.type("umount /mnt/bad; dmsetup remove badbank; poweroff")
        vm.wait_exit(180)

    assert code.group(1) == "7", console[-5000:]
    report = console[console.index("rescue restore report"):]
    assert re.search(r"^result:   INCOMPLETE: 3 file\(s\) could not be read", report, re.M), report
    assert "result:   OK" not in report and "success" not in report.lower(), report
    assert "MISMATCH" not in report and "rsync:" not in report, report
    section = report[report.index("not restored, the backup could not be read"):].split("\n\n")[0]
    listed = [ln.strip() for ln in section.splitlines() if ln.startswith("    ")]
    assert sorted(listed) == sorted(rel for _, rel in DAMAGED), section
    assert "  / (vault" in section and "  /home (vault" in section, section
    for mp in ("/", "/home"):
        line = next(ln for ln in report.splitlines() if f"tree {mp}: equal to vault" in ln)
        assert "the backup could not give back" in line, line

    assert sha256_file(image) == before, "the bank disk's bytes changed"
    where = tmp_path / "cmp"
    where.mkdir()
    with attached(target) as dev:
        for p in sorted((p for p in parts if p.mountpoint), key=lambda p: len(p.mountpoint)):
            opts = "ro,norecovery,nouuid" if p.fstype == "xfs" else "ro,noload" if p.fstype.startswith("ext") else "ro"
            run(["mount", "-t", p.fstype, "-o", opts, partition_path(dev, p.number), str(where)])
            try:
                bad = [rel for mp, rel in DAMAGED if mp == p.mountpoint]
                for rel in bad:
                    assert not os.path.lexists(where / rel), f"{p.mountpoint}: {rel} restored half-written"
                exclude = [*bad, *(["lost+found"] if p.fstype.startswith("ext") else [])]
                if p.mountpoint == "/":
                    exclude += ["proc", "sys", "dev", "run", "var", "tmp"]
                src = bank.image_dir(p.vault) / "tree"  # the host's copy of the bank
                assert diff_trees(src, where, times=True, exclude=exclude) == [], p.mountpoint
                for mp, rel in NEIGHBOURS:
                    if mp == p.mountpoint:
                        assert (where / rel).read_bytes() == (src / rel).read_bytes(), rel
            finally:
                run(["umount", str(where)])
