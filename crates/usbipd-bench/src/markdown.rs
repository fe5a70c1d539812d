//! docs/benchmarks.md, rendered from one run's report: how the bench measures, the machine, the
//! exact commands, the goals table (median, spread, goal, met/missed), for each missed goal what
//! the run's own figures show about it, the other figures, the grid and the plot.
//! Everything in it comes from the report or describes the code as it is.

use crate::report::{fmt, Report};

const METHOD: &str = "\
## How it measures

- **Windows.** Every goal figure is measured in windows (5 in a full run). A window is a usbipd
  measurement followed right away by its baseline of the same shape, so each ratio compares two
  measurements taken under the same load of this shared machine. The table gives the median of
  the per-window ratios and their spread (min-max); a goal is met when the median ratio (or,
  for rows without a baseline, the median value) meets it. Single figures swing by 2x from run
  to run on these machines: read the spread.
- **Server under test.** A separate process. Throughput, allocations, latency, many clients and
  the client library: `usbipd-bench serve`, which runs the usbipd engine
  (`usbipd::server::Server`, multi-thread tokio runtime as in `usbipd`) with 64 gadget-zero
  virtual devices (0525:a4a0, source/sink configuration: bulk IN completes at once from a
  static zero buffer, bulk OUT sinks), counts its own allocations (counting global allocator)
  and also runs the raw servers. Memory and start-up: the real `usbipd server` binary, with the
  demo devices, and with eight `kind = \"loopback\"` gadget zeros for RSS under load.
- **Clients.** They sleep while waiting (blocking reads, or tokio tasks parked on the socket);
  none spins. The throughput goal rows use `usbip-client`'s `OwnedPipeline` (one task owns the
  socket and keeps N URBs in flight); many clients, memory under load and the grid use its
  shared `Connection` with a `Pipeline` (reader task, one mailbox). The *lean client* rows (one
  task, `usbip-proto` encoder, no library) show the server alone.
- **Latency.** One URB in flight, GET_DESCRIPTOR (48 B -> 66 B). Round trips on these
  virtual machines are bimodal: a wake-up that stays on its vCPU costs a few microseconds, one
  that crosses vCPUs tens, so each placement is measured on its own: in the *same vCPU* mode
  the client thread and a server process of its own are pinned to one CPU, in the *cross vCPU*
  mode to two (`sched_setaffinity`, the server's before it executes, so all its threads
  inherit it); usbipd and the raw servers live in that one process, so they are pinned alike
  (pinned to one CPU, its multi-thread runtime has one worker, as `taskset -c N usbipd server`
  would: tokio sizes it from the CPUs the process may use).
  One blocking client thread (it sleeps in `read`) interleaves its round trips: usbipd, each
  raw server, then `usbip-client` (on a current-thread runtime of that thread; a comparison
  row), in an order rotated every round, so that the machine's noise falls on every target
  alike. A window's baseline is the fastest raw server of that window, for p50 and for p99
  each; the goal is met only if it is met in every pinned mode. The rows *against the raw
  async server (same runtime)* set usbipd beside the raw server of its own runtime shape (one
  task per connection on the multi-thread runtime, woken through epoll): what usbipd adds on
  top of that path, apart from what the path costs against a thread blocked in `read`. The *unpinned* rows (the
  shared server process, no pinning) show what a run samples without pinning; no goal.
- **TLS.** Bulk IN and GET_DESCRIPTOR latency through `usbip-client` over TLS in the client
  process and over the client's relay (TLS, then a Unix socket pair), against plain TCP on the
  same server process, in windows as for the goals (one in quick mode): in each window every
  shape over plain TCP, then over each TLS path; the latency rounds go to the three
  connections in turn, in an order rotated every round.
- **Baselines.** Raw TCP with the same message sizes and depth: IN sends 48 B and gets 48+N B,
  OUT sends 48+N B and gets 48 B (control GET_DESCRIPTOR: 48 B -> 66 B). The async raw server
  is one task per connection with a streaming parser, IN payloads written from one static zero
  buffer by vectored writes; the blocking raw server is one thread per connection; the
  current-thread raw server runs the async one's connection task on a current-thread runtime
  (the thread woken by epoll answers). Latency is judged against the fastest of the three in
  each window. The client-library rows use a
  USB/IP server that answers from prebuilt replies (`usbipd-bench` `fake.rs`), against the raw
  client and server.
- **CPU, memory, allocations.** Server CPU from `/proc/PID/task/*/schedstat`, RSS from
  `/proc/PID/status`, the client's CPU from its own schedstat. Allocations per URB: the bench
  server's allocation count over a window / URBs completed; a window with fewer than 1 per
  1000 URBs counts as 0 (runtime housekeeping, not the URB path).
";

pub fn render(r: &Report) -> String {
    let mut out = String::new();
    let m = &r.machine;
    out.push_str("# Benchmarks\n\n");
    out.push_str(
        "Generated by `scripts/bench.sh` from one run of `usbipd-bench` (do not edit by hand: \
         rerun it). `usbipd-bench` measures usbipd and, in the same run, raw TCP baselines of the \
         same shape, and reports ratios: the machines are shared and noisy, so an absolute number \
         alone means little.\n\n",
    );
    out.push_str("```sh\nscripts/bench.sh                       # this file, docs/benchmarks.json and .png\n");
    out.push_str("target/release/usbipd-bench --quick    # the smoke test scripts/test.sh runs; never fails on timing\n");
    out.push_str("target/release/usbipd-bench --only latency,goals   # some figures only\n```\n\n");
    out.push_str(&format!(
        "This run: `{}` ({} mode, {} windows per goal figure).\n\n",
        r.command, r.mode, r.windows
    ));
    out.push_str(&format!(
        "## Machine\n\n{} cores ({}), {} MiB RAM, Linux {}; shared with other builds while measuring.\n\n",
        m.cores, m.cpu, m.memory_mib, m.kernel
    ));
    out.push_str("## Goals\n\n");
    out.push_str(&r.table(true));
    out.push('\n');
    if let Some(v) = latency_verdict(r) {
        out.push_str(&v);
    }
    let missed: Vec<_> = r
        .rows
        .iter()
        .filter(|row| row.summary().met == Some(false))
        .collect();
    out.push_str("## Missed goals: what the figures show\n\n");
    if missed.is_empty() {
        out.push_str("None in this run.\n\n");
    }
    for row in missed {
        let s = row.summary();
        let (what, v) = match s.ratio {
            Some(ratio) => ("median ratio", ratio),
            None => ("median", s.value),
        };
        out.push_str(&format!(
            "- **{} / {}**: {what} {} (spread {}-{}), goal {}.",
            row.figure,
            row.case,
            fmt(v),
            fmt(s.spread.0),
            fmt(s.spread.1),
            row.goal.as_deref().unwrap_or("-"),
        ));
        out.push_str(&reading(row, &s));
        if let Some(note) = &row.note {
            out.push_str(&format!(" Measured alongside: {note}."));
        }
        out.push('\n');
    }
    out.push('\n');
    out.push_str("## Other figures (no goal of this round)\n\n");
    out.push_str(&r.table(false));
    out.push('\n');
    let notes: Vec<_> = r
        .rows
        .iter()
        .filter(|row| row.summary().met != Some(false))
        .filter_map(|row| row.note.as_ref().map(|n| (row, n)))
        .collect();
    if !notes.is_empty() {
        out.push_str("Measured alongside:\n\n");
        for (row, n) in notes {
            out.push_str(&format!("- {} / {}: {n}\n", row.figure, row.case));
        }
        out.push('\n');
    }
    if !r.grid.is_empty() {
        out.push_str("## Bulk throughput grid (one window per point, usbip-client)\n\n");
        out.push_str(&r.grid_table());
        out.push_str("\n![throughput vs URB size and depth](benchmarks.png)\n\n");
    }
    out.push_str(METHOD);
    if !r.notes.is_empty() {
        out.push_str("\n## Notes of this run\n\n");
        for n in &r.notes {
            out.push_str(&format!("- {n}\n"));
        }
    }
    out.push_str(
        "\n## In-guest figures\n\nThe rows named `guest ...` and `host passthrough: ...` are measured \
         inside a QEMU guest (TCG, 2 vCPUs) by the e2e benches and kept as committed files, merged \
         here by `scripts/bench.sh` (`--guest docs/bench/FILE`, once per file); the notes above say \
         when and on which commit each was measured. `tests/e2e/bench-guest.sh` writes \
         `docs/bench/guest-tls.json` (the demo disk over plain TCP, kernel TLS and the TLS relay); \
         `tests/e2e/bench-host.sh` writes `docs/bench/guest-host.json` (host passthrough, goal 5: \
         two identical emulated usb-storage disks, one served by usbipd and one by the kernel's \
         usbip-host at the same time, read and written by the guest's `dd` with O_DIRECT in ABBA \
         passes, the disks and the order swapped between windows; the emulated usb-kbd served by \
         each in turn, its latency from the QEMU monitor's `sendkey` to the guest's evdev event, \
         timed by the host, with the local usbhid row measuring the part both servers share). Format: `{\"measured\": {\"at\", \"commit\", \"dirty\", \"by\"}, \"rows\": \
         [{\"figure\", \"case\", \"unit\", \"samples\", \"baseline\", \"baseline_samples\", \"goal\", \
         \"higher_is_better\"}]}`, per-window ratio = samples[i] / baseline_samples[i].\n",
    );
    out
}

/// What the windows themselves say about a missed goal.
fn reading(row: &crate::report::Row, s: &crate::report::Summary) -> String {
    let goal = row.goal.as_deref().unwrap_or("");
    let judged: Vec<f64> = if s.ratios.is_empty() {
        row.samples.clone()
    } else {
        s.ratios.clone()
    };
    let meeting = judged
        .iter()
        .filter(|v| crate::report::meets(goal, **v) == Some(true))
        .count();
    let mut out = if meeting == 0 {
        format!(
            " Every window misses it ({} of {}).",
            judged.len(),
            judged.len()
        )
    } else {
        format!(
            " {meeting} of {} windows meet it: the windows fall on both sides of the goal, so the machine's noise decides this row as much as the code.",
            judged.len()
        )
    };
    if let (Some(b), true) = (s.baseline_value, row.unit == "us") {
        out.push_str(&format!(
            " Median {} us above the baseline per round trip.",
            fmt(s.value - b)
        ));
    }
    out
}

/// Goal 1 (latency) as one verdict: met only if every latency goal row (p50 and p99 of each
/// pinned mode) is met.
fn latency_verdict(r: &Report) -> Option<String> {
    let rows: Vec<_> = r
        .rows
        .iter()
        .filter(|row| row.figure == "latency" && row.goal.is_some())
        .collect();
    if rows.is_empty() {
        return None;
    }
    let missed: Vec<&str> = rows
        .iter()
        .filter(|row| row.summary().met != Some(true))
        .map(|row| row.case.as_str())
        .collect();
    Some(if missed.is_empty() {
        format!(
            "**Latency (goal 1): met** in every pinned mode ({} rows).\n\n",
            rows.len()
        )
    } else {
        format!(
            "**Latency (goal 1): MISSED**: it needs every pinned mode; missed: {}.\n\n",
            missed.join("; ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Machine, Row};

    fn report(rows: Vec<Row>) -> Report {
        Report {
            machine: Machine::detect(),
            mode: "quick".into(),
            windows: 2,
            command: "usbipd-bench".into(),
            notes: Vec::new(),
            rows,
            grid: Vec::new(),
        }
    }

    fn row(case: &str, usbipd: f64, goal: &str) -> Row {
        Row::windows("latency", case, "us", vec![usbipd, usbipd], false)
            .against("fastest raw server of each window", vec![10.0, 10.0])
            .goal(goal)
    }

    #[test]
    fn latency_is_met_only_when_every_pinned_mode_meets_it() {
        let met = report(vec![
            row("same, p50", 10.5, "<= 1.1"),
            row("cross, p50", 10.9, "<= 1.1"),
        ]);
        assert!(latency_verdict(&met).is_some_and(|v| v.contains("met** in every")));
        let missed = report(vec![
            row("same, p50", 10.5, "<= 1.1"),
            row("cross, p99", 14.0, "<= 1.3"),
        ]);
        let v = latency_verdict(&missed).unwrap_or_default();
        assert!(v.contains("MISSED") && v.contains("cross, p99") && !v.contains("same, p50"));
        assert!(render(&missed).contains(&v));
        // Rows without a goal (unpinned, comparison rows) do not take part.
        let none = report(vec![Row::windows(
            "latency",
            "unpinned",
            "us",
            vec![1.0],
            false,
        )]);
        assert_eq!(latency_verdict(&none), None);
    }
}
