//! Load generators over the project's client library, and the measuring window shared with the
//! raw baselines: counters the load bumps, sampled together with the server's CPU and
//! allocations.
//!
//! Loads are closed loops (a fixed number in flight) that stop cleanly on `stop`, so the same
//! connection can carry the next measurement.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use usbipd::device::r#virtual::gadget_zero;

use anyhow::bail;
use usbip_client::{Connection, Error, OwnedPipeline, Submit};
use usbip_proto::OpStatus;

use crate::child::{Allocs, ServerProcess};

/// Counters a load updates and the measuring code samples.
#[derive(Default)]
pub struct Counters {
    pub ops: AtomicU64,
    pub bytes: AtomicU64,
    pub errors: AtomicU64,
    pub stop: AtomicBool,
}

impl Counters {
    /// Counts one completed URB and its bytes, and an error when its status is not 0.
    fn count(&self, done: &usbip_client::Completion) {
        self.ops.fetch_add(1, Ordering::Relaxed);
        self.bytes
            .fetch_add(u64::from(done.actual_length), Ordering::Relaxed);
        if done.status != 0 {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn snapshot(all: &[Arc<Counters>]) -> (u64, u64, u64) {
        all.iter().fold((0, 0, 0), |(o, b, e), c| {
            (
                o + c.ops.load(Ordering::Relaxed),
                b + c.bytes.load(Ordering::Relaxed),
                e + c.errors.load(Ordering::Relaxed),
            )
        })
    }
}

/// What one measuring window saw.
#[derive(Debug, Clone, Copy, Default)]
pub struct Window {
    pub ops: u64,
    pub bytes: u64,
    pub errors: u64,
    pub secs: f64,
    /// Server CPU seconds spent in the window (all threads).
    pub server_cpu: f64,
    /// CPU seconds of this process (the client side) in the window.
    pub client_cpu: f64,
    /// Server allocations in the window (bench child only).
    pub allocs: Option<Allocs>,
}

impl Window {
    pub fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.secs
    }
    pub fn mib_per_sec(&self) -> f64 {
        self.bytes as f64 / self.secs / (1024.0 * 1024.0)
    }
    pub fn allocs_per_op(&self) -> Option<f64> {
        self.allocs.map(|a| a.count as f64 / self.ops.max(1) as f64)
    }
}

/// Lets the loads run `warmup`, then measures `duration`, then stops them.
pub async fn measure(
    server: &mut ServerProcess,
    counters: &[Arc<Counters>],
    warmup: Duration,
    duration: Duration,
) -> Window {
    tokio::time::sleep(warmup).await;
    let a0 = server.allocs();
    let cpu0 = server.cpu_ns();
    let me = std::process::id();
    let client0 = crate::child::cpu_ns(me);
    let (o0, b0, e0) = Counters::snapshot(counters);
    let t0 = Instant::now();
    tokio::time::sleep(duration).await;
    let (o1, b1, e1) = Counters::snapshot(counters);
    let secs = t0.elapsed().as_secs_f64();
    let cpu1 = server.cpu_ns();
    let client1 = crate::child::cpu_ns(me);
    let a1 = server.allocs();
    for c in counters {
        c.stop.store(true, Ordering::Relaxed);
    }
    Window {
        ops: o1 - o0,
        bytes: b1 - b0,
        errors: e1 - e0,
        secs,
        server_cpu: cpu1.saturating_sub(cpu0) as f64 / 1e9,
        client_cpu: client1.saturating_sub(client0) as f64 / 1e9,
        allocs: match (a0, a1) {
            (Some(a), Some(b)) => Some(Allocs {
                count: b.count - a.count,
                bytes: b.bytes - a.bytes,
            }),
            _ => None,
        },
    }
}

/// Imports `busid` (retrying while a previous session still holds it) and selects the
/// source/sink configuration.
pub async fn import(addr: SocketAddr, busid: &str) -> anyhow::Result<Connection> {
    let deadline = Instant::now() + Duration::from_secs(3);
    let conn = loop {
        match Connection::import(addr, busid).await {
            Ok(c) => break c,
            Err(Error::Refused(OpStatus::DevBusy)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => bail!("import {busid}: {e}"),
        }
    };
    configure(conn).await
}

/// Selects the source/sink configuration of an imported gadget zero.
pub async fn configure(conn: Connection) -> anyhow::Result<Connection> {
    let set_config = [
        0x00,
        0x09, // SET_CONFIGURATION
        gadget_zero::CONFIG_SOURCE_SINK,
        0,
        0,
        0,
        0,
        0,
    ];
    let done = conn.submit(Submit::control(set_config, Vec::new())).await?;
    if done.status != 0 {
        bail!("SET_CONFIGURATION failed: {}", done.status);
    }
    Ok(conn)
}

/// Keeps `depth` copies of `submit` in flight on `conn` until `counters.stop`: one task, one
/// [`usbip_client::Pipeline`], refilled as completions come (it sleeps while waiting).
pub async fn urbs(conn: Connection, submit: Submit, depth: usize, counters: Arc<Counters>) {
    let mut pipe = conn.pipeline();
    for _ in 0..depth {
        if pipe.start(submit.clone()).is_err() {
            counters.errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
    }
    while let Some(done) = pipe.next().await {
        match done {
            Ok((_, done)) => counters.count(&done),
            Err(_) => {
                counters.errors.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        if !counters.stop.load(Ordering::Relaxed) && pipe.start(submit.clone()).is_err() {
            counters.errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
    }
}

/// Imports `busid` as an [`OwnedPipeline`] (retrying while a previous session still holds
/// it) and selects the source/sink configuration when it is a gadget zero.
pub async fn import_owned(addr: SocketAddr, busid: &str) -> anyhow::Result<OwnedPipeline> {
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut p = loop {
        match OwnedPipeline::import(addr, busid).await {
            Ok(p) => break p,
            Err(Error::Refused(OpStatus::DevBusy)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => bail!("import {busid}: {e}"),
        }
    };
    p.start(Submit::control(
        [0x00, 0x09, gadget_zero::CONFIG_SOURCE_SINK, 0, 0, 0, 0, 0],
        Vec::new(),
    ));
    match p.next().await {
        Some(Ok((_, done))) if done.status == 0 => Ok(p),
        Some(Ok((_, done))) => bail!("SET_CONFIGURATION failed: {}", done.status),
        Some(Err(e)) => bail!("SET_CONFIGURATION: {e}"),
        None => bail!("SET_CONFIGURATION: no reply"),
    }
}

/// Keeps `depth` copies of `submit` in flight on `p` until `counters.stop`, in this task;
/// returns the pipeline, drained, for the next window.
pub async fn urbs_owned(
    mut p: OwnedPipeline,
    submit: Submit,
    depth: usize,
    counters: Arc<Counters>,
) -> OwnedPipeline {
    for _ in 0..depth {
        p.start(submit.clone());
    }
    while let Some(done) = p.next().await {
        match done {
            Ok((_, done)) => counters.count(&done),
            Err(_) => {
                counters.errors.fetch_add(1, Ordering::Relaxed);
                break;
            }
        }
        if !counters.stop.load(Ordering::Relaxed) {
            p.start(submit.clone());
        }
    }
    p
}

/// p-th percentile (0..=100) of sorted durations, in microseconds.
pub fn percentile_us(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}
