#!/usr/bin/env bash
# Type-checks and lints the whole workspace for the real Apple targets (aarch64-apple-darwin and
# x86_64-apple-darwin) on Linux: Debian's Rust (rustc-web) rebuilds the target's std from its
# sources (-Zbuild-std), so nusb's IOKit backend, core-foundation and every
# `cfg(target_os = "macos")` line are compiled as on a Mac. Checked, never linked (no macOS SDK
# here); running on a Mac is the CI workflow's job (.github/workflows/ci.yml).
# Installs the Debian packages when missing. The build is cached in target/apple.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(rustc-web cargo-web rust-web-src rust-web-clippy)
# The lockfile's dependencies need at least this rustc (plist, proptest, time: 1.88); bookworm's
# first rustc-web was 1.85, its security updates bring 1.96.
min_minor=88
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
rustc_minor() { /usr/bin/rustc --version 2>/dev/null | sed -n 's/^rustc 1\.\([0-9]*\)\..*/\1/p'; }
if [ ${#missing[@]} -eq 0 ] && [ "$(rustc_minor)" -lt "$min_minor" ]; then
  echo "upgrading ${packages[*]} ($(/usr/bin/rustc --version) is older than 1.$min_minor)"
  missing=("${packages[@]}")
  apt-get update -qq
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # The package lists are refreshed only when apt does not know the packages yet.
  if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

# Absolute paths: rustup's proxies in ~/.cargo/bin come first on PATH and have no rust-src.
# `cargo clippy` would find rustup's cargo-clippy, so Debian's is called directly.
# RUSTC_BOOTSTRAP=1 lets Debian's stable cargo accept -Zbuild-std.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR_APPLE:-$PWD/target/apple}"
export RUSTC=/usr/bin/rustc CARGO=/usr/bin/cargo RUSTC_BOOTSTRAP=1
unset RUSTFLAGS RUSTC_WRAPPER
# tracing-oslog's build script compiles a C wrapper against the SDK's <os/log.h>, which is not
# here; it skips that under DOCS_RS (checked, never linked, like docs.rs). No other crate in
# the lockfile reads the variable.
export DOCS_RS=1
build_std=-Zbuild-std=std,panic_abort
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
