#!/bin/sh
# Remake the sfdisk dumps the plan tests use, with the real sfdisk, on sparse
# image files (no root needed). The tests rename NAME.img to /dev/sda when
# they load a dump. Run from this folder: sh make.sh
set -eu
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
make() {  # make NAME SIZE: script on stdin
    truncate -s "$2" "$tmp/$1.img"
    sfdisk -q --wipe always "$tmp/$1.img" >/dev/null
    (cd "$tmp" && sfdisk -d "$1.img") > "$1.sfdisk"
}
make dos 8G <<'EOF'
label: dos
label-id: 0x1a2b3c4d
start=2048, size=12582912, type=83, bootable
size=2097152, type=82
EOF
make ext 10G <<'EOF'
label: dos
label-id: 0x5e6f7a8b
start=2048, size=1048576, type=83, bootable
size=+, type=5
size=8388608, type=83
size=2097152, type=82
size=+, type=83
EOF
make gpt 12G <<'EOF'
label: gpt
label-id: 3C6A2B8E-1D4F-4E5A-9B7C-2F8E1A9D0C11
size=2048, type=21686148-6449-6E6F-744E-656564454649, name="bios", uuid=6E1F2A3B-4C5D-4E6F-8A9B-0C1D2E3F4A00
size=524288, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name="EFI System", uuid=6E1F2A3B-4C5D-4E6F-8A9B-0C1D2E3F4A01
size=8388608, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name="root", uuid=6E1F2A3B-4C5D-4E6F-8A9B-0C1D2E3F4A02
size=1048576, type=0657FD6D-A4AB-43C4-84E5-0933C84B4F4F, name="swap", uuid=6E1F2A3B-4C5D-4E6F-8A9B-0C1D2E3F4A03
size=1048576, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name="tmp", uuid=6E1F2A3B-4C5D-4E6F-8A9B-0C1D2E3F4A04, attrs="LegacyBIOSBootable"
size=+, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name="home x", uuid=6E1F2A3B-4C5D-4E6F-8A9B-0C1D2E3F4A05
EOF
# An old-style disk: partitions on cylinder boundaries (start 63), not aligned.
make old 4G <<'EOF'
label: dos
label-id: 0x00c0ffee
start=63, size=4000122, type=83, bootable
start=4000185, size=1000000, type=82
start=5000185, type=83
EOF
# Issue 15's machine: /boot, then /, swap, btrfs /home and a small /tmp as logicals;
# 15 MiB left free at the end.
make issue15 1G <<'EOF'
label: dos
label-id: 0x15151515
start=2048, size=128M, type=83, bootable
size=+, type=5
size=400M, type=83
size=128M, type=82
size=300M, type=83
size=48M, type=83
EOF
