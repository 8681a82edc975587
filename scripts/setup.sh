#!/usr/bin/env bash
# Set up everything rescue needs on a Debian 12 machine, as root. Idempotent:
# a second run installs nothing new. Creates .venv/ in the repository.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  # partitioning and filesystems the restore replays
  fdisk parted libparted-dev pkg-config util-linux e2fsprogs xfsprogs btrfs-progs
  dosfstools mtools kmod udev
  # LUKS headers the capture reads and keeps (no device-mapper here: never opened)
  cryptsetup-bin
  # copying and checking trees
  rsync attr acl
  # backups the restore reads
  dirvish rsnapshot
  # the rescue image, its boot code, and the vm tier
  mmdebstrap qemu-system-x86 qemu-utils ovmf grub-pc-bin grub-efi-amd64-bin grub2-common
  grub-common bmap-tools zstd cpio xz-utils openssh-client
  # a real sshd on 127.0.0.1 for the capture --ssh tests (started by the tests, own config)
  openssh-server
  # python for the venv (pyparted builds against libparted)
  python3 python3-venv python3-dev gcc
  # driving the wizard like a person in the tests
  tmux
)

if [ "$(id -u)" != 0 ]; then
  echo "setup.sh: run as root: it installs Debian packages and uses loop devices" >&2
  exit 1
fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup.sh: installing ${missing[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Debian's own python3 (3.11 on bookworm), the same the rescue image runs.
if [ ! -x .venv/bin/python ]; then
  /usr/bin/python3 -m venv .venv
fi
stamp=.venv/.rescue-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[test]'
  touch "$stamp"
fi
echo "setup.sh: ready (.venv/bin/rescue)"
