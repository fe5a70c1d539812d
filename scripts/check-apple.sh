#!/usr/bin/env bash
# Type-checks and lints the whole workspace for the real Apple targets (aarch64-apple-darwin and
# x86_64-apple-darwin) on Linux: Debian's Rust (rustc-web) rebuilds the target's std from its
# sources (-Zbuild-std), so nusb's IOKit backend, core-foundation and every
# `cfg(target_os = "macos")` line are compiled as on a Mac. Checked, never linked (no macOS SDK
# here); running on a Mac is the CI workflow's job (.github/workflows/ci.yml).
# Installs the Debian packages when missing. The build is cached in target/apple.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/lib/debian-rust.sh
debian_rust_install
debian_rust_env "${CARGO_TARGET_DIR_APPLE:-$PWD/target/apple}"
build_std=$debian_rust_build_std

# clippy compiles everything `cargo check` does (and lints it): one pass per target.
for target in aarch64-apple-darwin x86_64-apple-darwin; do
  echo "-- $target: clippy -D warnings (type-check and lint)"
  /usr/bin/cargo-clippy clippy --quiet "$build_std" --target "$target" --workspace --all-targets \
    -- -D warnings
done
echo "Apple targets type-check and lint clean: ok"
