#!/usr/bin/env bash
# Builds static Linux (musl) usbipd binaries, to drop into a VM or a container image that has the
# kernel's vhci-hcd but no usbip tools (`usbipd client attach`), or to serve from a minimal host.
# Debian's Rust (rustc-web + rust-web-src, scripts/lib/debian-rust.sh) rebuilds std for the musl
# target from source (-Zbuild-std; rustup cannot download targets here), and cargo-zigbuild links
# with zig (PyPI's `ziglang`), which brings musl's libc and crt objects for every architecture.
# Installs what is missing (Debian packages, the two PyPI packages). Cached in target/static.
#
# Usage: scripts/build-static.sh [TARGET...]
#   TARGET  default: x86_64-unknown-linux-musl aarch64-unknown-linux-musl
# Prints the path of each binary: target/static/TARGET/static/usbipd (cargo profile `static`).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

. scripts/lib/debian-rust.sh
debian_rust_install

# cargo-zigbuild and zig from PyPI (zig is found as `python3 -m ziglang`).
scripts_dir=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
zigbuild=$(command -v cargo-zigbuild || echo "$scripts_dir/cargo-zigbuild")
if [ ! -x "$zigbuild" ] || ! python3 -c 'import ziglang' 2>/dev/null; then
  echo "installing cargo-zigbuild and ziglang (PyPI)" >&2
  python3 -m pip install -q cargo-zigbuild ziglang >&2 ||
    python3 -m pip install -q --break-system-packages cargo-zigbuild ziglang >&2
  zigbuild=$(command -v cargo-zigbuild || echo "$scripts_dir/cargo-zigbuild")
fi

debian_rust_env "$root/target/static"
# cargo-zigbuild runs `cargo` from PATH: Debian's, not rustup's proxy.
export PATH="/usr/bin:$PATH"

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(x86_64-unknown-linux-musl aarch64-unknown-linux-musl)
for target in "${targets[@]}"; do
  echo "-- $target: static usbipd (profile static)" >&2
  # Zig brings musl's crt objects and libc: rustc must not add its own "self-contained" ones,
  # which a std built from source does not have (only the final link needs the flag).
  "$zigbuild" rustc --quiet "$debian_rust_build_std" --target "$target" --profile static \
    -p usbipd --bin usbipd -- -C link-self-contained=no >&2
  echo "$CARGO_TARGET_DIR/$target/static/usbipd"
done
