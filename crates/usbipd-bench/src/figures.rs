//! The figures of the issue, each measured against its raw baseline in the same run.
//!
//! Every figure reports what it saw; none asserts timing (a slow machine gives a NO in the
//! table, never a failed run). Only broken behaviour (errors, refused imports) is an error.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use usbip_client::Submit;

use crate::child::ServerProcess;
use crate::load::{self, percentile_us, Counters};
use crate::raw::{self, Op};
use crate::report::{size, GridPoint, Row};

pub struct Plan {
    pub quick: bool,
    pub warmup: Duration,
    pub duration: Duration,
    pub sizes: Vec<usize>,
    pub depths: Vec<usize>,
    pub latency_count: usize,
    pub many_duration: Duration,
    pub startups: usize,
}

impl Plan {
    pub fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                quick,
                warmup: Duration::from_millis(50),
                duration: Duration::from_millis(200),
                sizes: vec![512, 64 << 10],
                depths: vec![1, 16],
                latency_count: 1000,
                many_duration: Duration::from_secs(1),
                startups: 3,
            }
        } else {
            Plan {
                quick,
                warmup: Duration::from_millis(200),
                duration: Duration::from_millis(800),
                sizes: vec![512, 4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20],
                depths: vec![1, 4, 16, 64],
                latency_count: 20000,
                many_duration: Duration::from_secs(5),
                startups: 10,
            }
        }
    }
}

const EP: u8 = crate::device::BULK_IN;

fn bulk_submit(op: Op, n: usize) -> Submit {
    match op {
        Op::In => Submit::bulk_in(EP, n as u32),
        _ => Submit::bulk_out(crate::device::BULK_OUT, Bytes::from(vec![0u8; n])),
    }
}

/// One usbip window and one raw window with the same shape.
async fn pair(
    server: &mut ServerProcess,
    conn: &usbip_client::Connection,
    plan: &Plan,
    op: Op,
    raw_op: Op,
    n: usize,
    depth: usize,
) -> anyhow::Result<(load::Window, load::Window)> {
    let c = Arc::new(Counters::default());
    let task = tokio::spawn(load::urbs(
        conn.clone(),
        bulk_submit(op, n),
        depth,
        c.clone(),
    ));
    let usbip = load::measure(server, &[c], plan.warmup, plan.duration).await;
    task.await?;
    let raw_addr = server.raw.ok_or_else(|| anyhow::anyhow!("no raw server"))?;
    let c = Arc::new(Counters::default());
    let task = tokio::spawn(raw::load(raw_addr, raw_op, n, depth, c.clone()));
    let raw = load::measure(server, &[c], plan.warmup, plan.duration).await;
    task.await??;
    Ok((usbip, raw))
}

/// A lean-client usbip window (bus id 0-2) and a raw window of the same shape.
async fn lean_pair(
    server: &mut ServerProcess,
    plan: &Plan,
    op: Op,
    n: usize,
    depth: usize,
) -> anyhow::Result<(load::Window, load::Window)> {
    let dir = if op == Op::In {
        usbip_proto::Direction::In
    } else {
        usbip_proto::Direction::Out
    };
    let c = Arc::new(Counters::default());
    let addr = server.usbip;
    let task = tokio::spawn({
        let c = c.clone();
        async move { crate::lean::load(addr, "0-2", dir, n, depth, c).await }
    });
    let lean = load::measure(server, &[c], plan.warmup, plan.duration).await;
    task.await??;
    let raw_addr = server.raw.ok_or_else(|| anyhow::anyhow!("no raw server"))?;
    let c = Arc::new(Counters::default());
    let task = tokio::spawn(raw::load(raw_addr, op, n, depth, c.clone()));
    let raw = load::measure(server, &[c], plan.warmup, plan.duration).await;
    task.await??;
    Ok((lean, raw))
}

pub async fn bulk(
    server: &mut ServerProcess,
    plan: &Plan,
) -> anyhow::Result<(Vec<Row>, Vec<GridPoint>)> {
    let conn = load::import(server.usbip, "0-1").await?;
    let mut grid = Vec::new();
    let mut rows = Vec::new();
    for op in [Op::In, Op::Out] {
        for &n in &plan.sizes {
            for &depth in &plan.depths {
                let (u, r) = pair(server, &conn, plan, op, op, n, depth).await?;
                let dir = if op == Op::In { "IN" } else { "OUT" };
                eprintln!(
                    "  bulk {dir} {} x{depth}: {:.0} MiB/s vs raw {:.0} MiB/s{}",
                    size(n),
                    u.mib_per_sec(),
                    r.mib_per_sec(),
                    if u.errors > 0 { " (ERRORS)" } else { "" }
                );
                let point = GridPoint {
                    direction: dir.into(),
                    size: n,
                    depth,
                    usbip_mib_s: u.mib_per_sec(),
                    raw_mib_s: r.mib_per_sec(),
                    ratio: u.mib_per_sec() / r.mib_per_sec().max(1e-9),
                    urbs_per_s: u.ops_per_sec(),
                    server_cpu: u.server_cpu / u.secs,
                    client_cpu: u.client_cpu / u.secs,
                    raw_server_cpu: r.server_cpu / r.secs,
                    raw_client_cpu: r.client_cpu / r.secs,
                    allocs_per_urb: u.allocs_per_op(),
                    alloc_bytes_per_urb: u.allocs.map(|a| a.bytes as f64 / u.ops.max(1) as f64),
                };
                if n == 64 << 10 && depth == 16 {
                    rows.push(
                        Row::new(
                            "bulk throughput",
                            format!("{dir} 64 KiB x16"),
                            point.usbip_mib_s,
                            "MiB/s",
                        )
                        .baseline(point.raw_mib_s)
                        .ratio_goal(">=", 0.60),
                    );
                    // The server alone: a lean client, against a raw run right after it.
                    let (l, r) = lean_pair(server, plan, op, n, depth).await?;
                    eprintln!(
                        "  bulk {dir} 64 KiB x16, lean client: {:.0} MiB/s vs raw {:.0} MiB/s",
                        l.mib_per_sec(),
                        r.mib_per_sec()
                    );
                    rows.push(
                        Row::new(
                            "bulk throughput",
                            format!("{dir} 64 KiB x16, lean client (server only)"),
                            l.mib_per_sec(),
                            "MiB/s",
                        )
                        .baseline(r.mib_per_sec())
                        .ratio_goal(">=", 0.60),
                    );
                }
                if u.errors > 0 {
                    rows.push(
                        Row::new(
                            "bulk throughput",
                            format!("{dir} {} x{depth} errors", size(n)),
                            u.errors as f64,
                            "URBs",
                        )
                        .check("no errors", false),
                    );
                }
                grid.push(point);
            }
        }
    }
    for dir in ["IN", "OUT"] {
        let best = grid
            .iter()
            .filter(|g| g.direction == dir)
            .max_by(|a, b| a.usbip_mib_s.total_cmp(&b.usbip_mib_s));
        if let Some(b) = best {
            rows.push(
                Row::new(
                    "bulk throughput",
                    format!("{dir} peak ({} x{})", size(b.size), b.depth),
                    b.usbip_mib_s,
                    "MiB/s",
                )
                .baseline(b.raw_mib_s),
            );
        }
    }
    Ok((rows, grid))
}

pub async fn small(server: &mut ServerProcess, plan: &Plan) -> anyhow::Result<Vec<Row>> {
    const DEPTH: usize = 32;
    let conn = load::import(server.usbip, "0-1").await?;
    let mut rows = Vec::new();
    let sizes: &[usize] = if plan.quick { &[0, 64] } else { &[0, 8, 64] };
    for op in [Op::In, Op::Out] {
        for &n in sizes {
            let (u, r) = pair(server, &conn, plan, op, Op::Echo, n, DEPTH).await?;
            let dir = if op == Op::In { "IN" } else { "OUT" };
            eprintln!(
                "  small {dir} {n} B x{DEPTH}: {:.0}/s ({:.0}/server core, {:.2} server cores) vs raw echo {:.0}/s",
                u.ops_per_sec(),
                u.ops_per_server_core(),
                u.server_cpu / u.secs,
                r.ops_per_sec()
            );
            rows.push(
                Row::new(
                    "small URB rate",
                    format!("bulk {dir} {n} B x{DEPTH}"),
                    u.ops_per_sec(),
                    "URB/s",
                )
                .baseline(r.ops_per_sec()),
            );
            rows.push(
                Row::new(
                    "small URB rate",
                    format!("bulk {dir} {n} B x{DEPTH} per server core"),
                    u.ops_per_server_core(),
                    "URB/s",
                )
                .baseline(r.ops_per_server_core())
                .value_goal(">=", 150_000.0),
            );
            if let Some(a) = u.allocs_per_op() {
                rows.push(Row::new(
                    "small URB rate",
                    format!("bulk {dir} {n} B server allocations"),
                    a,
                    "allocs/URB",
                ));
            }
            if n == 0 {
                let (l, r) = lean_pair(server, plan, op, n, DEPTH).await?;
                eprintln!(
                    "  small {dir} 0 B, lean client: {:.0}/s ({:.0}/server core) vs raw {:.0}/s",
                    l.ops_per_sec(),
                    l.ops_per_server_core(),
                    r.ops_per_sec()
                );
                rows.push(
                    Row::new(
                        "small URB rate",
                        format!("bulk {dir} 0 B x{DEPTH}, lean client (server only)"),
                        l.ops_per_sec(),
                        "URB/s",
                    )
                    .baseline(r.ops_per_sec()),
                );
            }
            if u.errors > 0 {
                rows.push(
                    Row::new(
                        "small URB rate",
                        format!("{dir} {n} B errors"),
                        u.errors as f64,
                        "URBs",
                    )
                    .check("no errors", false),
                );
            }
        }
    }
    Ok(rows)
}

pub async fn latency(server: &mut ServerProcess, plan: &Plan) -> anyhow::Result<Vec<Row>> {
    let conn = load::import(server.usbip, "0-1").await?;
    let (count, warm) = (plan.latency_count, plan.latency_count / 10);
    // On a runtime worker, as the raw ping-pong below: the block_on thread wakes up slower.
    let mut times = tokio::spawn(async move {
        // GET_DESCRIPTOR(DEVICE), 18 bytes.
        let setup = [0x80, 0x06, 0x00, 0x01, 0, 0, 18, 0];
        let mut times = Vec::with_capacity(count);
        for i in 0..count + warm {
            let t = Instant::now();
            let done = conn.submit(Submit::control(setup, Vec::new())).await?;
            let dt = t.elapsed();
            anyhow::ensure!(
                done.status == 0 && done.data.len() == 18,
                "GET_DESCRIPTOR failed: {}",
                done.status
            );
            if i >= warm {
                times.push(dt);
            }
        }
        anyhow::Ok(times)
    })
    .await??;
    let raw_addr = server.raw.ok_or_else(|| anyhow::anyhow!("no raw server"))?;
    let mut raw_times = tokio::spawn(raw::ping_pong(raw_addr, 0, count + warm)).await??;
    raw_times.drain(..warm);
    times.sort();
    raw_times.sort();
    let mut rows = Vec::new();
    for p in [50.0, 99.0] {
        let (u, r) = (percentile_us(&times, p), percentile_us(&raw_times, p));
        eprintln!("  latency p{p}: {u:.1} us vs raw {r:.1} us");
        rows.push(
            Row::new("latency", format!("GET_DESCRIPTOR p{p}"), u, "us")
                .baseline(r)
                .ratio_goal("<=", 1.5),
        );
    }
    Ok(rows)
}

/// 8 clients x 8 devices = 64 imported devices, one connection each, 8 bulk IN 64 KiB URBs in
/// flight on each, for a fixed time; RSS sampled throughout.
pub async fn many(
    server: &mut ServerProcess,
    plan: &Plan,
    single_peak: Option<f64>,
) -> anyhow::Result<Vec<Row>> {
    const CONNECTIONS: usize = 64;
    const DEPTH: usize = 8;
    const SIZE: usize = 64 << 10;
    let mut conns = Vec::new();
    for port in 1..=CONNECTIONS {
        conns.push(load::import(server.usbip, &format!("0-{port}")).await?);
    }
    // The single-connection peak at this URB size, unless the bulk figure measured it already.
    let single = match single_peak {
        Some(p) => p,
        None => {
            let c = Arc::new(Counters::default());
            let t = tokio::spawn(load::urbs(
                conns[0].clone(),
                bulk_submit(Op::In, SIZE),
                16,
                c.clone(),
            ));
            let w = load::measure(server, &[c], plan.warmup, plan.duration).await;
            t.await?;
            w.mib_per_sec()
        }
    };
    let counters: Vec<Arc<Counters>> = (0..CONNECTIONS).map(|_| Arc::default()).collect();
    let tasks: Vec<_> = conns
        .iter()
        .zip(&counters)
        .map(|(conn, c)| {
            tokio::spawn(load::urbs(
                conn.clone(),
                bulk_submit(Op::In, SIZE),
                DEPTH,
                c.clone(),
            ))
        })
        .collect();
    let pid = server.pid;
    let warmup = plan.warmup.max(Duration::from_millis(300));
    // Steady state is judged from a third into the window to its end.
    let settle = warmup + plan.many_duration / 3;
    let sampler = tokio::spawn(async move {
        tokio::time::sleep(settle).await;
        crate::child::rss_kib(pid).unwrap_or(0)
    });
    let w = load::measure(server, &counters, warmup, plan.many_duration).await;
    let rss_end = server.rss_kib();
    for t in tasks {
        t.await?;
    }
    let rss_start = sampler.await?;
    let broken = conns.iter().filter(|c| c.is_closed()).count();
    let unexpected: usize = conns.iter().map(|c| c.unexpected_replies().len()).sum();
    eprintln!(
        "  many: {:.0} MiB/s aggregate over {CONNECTIONS} connections (single peak {single:.0}), {} errors, RSS {rss_start} -> {rss_end} KiB",
        w.mib_per_sec(),
        w.errors
    );
    Ok(vec![
        Row::new(
            "many clients",
            "64 conn x 8 in flight, errors",
            (w.errors as usize + broken + unexpected) as f64,
            "errors",
        )
        .check("no errors", w.errors == 0 && broken == 0 && unexpected == 0),
        Row::new(
            "many clients",
            "aggregate IN 64 KiB vs single-connection peak",
            w.mib_per_sec(),
            "MiB/s",
        )
        .baseline(single)
        .ratio_goal(">=", 0.80),
        Row::new(
            "many clients",
            "server RSS, a third into the run -> end",
            rss_end as f64,
            "KiB",
        )
        .baseline(rss_start as f64)
        // "Flat": the run ends within 10% (or 2 MiB) of where steady state began.
        .check(
            "flat (<= +10% or +2 MiB)",
            rss_end <= rss_start + (rss_start / 10).max(2048),
        ),
    ])
}

/// Where memory and start-up are measured: the real `usbipd server --demo` when it runs.
pub enum Target {
    Usbipd(PathBuf),
    BenchChild,
}

fn spawn(target: &Target, devices: usize) -> anyhow::Result<ServerProcess> {
    match target {
        Target::Usbipd(bin) => ServerProcess::usbipd(bin, &["--demo"]),
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
            format!("idle RSS ({who})"),
            idle as f64 / 1024.0,
            "MiB",
        )
        .value_goal("<=", 10.0),
        Row::new(
            "memory",
            "per idle connection (before handshake)",
            connected.saturating_sub(idle) as f64 / IDLE as f64,
            "KiB",
        )
        .value_goal("<=", 256.0),
    ];
    if !imported.is_empty() {
        rows.push(
            Row::new(
                "memory",
                format!("per imported idle connection ({} imports)", imported.len()),
                after_import.saturating_sub(connected) as f64 / imported.len() as f64,
                "KiB",
            )
            .value_goal("<=", 256.0),
        );
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
        format!("spawn to accepting ({who}, median of {})", times.len()),
        median,
        "ms",
    )
    .value_goal("<=", 50.0)])
}
