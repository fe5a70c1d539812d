//! Latency with one URB in flight: GET_DESCRIPTOR round trips from a blocking client thread
//! (it sleeps in `read`), against the same client doing 48 B -> 66 B round trips on two raw
//! servers (async, and blocking thread-per-connection); the goal is judged against whichever
//! raw server is faster in this run. `usbip-client` (async, task hand-offs on the client side)
//! is a comparison row.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use usbip_proto::HEADER_LEN;

use super::{get_descriptor, Plan};
use crate::child::ServerProcess;
use crate::lean::{self, Shape};
use crate::load::{self, percentile_us};
use crate::raw;
use crate::report::{median, Row};

/// (p50, p99) in microseconds, after dropping the first tenth as warm-up.
fn percentiles(mut times: Vec<Duration>) -> (f64, f64) {
    times.drain(..times.len() / 10);
    times.sort();
    (percentile_us(&times, 50.0), percentile_us(&times, 99.0))
}

fn reply_ok(r: &[u8]) -> bool {
    r[0x14..0x18] == [0; 4] && r[0x18..0x1c] == 18u32.to_be_bytes()
}

async fn usbipd_window(
    stream: &std::net::TcpStream,
    devid: u32,
    count: usize,
) -> anyhow::Result<(f64, f64)> {
    let s = stream.try_clone()?;
    let times = tokio::task::spawn_blocking(move || {
        let mut req = [0u8; HEADER_LEN];
        raw::ping_pong_blocking(
            s,
            &mut req,
            HEADER_LEN + 18,
            count,
            |i, r| Shape::get_descriptor().encode(i as u32 + 1_000_000, devid, r),
            reply_ok,
        )
    })
    .await??;
    Ok(percentiles(times))
}

async fn raw_window(addr: SocketAddr, count: usize) -> anyhow::Result<(f64, f64)> {
    let times = tokio::task::spawn_blocking(move || {
        let s = std::net::TcpStream::connect(addr)?;
        let mut req = raw::in_request(18);
        raw::ping_pong_blocking(s, &mut req, raw::HEADER + 18, count, |_, _| {}, |_| true)
    })
    .await??;
    Ok(percentiles(times))
}

async fn client_window(
    conn: &usbip_client::Connection,
    count: usize,
) -> anyhow::Result<(f64, f64)> {
    let conn = conn.clone();
    let times = tokio::spawn(async move {
        let mut times = Vec::with_capacity(count);
        for _ in 0..count {
            let t = Instant::now();
            let done = conn.submit(get_descriptor()).await?;
            times.push(t.elapsed());
            anyhow::ensure!(
                done.status == 0 && done.data.len() == 18,
                "GET_DESCRIPTOR failed"
            );
        }
        anyhow::Ok(times)
    })
    .await??;
    Ok(percentiles(times))
}

pub async fn latency(server: &mut ServerProcess, plan: &Plan) -> anyhow::Result<Vec<Row>> {
    let raw_async = server.raw.ok_or_else(|| anyhow::anyhow!("no raw server"))?;
    let raw_blocking = server
        .raw_blocking
        .ok_or_else(|| anyhow::anyhow!("no blocking raw server"))?;
    let (stream, devid) = lean::import(server.usbip, "0-3").await?;
    let stream = stream.into_std()?;
    stream.set_nonblocking(false)?;
    let conn = load::import(server.usbip, "0-4").await?;
    let count = plan.latency_count + plan.latency_count / 10;
    let (mut u, mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..plan.windows {
        u.push(usbipd_window(&stream, devid, count).await?);
        a.push(raw_window(raw_async, count).await?);
        b.push(raw_window(raw_blocking, count).await?);
        c.push(client_window(&conn, count).await?);
        eprintln!(
            "  latency window {i}: usbipd p50 {:.1} p99 {:.1} us; raw async {:.1}/{:.1}; raw blocking {:.1}/{:.1}; usbip-client {:.1}/{:.1}",
            u[i].0, u[i].1, a[i].0, a[i].1, b[i].0, b[i].1, c[i].0, c[i].1
        );
    }
    let p50 = |v: &[(f64, f64)]| v.iter().map(|x| x.0).collect::<Vec<f64>>();
    let p99 = |v: &[(f64, f64)]| v.iter().map(|x| x.1).collect::<Vec<f64>>();
    let blocking_wins = median(&p50(&b)) < median(&p50(&a));
    let (best, name) = if blocking_wins {
        (
            &b,
            "raw TCP, blocking thread-per-connection server (fastest in this run)",
        )
    } else {
        (&a, "raw TCP, async server (fastest in this run)")
    };
    let which = format!(
        "fastest raw server: {} (median p50 {:.1} us async, {:.1} us blocking)",
        if blocking_wins { "blocking" } else { "async" },
        median(&p50(&a)),
        median(&p50(&b))
    );
    let case = "GET_DESCRIPTOR, 1 in flight, blocking client";
    Ok(vec![
        Row::windows("latency", format!("{case}, p50"), "us", p50(&u), false)
            .against(name, p50(best))
            .goal("<= 1.1")
            .note(which.clone()),
        Row::windows("latency", format!("{case}, p99"), "us", p99(&u), false)
            .against(name, p99(best))
            .goal("<= 1.3")
            .note(which),
        Row::windows(
            "latency",
            "GET_DESCRIPTOR, 1 in flight, usbip-client, p50",
            "us",
            p50(&c),
            false,
        )
        .against(name, p50(best)),
        Row::windows("latency", "raw async server, p50", "us", p50(&a), false)
            .against("raw blocking server", p50(&b)),
    ])
}
