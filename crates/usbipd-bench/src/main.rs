//! usbipd-bench: measures the usbipd engine against raw TCP baselines taken in the same run,
//! and prints ratios (the machines are noisy; absolute numbers alone mean little).
//!
//! `usbipd-bench --quick` is a smoke test for CI (under a minute, never fails on timing);
//! `usbipd-bench` is the full run. The server always runs in a separate process.

mod alloc;
mod child;
mod figures;
mod lean;
mod load;
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
    /// Figures to run, comma-separated: bulk,small,latency,many,tls,memory,startup
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
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
        notes: Vec::new(),
        rows: Vec::new(),
        grid: Vec::new(),
    };
    // The client side: the same runtime shape as the server's, in this process.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut server = child::ServerProcess::bench(64)?;
        report.notes.push(
            "throughput, small URBs, latency, many clients: usbipd engine in a separate process \
             (usbipd-bench serve) exporting the gadget-zero virtual device (source/sink configuration); client: usbip-client"
                .into(),
        );
        if wants("bulk") {
            eprintln!("bulk throughput");
            let (rows, grid) = figures::bulk(&mut server, &plan).await?;
            report.rows.extend(rows);
            report.grid = grid;
        }
        if wants("small") {
            eprintln!("small URB rate");
            report.rows.extend(figures::small(&mut server, &plan).await?);
        }
        if wants("latency") {
            eprintln!("latency");
            report.rows.extend(figures::latency(&mut server, &plan).await?);
        }
        if wants("many") {
            eprintln!("many clients");
            let peak = report
                .grid
                .iter()
                .filter(|g| g.direction == "IN" && g.size == 64 << 10)
                .map(|g| g.usbip_mib_s)
                .max_by(f64::total_cmp);
            report.rows.extend(figures::many(&mut server, &plan, peak).await?);
        }
        if wants("tls") {
            eprintln!("TLS");
            let (rows, notes) = tls::figure(&mut server, &plan).await?;
            report.rows.extend(rows);
            report.notes.extend(notes);
        }
        drop(server);
        if wants("memory") || wants("startup") {
            let target = match child::find_usbipd(args.usbipd.clone()) {
                Some(bin) => match figures::spawn(&figures::Target::Usbipd(bin.clone()), 4) {
                    Ok(_) => figures::Target::Usbipd(bin),
                    Err(e) => {
                        let note = format!("memory/start-up: `usbipd server --demo` does not run ({e}); measured the bench server process instead");
                        eprintln!("  {note}");
                        report.notes.push(note);
                        figures::Target::BenchChild
                    }
                },
                None => {
                    report.notes.push("memory/start-up: no usbipd binary found (build it, or pass --usbipd); measured the bench server process instead".into());
                    figures::Target::BenchChild
                }
            };
            if wants("memory") {
                eprintln!("memory");
                report.rows.extend(figures::memory(&target).await?);
            }
            if wants("startup") {
                eprintln!("start-up");
                report.rows.extend(figures::startup(&target, &plan).await?);
            }
        }
        anyhow::Ok(())
    })?;
    println!("# usbipd-bench ({} mode)\n", report.mode);
    let m = &report.machine;
    println!(
        "machine: {} cores, {}, {} MiB, Linux {}\n",
        m.cores, m.cpu, m.memory_mib, m.kernel
    );
    println!("{}", report.table());
    if !report.grid.is_empty() {
        println!("{}", report.grid_table());
    }
    for n in &report.notes {
        println!("note: {n}");
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    Ok(())
}
