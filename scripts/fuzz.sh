#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets/) for a while: scripts/fuzz.sh [seconds-per-target].
# Installs cargo-fuzz if missing; needs the nightly toolchain. New inputs go to
# fuzz/corpus/<target> (not committed), crashes to fuzz/artifacts/<target>; the committed seeds
# in fuzz/seeds/<target> are read-only input.
set -euo pipefail

seconds="${1:-20}"
cd "$(dirname "$0")/../fuzz"

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz" >&2
    cargo install cargo-fuzz
fi

status=0
for target in $(cargo +nightly fuzz list); do
    mkdir -p "corpus/$target"
    echo "== $target: ${seconds}s" >&2
    # -rss_limit_mb: the session target's server may buffer a few 16 MiB transfers at once.
    if ! cargo +nightly fuzz run -O "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=4096 -timeout=60 -print_final_stats=1; then
        echo "== $target FAILED: see fuzz/artifacts/$target" >&2
        status=1
    fi
done
exit "$status"
