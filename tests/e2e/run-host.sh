#!/bin/bash
# Runs the host-passthrough e2e suite: one QEMU guest with emulated USB hardware (qemu-xhci, usb-kbd,
# usb-storage) where our usbipd shares the devices through usbfs and the guest's own vhci-hcd imports
# them over 127.0.0.1; then the kernel's usbip-host + usbipd serve the same devices for comparison.
# usage: tests/e2e/run-host.sh [path-to-usbipd] [-v|--verbose]   (exit 0 iff all checks pass)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
source "$HERE/binary.sh"
source "$HERE/host-initramfs.sh"
exec flock -w 1800 /tmp/usbipd-qemu.lock timeout 500 python3 -B "$HERE/host_passthrough.py" --cache "$E2E" "$@"
