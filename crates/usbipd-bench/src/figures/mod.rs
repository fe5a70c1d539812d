//! The figures of issue 14, each measured over several windows, each window a usbipd
//! measurement followed right away by its raw baseline, so that every ratio compares two
//! measurements taken under the same machine load.
//!
//! Every figure reports what it saw; none asserts timing (a slow machine gives MISSED in the
//! table, never a failed run). Only broken behaviour (errors, refused imports) is an error.
//! One module per family: `goals` (control and bulk throughput, allocations, the client
//! library), `latency`, `many`, `memory` (RSS, start-up), `grid` (the throughput plot).

pub mod goals;
pub mod grid;
pub mod latency;
pub mod many;
pub mod memory;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use usbip_client::Submit;
use usbipd::device::r#virtual::gadget_zero;

use crate::child::ServerProcess;
use crate::lean::{self, Shape};
use crate::load::{self, Counters, Window};
use crate::raw::{self, Op};

pub struct Plan {
    pub quick: bool,
    /// Windows per goal figure (each: usbipd, then its baseline).
    pub windows: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub sizes: Vec<usize>,
    pub depths: Vec<usize>,
    /// Round trips per latency window.
    pub latency_count: usize,
    pub many_duration: Duration,
    pub startups: usize,
}

impl Plan {
    pub fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                quick,
                windows: 2,
                warmup: Duration::from_millis(30),
                duration: Duration::from_millis(150),
                sizes: vec![512, 64 << 10],
                depths: vec![1, 16],
                latency_count: 300,
                many_duration: Duration::from_millis(400),
                startups: 3,
            }
        } else {
            Plan {
                quick,
                windows: 5,
                warmup: Duration::from_millis(200),
                duration: Duration::from_millis(1000),
                sizes: vec![512, 4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20],
                depths: vec![1, 4, 16, 64],
                latency_count: 5000,
                many_duration: Duration::from_secs(2),
                startups: 10,
            }
        }
    }
}

pub const EP: u8 = gadget_zero::EP_IN & 0x0f;

pub fn bulk_submit(op: Op, n: usize) -> Submit {
    match op {
        Op::In => Submit::bulk_in(EP, n as u32),
        _ => Submit::bulk_out(gadget_zero::EP_OUT, Bytes::from(vec![0u8; n])),
    }
}

pub fn get_descriptor() -> Submit {
    Submit::control(lean::GET_DESCRIPTOR, Vec::new())
}

/// A window of `usbip-client` load (one pipeline of `depth`) on `conn`.
pub async fn client_window(
    server: &mut ServerProcess,
    conn: &usbip_client::Connection,
    submit: Submit,
    depth: usize,
    plan: &Plan,
) -> anyhow::Result<Window> {
    let c = Arc::new(Counters::default());
    let task = tokio::spawn(load::urbs(conn.clone(), submit, depth, c.clone()));
    let w = load::measure(server, &[c], plan.warmup, plan.duration).await;
    task.await?;
    Ok(w)
}

/// A window of `usbip-client`'s [`usbip_client::OwnedPipeline`] (no task hand-off per URB).
pub async fn owned_window(
    server: &mut ServerProcess,
    p: usbip_client::OwnedPipeline,
    submit: Submit,
    depth: usize,
    plan: &Plan,
) -> anyhow::Result<(Window, usbip_client::OwnedPipeline)> {
    let c = Arc::new(Counters::default());
    let task = tokio::spawn(load::urbs_owned(p, submit, depth, c.clone()));
    let w = load::measure(server, &[c], plan.warmup, plan.duration).await;
    Ok((w, task.await?))
}

/// A window of the lean client on a fresh import of `busid`.
pub async fn lean_window(
    server: &mut ServerProcess,
    busid: &str,
    shape: Shape,
    depth: usize,
    plan: &Plan,
) -> anyhow::Result<Window> {
    let c = Arc::new(Counters::default());
    let addr = server.usbip;
    let busid = busid.to_string();
    let task = tokio::spawn({
        let c = c.clone();
        async move { lean::load(addr, &busid, shape, depth, c).await }
    });
    let w = load::measure(server, &[c], plan.warmup, plan.duration).await;
    task.await??;
    Ok(w)
}

/// A window of the raw client against the raw server at `addr`.
pub async fn raw_window(
    server: &mut ServerProcess,
    addr: SocketAddr,
    op: Op,
    n: usize,
    depth: usize,
    plan: &Plan,
) -> anyhow::Result<Window> {
    let c = Arc::new(Counters::default());
    let task = tokio::spawn(raw::load(addr, op, n, depth, c.clone()));
    let w = load::measure(server, &[c], plan.warmup, plan.duration).await;
    task.await??;
    Ok(w)
}

/// "server X cores, client Y cores": the median CPU use over some windows.
pub fn cpu(windows: &[Window]) -> String {
    let s: Vec<f64> = windows.iter().map(|w| w.server_cpu / w.secs).collect();
    let c: Vec<f64> = windows.iter().map(|w| w.client_cpu / w.secs).collect();
    format!(
        "server {:.2} cores, client {:.2} cores",
        crate::report::median(&s),
        crate::report::median(&c)
    )
}
