"""Target facts, the parts that need no root: mountinfo, swaps, refusals."""

from __future__ import annotations

import pytest

from rescue.errors import Exit, RescueError, UnsafeTarget
from rescue.probe import parse_mountinfo, parse_swaps, probe_disk
from rescue.safety import check_target, reasons
from rescue.target import ExistingPartition, TargetDisk

MOUNTINFO = r"""22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard
90 27 259:3 / /mnt/my\040backup rw,relatime shared:5 - ext4 /dev/sdb2 rw
91 27 0:45 /@home /home rw,relatime - btrfs /dev/nvme0n1p3 rw,space_cache=v2,subvol=/@home
92 27 0:46 / /merged rw - overlay overlay rw,lowerdir=/lower1:/lower2,upperdir=/up,workdir=/work
broken line without separator
"""


def test_parse_mountinfo():
    entries = parse_mountinfo(MOUNTINFO)
    assert len(entries) == 5
    root = entries[1]
    assert (root.major, root.minor, root.target, root.fstype, root.source) == (254, 0, "/", "ext4", "/dev/vda")
    assert entries[2].target == "/mnt/my backup"  # \040 is a space
    assert entries[2].source == "/dev/sdb2"  # optional fields (shared:5) skipped
    btrfs = entries[3]
    assert (btrfs.major, btrfs.fstype, btrfs.source) == (0, "btrfs", "/dev/nvme0n1p3")
    assert "lowerdir=/lower1:/lower2" in entries[4].super_options


def test_parse_swaps():
    text = ("Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n"
            "/dev/sda3                               partition\t2097148\t\t0\t\t-2\n"
            "/swap\\040file                          file\t\t1048572\t\t0\t\t-3\n")
    assert parse_swaps(text) == ["/dev/sda3", "/swap file"]
    assert parse_swaps("Filename Type Size Used Priority\n") == []


def disk(**kw) -> TargetDisk:
    return TargetDisk(device="/dev/sdb", size=500 * 10**9, **kw)


def test_a_blank_disk_is_safe():
    check_target(disk())
    assert reasons(disk(partitions=(ExistingPartition("/dev/sdb1", 10**9, "ext4"),))) == []


@pytest.mark.parametrize(("facts", "what", "fix"), [
    ({"whole_disk": False}, "is a partition, not a whole disk", "give the disk itself"),
    ({"read_only": True}, "is read-only", "write-protect"),
    ({"holds_backup": True}, "holds the backup being restored", "separate new disk"),
    ({"holds_root": True}, "holds the running system", "boot the rescue system"),
    ({"mounted": ("/mnt/x", "/home")}, "has mounted filesystems: /mnt/x, /home", "umount"),
    ({"swap_active": True}, "has active swap", "swapoff"),
])
def test_each_refusal_says_what_why_and_what_to_do(facts, what, fix):
    with pytest.raises(UnsafeTarget) as e:
        check_target(disk(**facts))
    err = e.value
    assert err.what.startswith("refusing to write /dev/sdb: ") and what in err.what
    assert err.why and fix in err.fix
    assert err.exit_code == Exit.UNSAFE


def test_every_reason_is_given_at_once():
    with pytest.raises(UnsafeTarget) as e:
        check_target(disk(holds_backup=True, mounted=("/backup",), swap_active=True))
    text = str(e.value)
    for part in ("holds the backup", "mounted filesystems: /backup", "active swap",
                 "separate new disk", "umount", "swapoff"):
        assert part in text
    # the model's own short list agrees with the safety check
    assert len(disk(holds_backup=True, mounted=("/backup",), swap_active=True).unsafe_reasons) == 3


def test_not_a_device(tmp_path):
    with pytest.raises(RescueError, match="does not exist") as e:
        probe_disk(str(tmp_path / "sdz"))
    assert e.value.fix
    (tmp_path / "file").write_text("x")
    with pytest.raises(RescueError, match="is not a block device") as e:
        probe_disk(str(tmp_path / "file"))
    assert "/dev/sdb" in e.value.fix
    with pytest.raises(RescueError, match="is not a block device"):
        probe_disk(str(tmp_path))
