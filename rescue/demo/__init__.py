"""Demo machines and banks: the shared harness of integration tests and the drill.

Everything here is real: a loop disk with real filesystems, real dirvish
backups, real `rescue capture` hooks. It needs root and writes only to the
loop devices and files it creates under the folder it is given.

Typical use in an integration test (pytest's tmp_path):

    from rescue.demo import DemoMachine, make_bank, diff_trees

    with DemoMachine(tmp_path / "m", label="gpt", home_fs="xfs") as m:
        bank = make_bank(m, tmp_path / "bank")        # dirvish --init, then a nightly run
        image = bank.image_dir("home")                 # bank/home/<newest image>
        assert (image / "rescue" / "layout.json").is_file()
        facts = m.partition("/home")                   # label, uuid, partuuid, start, size
        m.detach_keep_image()                          # the disaster: the disk is gone
        ... restore onto a fresh loop disk (rescue.devices.loop_disk) ...
        assert diff_trees(bank.image_dir("home") / "tree", restored_home, times=True) == []

DemoMachine(workdir, *, size=1 GiB, label="gpt"|"dos", home_fs="xfs"|"btrfs"|"ext4",
            logical=False (dos only: swap and /tmp become logical partitions 5 and 6),
            hostname="demo", parts=None (tuple of PartSpec), corpus=True)
    context manager; builds on enter, unmounts and detaches on exit (always).
    .disk (/dev/loopN or None), .image, .root, .table (PartitionTable), .sfdisk_dump,
    .partitions (DemoPartition: number, node, mountpoint, fstype, label, uuid, partuuid,
    start, size, name, .vault), .filesystems, .swap, .fstab, .hostname
    .partition(mountpoint) -> DemoPartition; .dir_of(mountpoint) -> Path
    .mount(), .unmount(), .detach_keep_image(), .reattach(mount=True) -> disk, .close()
    PartSpec(mountpoint, fstype ext4|xfs|btrfs|vfat|swap, size_mib (0: the rest), label, name=None
             (gpt name), backup=True (False: no vault, e.g. an ESP; vfat is never mounted on the host)).
    Default partitions: 1 / ext4 256 MiB "demo-root", 2 /home 320 MiB "demo-home",
    3 swap 64 MiB "demo-swap", 4 /tmp ext4 rest "demo-tmp" (root mode 1777).
    Corpus under /corpus and /home/corpus: see machine.fill_corpus.

make_bank(machine, bank, *, client="localhost", images=None (two names, yesterday and
          today at 03:00, "%Y-%m%d-%H%M"), hook=True, hook_argv=None,
          rsync_options=("--acls", "--xattrs"), confdir=None) -> DemoBank
    real dirvish --init for the first image, a nightly run (hard links) for the rest;
    hook: post-server `rescue capture --disk DISK --root ROOT` into every image.
DemoBank: .bank, .confdir, .client, .vaults ((name, mountpoint), ...), .images (oldest first),
    .vault_of(mountpoint) -> name, .image_dir(vault, image=None) -> bank/vault/image
run_dirvish(confdir, argv, *, keep=(), check=True) -> Result: any dirvish command (or a
    script calling dirvish-runall) with confdir as its /etc/dirvish, in a private mount
    namespace: the host /etc is never written, and other tests' loop mounts are let go of
    in that namespace (keep: extra paths to keep visible, e.g. trees whose bank the command
    mounts itself). rescue.demo.dirvish also has write_master_conf and write_vault_conf.

snapshot(top, exclude=(), one_filesystem=True) -> Snapshot;
diff_trees(a, b, *, times=True, sparse=False, top=True, exclude=()) -> list[str] (empty = equal):
    type, mode, owner, size, mtime, symlink target, rdev, xattrs + ACLs, sparseness, hard links.
"""

from rescue.demo.dirvish import DemoBank, default_image_names, make_bank, rescue_command, run_dirvish
from rescue.demo.machine import (
    FIXED_MTIME,
    ODD_GID,
    ODD_UID,
    UNKNOWN_GID,
    UNKNOWN_UID,
    DemoMachine,
    DemoPartition,
    PartSpec,
    default_parts,
    fill_corpus,
    probe,
)
from rescue.demo.trees import Entry, Snapshot, diff_trees, snapshot

__all__ = [
    "FIXED_MTIME", "ODD_GID", "ODD_UID", "UNKNOWN_GID", "UNKNOWN_UID",
    "DemoBank", "DemoMachine", "DemoPartition", "Entry", "PartSpec", "Snapshot",
    "default_image_names", "default_parts", "diff_trees", "fill_corpus", "make_bank", "probe",
    "rescue_command", "run_dirvish", "snapshot",
]
