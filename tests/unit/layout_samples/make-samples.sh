#!/bin/sh
# Regenerate the real-tool samples in this folder (run as root from here).
# Every dump is made by the real sfdisk on a sparse image file or a loop
# device over one; nothing else is touched. Files whose names start with
# hand- and everything in bad/ are written by hand (see the test).
set -eu
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

truncate -s 1G "$work/dos.img"
printf 'label: dos\nlabel-id: 0x5e1f0001\n,256MiB,83,*\n,320MiB,83\n,64MiB,82\n,,83\n' | sfdisk -q "$work/dos.img"
sfdisk -d "$work/dos.img" | sed "s#$work/##" > dos-simple.dump

truncate -s 1G "$work/ext.img"
printf 'label: dos\nlabel-id: 0x5e1f0002\n,256MiB,83,*\n,,5\n,64MiB,82\n,200MiB,83\n,,83\n' | sfdisk -q "$work/ext.img"
sfdisk -d "$work/ext.img" | sed "s#$work/##" > dos-extended.dump

truncate -s 2G "$work/gpt.img"
printf 'label: gpt\nlabel-id: DD200ECE-41C9-E942-9353-4CF127380F67\n%s\n%s\n%s\n%s\n%s\n' \
  'size=1MiB, type=21686148-6449-6E6F-744E-656564454649, uuid=752BA5E9-21F0-0040-8F86-75FA3A85F151, name="bios boot"' \
  'size=100MiB, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name="EFI system"' \
  'size=512MiB, type=L, name="root fs", attrs="LegacyBIOSBootable"' \
  'size=64MiB, type=S, name="swap"' \
  'type=L, name="home naméé x\\y", attrs="GUID:60,62"' | sfdisk -q "$work/gpt.img"
sfdisk -d "$work/gpt.img" | sed "s#$work/##" > gpt.dump

truncate -s 1G "$work/len.img"
printf 'label: gpt\nlabel-id: F7D967A4-ACB0-D544-8F5B-F5BE9DA4E4F9\ntable-length: 8\n,100MiB,L\n,,L\n' | sfdisk -q "$work/len.img"
sfdisk -d "$work/len.img" | sed "s#$work/##" > gpt-table-length.dump

truncate -s 1G "$work/4k.img"
dev=$(losetup --find --show --sector-size 4096 "$work/4k.img")
printf 'label: gpt\nlabel-id: E2509EB1-3ACF-FA40-88F5-2CA54C6272E5\n,256MiB,L\n,,L\n' | sfdisk -q "$dev" || true
sfdisk -d "$dev" | sed "s#$dev#/dev/loop9#" > gpt-4k.dump
losetup -d "$dev"

# lsblk of a loop disk with the gpt table above (no udev here: no FSTYPE/UUID/LABEL)
dev=$(losetup --find --show --partscan "$work/gpt.img")
partprobe "$dev" 2>/dev/null || true
lsblk -J -b -O "$dev" | sed "s#$(basename "$dev")#loop9#g" > lsblk-loop.json
losetup -d "$dev"

# A complete raw capture (rescue capture --disk --root) of a demo machine,
# with its temporary paths renamed to /mnt/demo and its loop device to loop9.
out=$(cd ../../.. && .venv/bin/python - "$work" <<'PY'
import subprocess, sys
from pathlib import Path
from rescue.demo import DemoMachine
work = Path(sys.argv[1])
with DemoMachine(work / "m", label="gpt", corpus=False) as m:
    subprocess.run([".venv/bin/rescue", "capture", "--disk", m.disk, "--root", str(m.root), "--out", str(work / "cap")], check=True, capture_output=True)
    print(m.disk, m.root)
PY
)
dev=${out% *}; root=${out#* }
rm -rf capture-demo && mkdir capture-demo
for f in "$work"/cap/*; do
  sed -e "s#$root#/mnt/demo#g" -e "s#$(basename "$dev")#loop9#g" "$f" > "capture-demo/$(basename "$f" | sed "s#$(basename "$dev")#loop9#")"
done
