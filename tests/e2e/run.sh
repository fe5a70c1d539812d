#!/bin/bash
# Runs the kernel-client e2e suite: prepares the cache (setup.sh), builds usbipd when the default
# binary is missing, then orchestrate.py drives our server and the QEMU guest and prints the results.
# usage: tests/e2e/run.sh [path-to-usbipd] [-v|--verbose] [--shell]   (exit 0 iff all checks pass)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BIN=$ROOT/target/release/usbipd
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then BIN=$(realpath "$1"); shift; fi
ARGS=()
for a in "$@"; do
  case $a in --shell) ARGS+=(--mode shell);; *) ARGS+=("$a");; esac
done
if [ ! -x "$BIN" ]; then
  [ "$BIN" = "$ROOT/target/release/usbipd" ] || { echo "no such binary: $BIN" >&2; exit 2; }
  echo "building $BIN" >&2
  (cd "$ROOT" && timeout 1800 cargo build --release -p usbipd)
fi
E2E=$(timeout 1800 "$HERE/setup.sh")
exec timeout 300 python3 -B "$HERE/orchestrate.py" --usbipd "$BIN" --cache "$E2E" "${ARGS[@]}"
