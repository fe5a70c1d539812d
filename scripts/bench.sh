#!/usr/bin/env bash
# Regenerates the benchmark report from one full run: docs/benchmarks.json (every window of
# every figure), docs/benchmarks.md (goals with median, spread, met/missed; the machine; the
# commands; what the figures show for each missed goal) and docs/benchmarks.png.
# In-guest figures are merged from the committed docs/bench/*.json (written by the e2e guest
# benches tests/e2e/bench-guest.sh and bench-host.sh, each saying when and on which commit it
# was measured; schema in docs/benchmarks.md). Extra arguments go to usbipd-bench (e.g. --only).
# Takes about five minutes; run it on an otherwise idle machine if you can.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -p usbipd -p usbipd-bench

# A Python with matplotlib for the plot: the first python3 on PATH, else the system one
# (installing python3-matplotlib), else pip into the first one.
python=python3
if ! "$python" -c 'import matplotlib' 2>/dev/null; then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ] && [ -x /usr/bin/python3 ]; then
        /usr/bin/python3 -c 'import matplotlib' 2>/dev/null ||
            apt-get install -y -qq python3-matplotlib >/dev/null
        python=/usr/bin/python3
    else
        python3 -m pip install --quiet matplotlib
    fi
fi

mkdir -p target/bench
guest=()
for f in docs/bench/*.json; do [ -e "$f" ] && guest+=(--guest "$f"); done
target/release/usbipd-bench --usbipd target/release/usbipd \
    --json docs/benchmarks.json --markdown docs/benchmarks.md \
    "${guest[@]}" "$@" | tee target/bench/last-run.md
"$python" scripts/plot-bench.py docs/benchmarks.json docs/benchmarks.png
echo "wrote docs/benchmarks.md, docs/benchmarks.json, docs/benchmarks.png"
