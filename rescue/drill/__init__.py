"""`rescue drill`: prove that a backup restores, on virtual disks, end to end.

The demo drill builds a small Debian machine on a disk image, backs it up
twice with dirvish onto a backup disk made by `rescue prepare-disk`, throws
the machine's disk away, restores it inside a qemu guest booted from the
backup disk, and boots the restored disk to check what the machine reports
on its serial console.
"""
