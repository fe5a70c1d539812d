#!/usr/bin/env bash
# The whole test suite, as a newcomer and CI run it: unit and integration tests, then the
# end-to-end suites with the real Linux kernel client (vhci-hcd) in QEMU guests (virtual devices,
# host passthrough, and the systemd service in a guest whose PID 1 is systemd).
# Installs what the end-to-end suite needs (Debian packages, a Debian kernel) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

section() { printf '\n==== %s (at %dm%02ds)\n' "$*" $((SECONDS / 60)) $((SECONDS % 60)); }

section "build"
cargo build --release --workspace --bins

section "static Linux binary (musl, x86_64; the kernel-client guest runs it as its client)"
# aarch64 is built by `STATIC=1 scripts/package.sh` only (a whole LTO build more)
static_client=$(scripts/build-static.sh x86_64-unknown-linux-musl)
desc=$(file -b "$static_client")
echo "$static_client: $(stat -c %s "$static_client") bytes: $desc"
case $desc in *x86-64*static*) ;; *) echo "not a static x86-64 executable"; exit 1;; esac

section "cargo install, as the README shows it (into a temporary root; reuses the build above)"
install_root="$(mktemp -d)"
cargo install --quiet --locked --path crates/usbipd --root "$install_root" --target-dir target
"$install_root/bin/usbipd" --version
rm -rf "$install_root"

section "unit and integration tests"
cargo test --release --workspace --no-run
# A hung test must fail the run with its name (libtest prints it after 60 s), not use up CI's
# time: running them gets 20 minutes, many times what it takes.
if ! timeout --kill-after=30 1200 cargo test --release --workspace; then
  echo "unit and integration tests failed or did not finish within 20 minutes"
  exit 1
fi

section "the product binary again (the tests built one with the test doubles; this puts back the one without)"
cargo build --release --workspace --bins
if target/release/usbipd server --help | grep -q -e --virtual-bus -e --extension-install-gate; then
  echo "target/release/usbipd has test-only options: the test-support feature leaked into the product"
  exit 1
fi

section "type-check and lint for the Apple targets (checked, not linked: no macOS SDK here)"
scripts/check-apple.sh

section "lint of the CI workflow (.github/workflows, actionlint)"
scripts/lint-workflows.sh

section "benchmark smoke run (quick mode; numbers are not checked)"
target/release/usbipd-bench --quick --usbipd target/release/usbipd > target/bench-quick.md
tail -n 30 target/bench-quick.md

section "fuzzing, short (the long runs are reported in docs/fuzzing.md)"
if cargo +nightly --version >/dev/null 2>&1; then
  if ! scripts/fuzz.sh "${USBIPD_FUZZ_SECONDS:-15}" > target/fuzz-short.log 2>&1; then
    tail -n 60 target/fuzz-short.log
    echo "fuzzing found a failure: see target/fuzz-short.log and fuzz/artifacts/"
    exit 1
  fi
  grep -E '^== |^Done ' target/fuzz-short.log
else
  echo "no nightly toolchain: cargo-fuzz skipped (the proptest decoders above still ran)"
fi

if [ "${USBIPD_SKIP_E2E:-0}" = 1 ]; then
  echo "USBIPD_SKIP_E2E=1: skipping the kernel-client suite"
  exit 0
fi

section "end-to-end: the Linux kernel client in QEMU"
bash tests/e2e/setup.sh
USBIPD_E2E_CLIENT="$static_client" bash tests/e2e/run.sh "$PWD/target/release/usbipd"

section "end-to-end: host passthrough on QEMU-emulated USB hardware"
bash tests/e2e/run-host.sh "$PWD/target/release/usbipd"

section "end-to-end: the systemd service in a Debian 12 guest whose PID 1 is systemd"
bash tests/e2e/run-systemd.sh "$PWD/target/release/usbipd"

section "all suites passed"
