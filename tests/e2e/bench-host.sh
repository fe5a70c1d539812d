#!/bin/bash
# The host-passthrough bench (not in scripts/test.sh: minutes of emulated guest time): in a QEMU guest
# our usbipd and the kernel's usbip-host serve the same emulated usb-storage disk and usb-kbd in
# turn, in interleaved windows; O_DIRECT read and write throughput and the keyboard's interrupt
# latency, ours against usbip-host per window. Writes docs/bench/guest-host.json (committed; merged
# into docs/benchmarks.md by scripts/bench.sh) and prints medians and spreads of the ratios.
# usage: tests/e2e/bench-host.sh [path-to-usbipd] [--windows N] [--mib N] [--keys N] [--out FILE] [-v]
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
source "$HERE/binary.sh"
source "$HERE/host-initramfs.sh"
exec flock -w 1800 /tmp/usbipd-qemu.lock timeout 900 python3 -B "$HERE/bench_host.py" --cache "$E2E" \
  --out "$ROOT/docs/bench/guest-host.json" "$@"
