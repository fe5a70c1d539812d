//! usbipd-bench: measures the usbipd engine against raw TCP baselines taken in the same run,
//! and prints ratios (the machines are noisy; absolute numbers alone mean little).
//!
//! `usbipd-bench --quick` is a smoke test for CI (under a minute, never fails on timing);
//! `usbipd-bench` is the full run (`scripts/bench.sh` runs it and regenerates
//! docs/benchmarks.md). The server always runs in a separate process.

mod alloc;
mod child;
mod fake;
mod figures;
mod lean;
mod load;
mod markdown;
mod pin;
mod raw;
mod report;
mod tls;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[global_allocator]
static GLOBAL: alloc::Counting = alloc::Counting;

#[derive(Debug, Parser)]
#[command(
    name = "usbipd-bench",
    about = "Benchmark usbipd against raw TCP baselines"
)]
struct Args {
    #[command(subcommand)]
    command: Option<Cmd>,
    /// Short smoke-test run (CI): fewer points, shorter windows
    #[arg(long)]
    quick: bool,
    /// Also write the results as JSON
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// The usbipd binary for memory and start-up [default: next to this binary]
    #[arg(long, value_name = "PATH")]
    usbipd: Option<PathBuf>,
    /// Figures to run, comma-separated: goals,client,latency,many,tls,grid,memory,startup
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Merge rows measured in a guest (JSON: {"measured": {...}, "rows": [...]}, see
    /// docs/benchmarks.md); repeat for several files (scripts/bench.sh: docs/bench/*.json)
    #[arg(long, value_name = "FILE")]
    guest: Vec<PathBuf>,
    /// Also write the report as Markdown (docs/benchmarks.md)
    #[arg(long, value_name = "FILE")]
    markdown: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// (internal) Run the server under test; driven over stdin/stdout by the parent
    #[command(hide = true)]
    Serve {
        #[arg(long, default_value_t = 64)]
        devices: usize,
        /// Also serve TLS, with the server state (key, trusted clients) in this directory
        #[arg(long, value_name = "DIR")]
        tls_state: Option<PathBuf>,
    },
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let result = match args.command {
        Some(Cmd::Serve { devices, tls_state }) => child::serve(devices, tls_state),
        None => run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("usbipd-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let plan = figures::Plan::new(args.quick);
    let wants = |f: &str| args.only.is_empty() || args.only.iter().any(|o| o == f);
    let mut report = report::Report {
        machine: report::Machine::detect(),
        mode: if args.quick { "quick" } else { "full" }.into(),
        windows: plan.windows,
        command: std::env::args().collect::<Vec<_>>().join(" "),
        notes: Vec::new(),
        rows: Vec::new(),
        grid: Vec::new(),
    };
    let load = |when: &str| {
        let l = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        let l: Vec<&str> = l.split_whitespace().take(3).collect();
        format!(
            "load average {when} the run: {} (1, 5, 15 min; 2.0 = both cores busy)",
            l.join(", ")
        )
    };
    report.notes.push(load("at the start of"));
    // The client side: the same runtime shape as the server's, in this process.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut server = child::ServerProcess::bench(64)?;
        report.notes.push(
            "throughput, allocations, latency, many clients, client library: the usbipd engine in a separate process \
             (usbipd-bench serve: usbipd::server::Server on a multi-thread tokio runtime, 64 gadget-zero virtual devices \
             in the source/sink configuration, a counting allocator), with the raw servers in the same process"
                .into(),
        );
        if wants("goals") {
            eprintln!("throughput goals");
            report.rows.extend(figures::goals::throughput(&mut server, &plan).await?);
        }
        if wants("client") {
            eprintln!("client library");
            report.rows.extend(figures::goals::client_library(&mut server, &plan).await?);
        }
        if wants("latency") {
            eprintln!("latency");
            let (rows, notes) = figures::latency::latency(&mut server, &plan).await?;
            report.rows.extend(rows);
            report.notes.extend(notes);
        }
        if wants("many") {
            eprintln!("many clients");
            report.rows.extend(figures::many::many(&mut server, &plan).await?);
        }
        if wants("tls") {
            eprintln!("TLS");
            let (rows, notes) = tls::figure(&mut server, &plan).await?;
            report.rows.extend(rows);
            report.notes.extend(notes);
        }
        if wants("grid") {
            eprintln!("bulk throughput grid");
            report.grid = figures::grid::bulk(&mut server, &plan).await?;
        }
        drop(server);
        if wants("memory") || wants("startup") {
            use figures::memory::{self, Target};
            let target = match child::find_usbipd(args.usbipd.clone()) {
                Some(bin) => match memory::spawn(&Target::Usbipd(bin.clone()), 4) {
                    Ok(_) => Target::Usbipd(bin),
                    Err(e) => {
                        let note = format!("memory/start-up: `usbipd server` does not run ({e}); measured the bench server process instead");
                        eprintln!("  {note}");
                        report.notes.push(note);
                        Target::BenchChild
                    }
                },
                None => {
                    report.notes.push("memory/start-up: no usbipd binary found (build it, or pass --usbipd); measured the bench server process instead".into());
                    Target::BenchChild
                }
            };
            if let Target::Usbipd(bin) = &target {
                report.notes.push(format!(
                    "memory and start-up: the real `{} server` (demo devices; eight `kind = \"loopback\"` gadget zeros for the figure under load)",
                    bin.display()
                ));
            }
            if wants("memory") {
                eprintln!("memory");
                report.rows.extend(memory::memory(&target).await?);
                report.rows.extend(memory::under_load(&target, &plan).await?);
            }
            if wants("startup") {
                eprintln!("start-up");
                report.rows.extend(memory::startup(&target, &plan).await?);
            }
        }
        anyhow::Ok(())
    })?;
    report.notes.push(load("at the end of"));
    for path in &args.guest {
        match report::GuestRows::read(path)? {
            Some(guest) => {
                report.notes.push(guest.describe(path));
                report.rows.extend(guest.rows);
            }
            None => report.notes.push(format!(
                "no in-guest figures from {} (it does not exist)",
                path.display()
            )),
        }
    }
    println!(
        "# usbipd-bench ({} mode, {} windows per goal)\n",
        report.mode, report.windows
    );
    let m = &report.machine;
    println!(
        "machine: {} cores, {}, {} MiB, Linux {}\n",
        m.cores, m.cpu, m.memory_mib, m.kernel
    );
    println!("{}", report.table(true));
    println!("{}", report.table(false));
    if !report.grid.is_empty() {
        println!("{}", report.grid_table());
    }
    for n in &report.notes {
        println!("note: {n}");
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report.json())?)?;
    }
    if let Some(path) = &args.markdown {
        std::fs::write(path, markdown::render(&report))?;
    }
    Ok(())
}
