//! Memory and start-up of the real `usbipd server`: idle RSS, per idle connection, per
//! imported idle connection (the demo devices), RSS per imported connection under load (eight
//! gadget zeros, bulk IN 64 KiB x16 on each, in windows), and spawn-to-accepting time.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::{bulk_submit, cpu, Plan};
use crate::child::ServerProcess;
use crate::load::{self, Counters};
use crate::raw::Op;
use crate::report::Row;

/// `usbipd server --demo`'s devices.
const DEMO_CONFIG: &str = r#"
[[device]]
kind = "keyboard"
[[device]]
kind = "serial"
tcp = "127.0.0.1:0"
[[device]]
kind = "storage"
image = ""
[[device]]
kind = "loopback"
"#;

/// Where memory and start-up are measured: the real `usbipd server --demo` when it runs.
pub enum Target {
    Usbipd(PathBuf),
    BenchChild,
}

pub fn spawn(target: &Target, devices: usize) -> anyhow::Result<ServerProcess> {
    spawn_with(target, devices, DEMO_CONFIG)
}

fn spawn_with(target: &Target, devices: usize, toml: &str) -> anyhow::Result<ServerProcess> {
    match target {
        Target::Usbipd(bin) => {
            // The demo's devices, with the serial port on an ephemeral port so that a running
            // usbipd (or anything on 3250) does not stop the measurement.
            let config =
                std::env::temp_dir().join(format!("usbipd-bench-{}.toml", std::process::id()));
            std::fs::write(&config, toml)?;
            let config = config.to_string_lossy().into_owned();
            ServerProcess::usbipd(bin, &["--config", &config])
        }
        Target::BenchChild => ServerProcess::bench(devices),
    }
}

pub async fn memory(target: &Target) -> anyhow::Result<Vec<Row>> {
    const IDLE: usize = 64;
    let who = match target {
        Target::Usbipd(_) => "usbipd server --demo",
        Target::BenchChild => "bench server, 64 devices",
    };
    let server = spawn(target, 64)?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle = server.rss_kib();
    // Connected, nothing sent: a connection waiting for its handshake.
    let mut sockets = Vec::new();
    for _ in 0..IDLE {
        sockets.push(tokio::net::TcpStream::connect(server.usbip).await?);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let connected = server.rss_kib();
    // Free the handshake slots again: one client address may hold only so many connections.
    drop(sockets);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let base = server.rss_kib();
    // Imported, no URB in flight.
    let devices = usbip_client::list_devices(server.usbip).await?;
    let mut imported = Vec::new();
    for d in devices.iter().take(IDLE) {
        if let Ok(c) = usbip_client::Connection::import(server.usbip, &d.record.busid).await {
            imported.push(c);
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after_import = server.rss_kib();
    eprintln!("  memory ({who}): idle {idle} KiB, +{IDLE} connections {connected} KiB, +{} imports {after_import} KiB", imported.len());
    let mut rows = vec![
        Row::new(
            "memory",
            format!("idle RSS ({who}; earlier limit 10 MiB)"),
            idle as f64 / 1024.0,
            "MiB",
        ),
        Row::new(
            "memory",
            "per idle connection (before handshake; earlier limit 256 KiB)",
            connected.saturating_sub(idle) as f64 / IDLE as f64,
            "KiB",
        ),
    ];
    if !imported.is_empty() {
        rows.push(Row::new(
            "memory",
            format!(
                "per imported idle connection ({} imports; earlier limit 256 KiB)",
                imported.len()
            ),
            after_import.saturating_sub(base) as f64 / imported.len() as f64,
            "KiB",
        ));
    }
    Ok(rows)
}

pub async fn startup(target: &Target, plan: &Plan) -> anyhow::Result<Vec<Row>> {
    let mut times = Vec::new();
    for _ in 0..plan.startups {
        let s = spawn(target, 4)?;
        times.push(s.startup);
    }
    times.sort();
    let median = times[times.len() / 2].as_secs_f64() * 1e3;
    let who = match target {
        Target::Usbipd(_) => "usbipd server --demo",
        Target::BenchChild => "bench server",
    };
    eprintln!(
        "  start-up ({who}): median {median:.1} ms of {}",
        times.len()
    );
    Ok(vec![Row::new(
        "start-up",
        format!(
            "spawn to accepting ({who}, median of {}; earlier limit 50 ms)",
            times.len()
        ),
        median,
        "ms",
    )])
}

/// RSS per imported connection under load: eight imported gadget zeros (`kind = "loopback"`,
/// source/sink configuration), bulk IN 64 KiB x16 on each; per window, (RSS halfway through
/// the window - RSS before the imports) / 8.
pub async fn under_load(target: &Target, plan: &Plan) -> anyhow::Result<Vec<Row>> {
    const CONNECTIONS: usize = 8;
    let toml = "[[device]]\nkind = \"loopback\"\n".repeat(CONNECTIONS);
    let mut server = spawn_with(target, 64, &toml)?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = server.rss_kib();
    let devices = usbip_client::list_devices(server.usbip).await?;
    let mut conns = Vec::new();
    for d in devices
        .iter()
        .filter(|d| (d.record.id_vendor, d.record.id_product) == (0x0525, 0xa4a0))
        .rev()
        .take(CONNECTIONS)
    {
        conns.push(load::import(server.usbip, &d.record.busid).await?);
    }
    anyhow::ensure!(
        conns.len() == CONNECTIONS,
        "only {} gadget zeros to import",
        conns.len()
    );
    let (mut per_conn, mut windows) = (Vec::new(), Vec::new());
    for i in 0..plan.windows {
        let counters: Vec<Arc<Counters>> = (0..CONNECTIONS).map(|_| Arc::default()).collect();
        let tasks: Vec<_> = conns
            .iter()
            .zip(&counters)
            .map(|(c, n)| {
                tokio::spawn(load::urbs(
                    c.clone(),
                    bulk_submit(Op::In, 64 << 10),
                    16,
                    n.clone(),
                ))
            })
            .collect();
        let pid = server.pid;
        let half = plan.warmup + plan.duration / 2;
        let sampler = tokio::spawn(async move {
            tokio::time::sleep(half).await;
            crate::child::rss_kib(pid).unwrap_or(0)
        });
        let w = load::measure(&mut server, &counters, plan.warmup, plan.duration).await;
        for t in tasks {
            t.await?;
        }
        let rss = sampler.await?;
        anyhow::ensure!(w.errors == 0, "memory under load: URBs failed");
        let kib = rss.saturating_sub(before) as f64 / CONNECTIONS as f64;
        eprintln!(
            "  memory under load window {i}: RSS {before} -> {rss} KiB, {kib:.0} KiB per connection, {:.0} MiB/s",
            w.mib_per_sec()
        );
        per_conn.push(kib);
        windows.push(w);
    }
    Ok(vec![Row::windows(
        "memory",
        format!("RSS per imported connection under load (bulk IN 64 KiB x16 on {CONNECTIONS})"),
        "KiB",
        per_conn,
        false,
    )
    .goal("<= 2048")
    .note(format!(
        "idle RSS before the imports {before} KiB; {}",
        cpu(&windows)
    ))])
}
