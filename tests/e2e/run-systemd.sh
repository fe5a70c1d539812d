#!/bin/bash
# Runs the systemd e2e guest: a Debian 12 root (mmdebstrap, cached per recipe) booted by QEMU with
# systemd as PID 1 and QEMU-emulated USB storage, where `usbipd server` installs and starts
# usbipd-extension.service by itself, a bind goes through it, the guest's vhci-hcd imports and reads
# the disk, and the unit survives `systemctl kill -s KILL` (see guest/systemd-test.sh).
# usage: tests/e2e/run-systemd.sh [path-to-usbipd] [-v|--verbose]   (exit 0 iff all checks pass)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
source "$HERE/binary.sh"
t0=$(date +%s)
IMG=$(timeout 1800 "$HERE/build-systemd-image.sh" "$E2E/systemd")
echo "root image $IMG ready in $(($(date +%s) - t0)) s" >&2

# the initramfs: switch_root into the image, carrying this kernel's modules, our server (stripped)
# and the test; rebuilt only when an input changed
mkdir -p "$E2E/systemd"
strip -o "$E2E/systemd/usbipd.new" "$BIN"
cmp -s "$E2E/systemd/usbipd.new" "$E2E/systemd/usbipd" && rm "$E2E/systemd/usbipd.new" ||
  mv "$E2E/systemd/usbipd.new" "$E2E/systemd/usbipd"
stamp=$( { echo "$KVER"; cat "$HERE/build-initramfs.sh" "$HERE/guest/systemd-init.sh" "$HERE/guest/lib.sh";
           sha256sum "$E2E/systemd/usbipd" "$HERE/guest/systemd-test.sh" /bin/busybox /usr/sbin/usbip; } |
         sha256sum | cut -d' ' -f1)
if [ ! -f "$E2E/initramfs-systemd.cpio.gz" ] || [ "$(cat "$E2E/initramfs-systemd.stamp" 2>/dev/null)" != "$stamp" ]; then
  echo "setup: building initramfs-systemd" >&2
  KVER=$KVER EXTRA_MODS="virtio_blk crc32c_generic ext4 xhci-pci" INIT="$HERE/guest/systemd-init.sh" \
    "$HERE/build-initramfs.sh" "$E2E/kernel" "$E2E/initramfs-systemd.cpio.gz" \
    "$E2E/systemd/usbipd" "$HERE/guest/systemd-test.sh"
  echo "$stamp" > "$E2E/initramfs-systemd.stamp"
fi
# one QEMU guest at a time on this machine
exec flock /tmp/usbipd-qemu.lock timeout 330 python3 -B "$HERE/systemd_guest.py" --cache "$E2E" --root "$IMG" "$@"
