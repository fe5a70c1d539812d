#!/bin/bash
# Runs the kernel-client e2e suite: prepares the cache (setup.sh), brings the default usbipd up to
# date (cargo build), then orchestrate.py drives our server and the QEMU guest and prints the results.
# usage: tests/e2e/run.sh [path-to-usbipd] [-v|--verbose] [--wire-log] [--shell]   (exit 0 iff all pass)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BIN=$ROOT/target/release/usbipd
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then BIN=$(realpath "$1"); shift; fi
ARGS=()
for a in "$@"; do
  case $a in --shell) ARGS+=(--mode shell);; *) ARGS+=("$a");; esac
done
# The default binary is always brought up to date (a no-op when it is): a stale one silently tests
# old code. An explicit path is used as it is.
if [ "$BIN" = "$ROOT/target/release/usbipd" ]; then
  (cd "$ROOT" && timeout 1800 cargo build --release -p usbipd) >&2
elif [ ! -x "$BIN" ]; then
  echo "no such binary: $BIN" >&2; exit 2
fi
# the guest runs usbipd too (`usbipd client`, `usbipd attach` with stand-ins for limactl and
# docker): $USBIPD_E2E_CLIENT (scripts/test.sh sets it to the static musl build) or this binary;
# setup.sh puts $E2E/client/usbipd (stripped, with its shared libraries if any) into the initramfs
CLIENT_DIR=${USBIPD_E2E_DIR:-$ROOT/target/e2e}/client
mkdir -p "$CLIENT_DIR"
strip -o "$CLIENT_DIR/usbipd.new" "${USBIPD_E2E_CLIENT:-$BIN}"
cmp -s "$CLIENT_DIR/usbipd.new" "$CLIENT_DIR/usbipd" && rm "$CLIENT_DIR/usbipd.new" ||
  mv "$CLIENT_DIR/usbipd.new" "$CLIENT_DIR/usbipd"
E2E=$(timeout 1800 "$HERE/setup.sh")
# one QEMU guest at a time on this machine (TCG on shared cores)
exec flock -w 1800 /tmp/usbipd-qemu.lock timeout 360 python3 -B "$HERE/orchestrate.py" --usbipd "$BIN" --cache "$E2E" "${ARGS[@]}"
