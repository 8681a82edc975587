#!/bin/sh
# mmdebstrap customize hook for the drill's demo machine ($1 = its root).
# The machine only ever boots in qemu: drop drivers for hardware it will
# never see, so the backup and the restore inside the VM stay small and fast.
set -eu
root="$1"
chroot "$root" useradd --create-home --uid 1000 --user-group --shell /bin/sh alice
for kdir in "$root"/lib/modules/*; do
    kver=$(basename "$kdir")
    # Keep block, virtio, console and the filesystems the demo uses; drop the rest.
    k="$kdir/kernel"
    rm -rf "$k/sound" "$k/net" "$k/drivers/gpu" "$k/drivers/media" "$k/drivers/net" \
           "$k/drivers/infiniband" "$k/drivers/staging" "$k/drivers/bluetooth" "$k/drivers/iio" \
           "$k/drivers/isdn" "$k/drivers/hwmon" "$k/drivers/mtd" "$k/drivers/video" \
           "$k/drivers/usb" "$k/drivers/atm" "$k/drivers/nfc" "$k/drivers/platform" \
           "$k/drivers/thunderbolt" "$k/drivers/fpga" "$k/drivers/target" "$k/drivers/comedi" \
           "$k/drivers/mmc" "$k/drivers/misc" "$k/drivers/crypto" "$k/drivers/watchdog" \
           "$k/drivers/power" "$k/drivers/leds" "$k/drivers/i2c" "$k/drivers/spi"
    find "$k/drivers/scsi" -mindepth 1 -type d -prune -exec rm -rf {} +
    for fs in "$k"/fs/*; do
        case "$(basename "$fs")" in
            ext4|jbd2|mbcache.ko|xfs|btrfs|fat|nls|isofs|fuse|overlayfs|squashfs|efivarfs|autofs|configfs|binfmt_misc.ko|quota|pstore) ;;
            *) rm -rf "$fs" ;;
        esac
    done
    chroot "$root" depmod "$kver"
    chroot "$root" update-initramfs -u -k "$kver"
done
