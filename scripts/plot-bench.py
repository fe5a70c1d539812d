#!/usr/bin/env python3
"""Plots bulk throughput vs URB size and in-flight depth from `usbipd-bench --json FILE`.

Usage: scripts/plot-bench.py docs/benchmarks.json docs/benchmarks.png
Needs matplotlib (pip install matplotlib). Reads the JSON only; never runs the benchmark.
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(src, dst):
    with open(src) as f:
        report = json.load(f)
    grid = report["grid"]
    m = report["machine"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    for ax, direction in zip(axes, ["IN", "OUT"]):
        points = [g for g in grid if g["direction"] == direction]
        depths = sorted({g["depth"] for g in points})
        colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for i, depth in enumerate(depths):
            row = sorted((g for g in points if g["depth"] == depth), key=lambda g: g["size"])
            sizes = [g["size"] for g in row]
            c = colors[i % len(colors)]
            ax.plot(sizes, [g["usbip_mib_s"] for g in row], "o-", color=c,
                    label=f"usbipd, {depth} in flight")
            ax.plot(sizes, [g["raw_mib_s"] for g in row], "x--", color=c, alpha=0.5,
                    label=f"raw TCP, {depth} in flight")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("URB size (bytes)")
        ax.set_title(f"bulk {direction}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("MiB/s (payload)")
    axes[1].legend(fontsize=7, ncol=2)
    fig.suptitle(f"usbipd-bench ({report['mode']}): {m['cores']} cores, {m['cpu']}, Linux {m['kernel']}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(dst, dpi=90)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/benchmarks.json",
         sys.argv[2] if len(sys.argv) > 2 else "docs/benchmarks.png")
