# Sourced by the run*.sh scripts (after HERE and ROOT are set), with their arguments:
# BIN is the usbipd under test: the first argument when it is a path (then shifted away), else
# target/release/usbipd, which is always brought up to date first (a stale one silently tests
# old code; a no-op when it is current). E2E is the prepared cache (setup.sh), KVER its kernel.
BIN=$ROOT/target/release/usbipd
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then BIN=$(realpath "$1"); shift; fi
if [ "$BIN" = "$ROOT/target/release/usbipd" ]; then
  (cd "$ROOT" && timeout 1800 cargo build --release -p usbipd) >&2
elif [ ! -x "$BIN" ]; then
  echo "no such binary: $BIN" >&2; exit 2
fi
E2E=$(timeout 1800 "$HERE/setup.sh")
KVER=$(ls "$E2E/kernel/lib/modules" | head -1)
