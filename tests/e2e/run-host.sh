#!/bin/bash
# Runs the host-passthrough e2e suite: one QEMU guest with emulated USB hardware (qemu-xhci, usb-kbd,
# usb-storage) where our usbipd shares the devices through usbfs and the guest's own vhci-hcd imports
# them over 127.0.0.1; then the kernel's usbip-host + usbipd serve the same devices for comparison.
# usage: tests/e2e/run-host.sh [path-to-usbipd] [-v|--verbose]   (exit 0 iff all checks pass)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
source "$HERE/binary.sh"
# udevd for the guest's hotplug checks with udevd running: Debian's udev package, unpacked (udevadm
# is systemd-udevd too, and needs no libsystemd-shared)
if [ ! -x "$E2E/udev/bin/udevadm" ]; then
  echo "setup: downloading udev" >&2
  rm -f "$E2E"/debs/udev_*.deb
  (cd "$E2E/debs" && timeout 600 apt-get download -q udev >&2)
  rm -rf "$E2E/udev" && dpkg-deb -x "$E2E"/debs/udev_*.deb "$E2E/udev"
fi

# the guest's initramfs: the suite's, plus xhci and usbip-host, our server (stripped: the release
# build keeps debug info) and the kernel's usbipd; rebuilt only when an input changed
mkdir -p "$E2E/host"
strip -o "$E2E/host/usbipd.new" "$BIN"
cmp -s "$E2E/host/usbipd.new" "$E2E/host/usbipd" && rm "$E2E/host/usbipd.new" ||
  mv "$E2E/host/usbipd.new" "$E2E/host/usbipd"
stamp=$( { echo "$KVER"; cat "$HERE/build-initramfs.sh" "$HERE/guest/host-init.sh" "$HERE/guest/lib.sh";
           sha256sum "$E2E/host/usbipd" "$E2E/bin/e2e-evkeys" "$E2E/bin/e2e-hidread" "$E2E/bin/e2e-usbreset" "$E2E/udev/bin/udevadm" /bin/busybox /usr/sbin/usbip /usr/sbin/usbipd; } |
         sha256sum | cut -d' ' -f1)
if [ ! -f "$E2E/initramfs-host.cpio.gz" ] || [ "$(cat "$E2E/initramfs-host.stamp" 2>/dev/null)" != "$stamp" ]; then
  echo "setup: building initramfs-host" >&2
  KVER=$KVER EXTRA_MODS="xhci-pci usbip-host" INIT="$HERE/guest/host-init.sh" \
    "$HERE/build-initramfs.sh" "$E2E/kernel" "$E2E/initramfs-host.cpio.gz" \
    "$E2E/host/usbipd" /usr/sbin/usbipd "$E2E/bin/e2e-evkeys" "$E2E/bin/e2e-hidread" "$E2E/bin/e2e-usbreset" \
    "$E2E/udev/bin/udevadm"
  echo "$stamp" > "$E2E/initramfs-host.stamp"
fi
exec timeout 500 python3 -B "$HERE/host_passthrough.py" --cache "$E2E" "$@"
