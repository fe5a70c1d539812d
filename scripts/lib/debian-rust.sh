# Sourced by the scripts that rebuild std for another target with Debian's Rust (rustc-web and
# the standard library's sources, rust-web-src): scripts/check-apple.sh (Apple targets, checked)
# and scripts/build-static.sh (static musl binaries, linked). Rustup cannot download targets on
# these machines; `-Zbuild-std` compiles std from the sources instead.

debian_rust_packages=(rustc-web cargo-web rust-web-src rust-web-clippy)

# Installs the Debian packages when missing; the package lists are refreshed only when apt does
# not know the packages yet.
# The lockfile's dependencies need at least rustc 1.88 (plist, proptest, time); bookworm's first
# rustc-web was 1.85, its security updates bring 1.96, so an older one is upgraded.
debian_rust_min_minor=88

debian_rust_minor() { /usr/bin/rustc --version 2>/dev/null | sed -n 's/^rustc 1\.\([0-9]*\)\..*/\1/p'; }

debian_rust_install() {
  local missing=() p
  for p in "${debian_rust_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ] && [ "$(debian_rust_minor)" -lt "$debian_rust_min_minor" ]; then
    echo "upgrading ${debian_rust_packages[*]} ($(/usr/bin/rustc --version) is older than 1.$debian_rust_min_minor)" >&2
    missing=("${debian_rust_packages[@]}")
    apt-get update -qq
  fi
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "installing ${missing[*]}" >&2
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# Points cargo at Debian's toolchain, with absolute paths: rustup's proxies in ~/.cargo/bin come
# first on PATH and have no rust-src (and `cargo clippy` would find rustup's cargo-clippy, so
# callers run /usr/bin/cargo-clippy directly). RUSTC_BOOTSTRAP=1 lets Debian's stable cargo
# accept -Z flags. $1: the target directory.
debian_rust_env() {
  export CARGO_TARGET_DIR="$1"
  export RUSTC=/usr/bin/rustc CARGO=/usr/bin/cargo RUSTC_BOOTSTRAP=1
  unset RUSTFLAGS RUSTC_WRAPPER
  debian_rust_build_std=-Zbuild-std=std,panic_abort
}
