#!/bin/bash
# The guest benchmark (not in scripts/test.sh: minutes of emulated guest time): vhci-hcd in the
# QEMU guest reads the demo disk over plain TCP, kernel TLS (AES-NI and generic gcm(aes)) and the
# TLS relay, in interleaved windows; writes target/bench/guest.json (rows with per-window samples
# against plain's, merged into docs/benchmarks.md by scripts/bench.sh) and prints medians and
# spreads of the per-window ratios.
# usage: tests/e2e/bench-guest.sh [path-to-usbipd] [--windows N] [--mib N] [--paths a,b,..] [-v]
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
source "$HERE/binary.sh"
# the guest's usbipd (the client) is the binary under test, stripped, as run.sh puts it
mkdir -p "$E2E/client"
strip -o "$E2E/client/usbipd.bench" "${USBIPD_E2E_CLIENT:-$BIN}"
# AES-NI and PCLMUL gcm(aes) (QEMU's -cpu max shows the guest aes and pclmulqdq) beside the generic
# C one the suite uses; rebuilt only when an input changed
stamp=$( { echo "$KVER"; cat "$0" "$HERE/build-initramfs.sh" "$HERE/guest/bench-init.sh" "$HERE/guest/lib.sh";
           sha256sum "$E2E/client/usbipd.bench" /bin/busybox; } | sha256sum | cut -d' ' -f1)
if [ ! -f "$E2E/initramfs-bench.cpio.gz" ] || [ "$(cat "$E2E/initramfs-bench.stamp" 2>/dev/null)" != "$stamp" ]; then
  echo "setup: building initramfs-bench" >&2
  mkdir -p "$E2E/bench-bin" && cp "$E2E/client/usbipd.bench" "$E2E/bench-bin/usbipd"
  KVER=$KVER EXTRA_MODS="aesni-intel ghash-clmulni-intel tcrypt" INIT="$HERE/guest/bench-init.sh" \
    "$HERE/build-initramfs.sh" "$E2E/kernel" "$E2E/initramfs-bench.cpio.gz" "$E2E/bench-bin/usbipd"
  echo "$stamp" > "$E2E/initramfs-bench.stamp"
fi
exec flock -w 1800 /tmp/usbipd-qemu.lock timeout 1800 python3 -B "$HERE/bench_guest.py" --usbipd "$BIN" \
  --cache "$E2E" --out "$ROOT/docs/bench/guest-tls.json" "$@"
