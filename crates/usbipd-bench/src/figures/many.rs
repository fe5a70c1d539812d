//! Many clients: 64 connections (one imported gadget zero each) with 8 bulk IN 64 KiB URBs in
//! flight on each, against the single-connection peak (one connection, 16 in flight) measured
//! right before it in the same window; errors and the server's RSS growth during the run.

use std::sync::Arc;
use std::time::Duration;

use super::{bulk_submit, client_window, cpu, Plan};
use crate::child::ServerProcess;
use crate::load::{self, Counters, Window};
use crate::raw::Op;
use crate::report::Row;

pub async fn many(server: &mut ServerProcess, plan: &Plan) -> anyhow::Result<Vec<Row>> {
    const CONNECTIONS: usize = 64;
    const DEPTH: usize = 8;
    const SIZE: usize = 64 << 10;
    let mut conns = Vec::new();
    for port in 1..=CONNECTIONS {
        conns.push(load::import(server.usbip, &format!("0-{port}")).await?);
    }
    let (mut single, mut all, mut growth, mut errors) = (Vec::new(), Vec::new(), Vec::new(), 0);
    for i in 0..plan.windows {
        let s = client_window(server, &conns[0], bulk_submit(Op::In, SIZE), 16, plan).await?;
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
        errors += w.errors;
        eprintln!(
            "  many window {i}: {:.0} MiB/s over {CONNECTIONS} connections vs single {:.0} MiB/s, {} errors, RSS {rss_start} -> {rss_end} KiB",
            w.mib_per_sec(),
            s.mib_per_sec(),
            w.errors
        );
        single.push(s);
        all.push(w);
        growth.push(rss_end as f64 - rss_start as f64);
    }
    let broken = conns.iter().filter(|c| c.is_closed()).count();
    let unexpected: usize = conns.iter().map(|c| c.unexpected_replies().len()).sum();
    Ok(vec![
        Row::windows(
            "many clients",
            "64 connections x 8 in flight, bulk IN 64 KiB, aggregate",
            "MiB/s",
            all.iter().map(Window::mib_per_sec).collect(),
            true,
        )
        .against(
            "one connection, 16 in flight (single-connection peak)",
            single.iter().map(Window::mib_per_sec).collect(),
        )
        .goal(">= 0.8")
        .note(format!(
            "64-connection windows: {}; single-connection windows: {}",
            cpu(&all),
            cpu(&single)
        )),
        Row::windows(
            "many clients",
            "errors (failed URBs, closed connections, out-of-order replies)",
            "errors",
            vec![(errors as usize + broken + unexpected) as f64],
            false,
        )
        .goal("<= 0"),
        Row::windows(
            "many clients",
            "server RSS growth, a third into the window -> end",
            "KiB",
            growth,
            false,
        )
        .goal("<= 2048"),
    ])
}
