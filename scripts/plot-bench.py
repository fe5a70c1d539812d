#!/usr/bin/env python3
"""Plots bulk throughput vs URB size and in-flight depth, and the per-window ratios of every
goal row against its goal, from `usbipd-bench --json FILE` (scripts/bench.sh runs it).

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
    fig = plt.figure(figsize=(12, 9.6))
    axes = [fig.add_subplot(2, 2, 1)]
    axes.append(fig.add_subplot(2, 2, 2, sharey=axes[0]))
    goals_ax = fig.add_subplot(2, 1, 2)
    plot_goals(goals_ax, report["rows"])
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


def plot_goals(ax, rows):
    """One line per goal row with a baseline: its per-window ratios, median, and the goal."""
    rows = [r for r in rows if r.get("goal") and r["summary"]["ratios"]]
    for i, r in enumerate(rows):
        ratios = r["summary"]["ratios"]
        met = r["summary"]["met"]
        color = "tab:green" if met else "tab:red"
        ax.plot(ratios, [i] * len(ratios), "o", color=color, alpha=0.5)
        ax.plot([r["summary"]["ratio"]], [i], "|", color=color, markersize=16, mew=2)
        op, target = r["goal"].split()[:2]
        ax.plot([float(target)], [i], "<" if op == ">=" else ">", color="black")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([f"{r['figure']}: {r['case']}" for r in rows], fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("ratio to the same-run baseline (dots: windows, bar: median, triangle: goal)")
    ax.grid(True, axis="x", which="both", alpha=0.3)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/benchmarks.json",
         sys.argv[2] if len(sys.argv) > 2 else "docs/benchmarks.png")
