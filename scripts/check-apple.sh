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
# tracing-oslog's build script compiles a C wrapper against the SDK's <os/log.h>, which is not
# here; it skips that under DOCS_RS (checked, never linked, like docs.rs). No other crate in
# the lockfile reads the variable.
export DOCS_RS=1
# ring's C and assembly need the macOS SDK: its build script gets a stub compiler and archiver
# (empty objects; nothing is linked here). Its Rust code is type-checked and linted as the rest.
stub="$PWD/scripts/apple-cc-stub.sh"
export CC_aarch64_apple_darwin="$stub" CC_x86_64_apple_darwin="$stub"
export AR_aarch64_apple_darwin="$stub" AR_x86_64_apple_darwin="$stub"

# clippy compiles everything `cargo check` does (and lints it): one pass per target.
for target in aarch64-apple-darwin x86_64-apple-darwin; do
  echo "-- $target: clippy -D warnings (type-check and lint)"
  /usr/bin/cargo-clippy clippy --quiet "$build_std" --target "$target" --workspace --all-targets \
    -- -D warnings
done
echo "Apple targets type-check and lint clean: ok"
