#!/usr/bin/env bash
# Type-checks and lints the macOS leaves (crates/usbipd/src/platform/macos) on Linux: no Apple
# target can be built here, so they are compiled for Linux under `--cfg usbipd_check_macos`,
# against the project's own declarations of the IOKit, Security and socket calls (ffi.rs).
# Checked, never linked.
set -euo pipefail
cd "$(dirname "$0")/.."
RUSTFLAGS="--cfg usbipd_check_macos -D warnings" \
    cargo clippy --quiet -p usbipd --lib --target-dir target/check-macos "$@"
echo "macOS leaves type-check on Linux: ok"
