//! Latency with one URB in flight: GET_DESCRIPTOR round trips from a blocking client thread
//! (it sleeps in `read`), against the same client doing 48 B -> 66 B round trips on three raw
//! servers (async multi-thread, blocking thread-per-connection, current-thread runtime).
//!
//! Round trips on these 2-vCPU virtual machines are bimodal: a wake-up that stays on its vCPU
//! costs a few microseconds, one that crosses vCPUs tens. So each placement is measured on its
//! own ("mode"): the client thread and a server process of its own are pinned (see `pin`), the
//! same pinning for usbipd and every raw server, since they all live in that one process. The
//! baseline of a window is the fastest raw server of that window; the goal is met only when
//! every pinned mode meets it. Within a window the client interleaves its round trips over
//! all targets (see [`window`]), so the machine's noise falls on each alike. An unpinned mode
//! on the shared server shows what a run samples without pinning (no goal). `usbip-client`
//! (on a current-thread runtime on the client thread) is a comparison row.

use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use usbip_proto::HEADER_LEN;

use super::{get_descriptor, Plan};
use crate::child::ServerProcess;
use crate::lean::{self, Shape};
use crate::load::{self, percentile_us};
use crate::pin;
use crate::raw::{self, PingPong};
use crate::report::{fmt, median, Row};

/// The raw servers, in the order of `Peers::raws`.
const RAW: [&str; 3] = ["async", "blocking", "current-thread"];
/// usbip-client imports `0-(CLIENT_PORT + window)`: a device no earlier figure left imported.
const CLIENT_PORT: usize = 50;

/// A client/server placement.
struct Mode {
    name: String,
    client: Option<usize>,
    /// A pinned server process of this mode's own; `None`: the shared, unpinned one.
    server: Option<ServerProcess>,
    goal: bool,
}

/// (p50, p99) in microseconds per window, one series per thing measured.
#[derive(Default)]
struct Series {
    p50: Vec<f64>,
    p99: Vec<f64>,
}

impl Series {
    fn push(&mut self, (p50, p99): (f64, f64)) {
        self.p50.push(p50);
        self.p99.push(p99);
    }
}

/// (p50, p99) in microseconds, after dropping the first tenth as warm-up.
fn percentiles(mut times: Vec<Duration>) -> (f64, f64) {
    times.drain(..times.len() / 10);
    times.sort();
    (percentile_us(&times, 50.0), percentile_us(&times, 99.0))
}

fn reply_ok(r: &[u8]) -> bool {
    r[0x14..0x18] == [0; 4] && r[0x18..0x1c] == 18u32.to_be_bytes()
}

/// Where one window's round trips go; all on one client thread.
#[derive(Clone)]
struct Peers {
    usbip: SocketAddr,
    /// The socket of an imported `0-3` and its devid (the lean client's GET_DESCRIPTOR).
    lean: Arc<(TcpStream, u32)>,
    raws: [SocketAddr; 3],
    /// usbip-client imports this device afresh each window.
    client_busid: String,
}

/// One window: `count` rounds, each one round trip to usbipd, to each raw server and through
/// usbip-client, in an order rotated every round, from the calling thread. Interleaved so that
/// whatever else the machine does at any moment falls on every target alike. usbip-client runs
/// on a current-thread runtime of this thread, so its tasks are pinned with it.
/// Returns the times of usbipd, the raw servers, then usbip-client.
fn window(p: Peers, count: usize) -> anyhow::Result<Vec<Vec<Duration>>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let conn = rt.block_on(load::import(p.usbip, &p.client_busid))?;
    let (lean, devid) = (&p.lean.0, p.lean.1);
    let mut usbipd = PingPong::new(lean.try_clone()?, [0; HEADER_LEN], HEADER_LEN + 18)?;
    let mut raws = Vec::new();
    for addr in p.raws {
        raws.push(PingPong::new(
            TcpStream::connect(addr)?,
            raw::in_request(18),
            raw::HEADER + 18,
        )?);
    }
    let mut times: Vec<Vec<Duration>> = (0..5).map(|_| Vec::with_capacity(count)).collect();
    for i in 0..count {
        for k in 0..5 {
            let target = (i + k) % 5;
            let t = match target {
                0 => {
                    Shape::get_descriptor().encode(
                        i as u32 + 1_000_000,
                        devid,
                        &mut usbipd.request,
                    );
                    let (t, reply) = usbipd.round_trip()?;
                    anyhow::ensure!(reply_ok(reply), "bad GET_DESCRIPTOR reply from usbipd");
                    t
                }
                1..=3 => raws[target - 1].round_trip()?.0,
                _ => rt.block_on(async {
                    let t = Instant::now();
                    let done = conn.submit(get_descriptor()).await?;
                    anyhow::ensure!(
                        done.status == 0 && done.data.len() == 18,
                        "GET_DESCRIPTOR through usbip-client failed"
                    );
                    anyhow::Ok(t.elapsed())
                })?,
            };
            times[target].push(t);
        }
    }
    Ok(times)
}

/// The modes this machine allows: unpinned, then same vCPU and cross vCPU when there are two.
fn modes(cpus: &[usize], devices: usize) -> (Vec<Mode>, Vec<String>) {
    let mut modes = vec![Mode {
        name: "unpinned".into(),
        client: None,
        server: None,
        goal: false,
    }];
    let mut notes = Vec::new();
    let mut wanted = Vec::new();
    match cpus {
        [a, rest @ ..] => {
            wanted.push((format!("same vCPU (client and server on CPU {a})"), *a, *a));
            match rest.first() {
                Some(b) => wanted.push((
                    format!("cross vCPU (client on CPU {a}, server on CPU {b})"),
                    *a,
                    *b,
                )),
                None => notes.push("latency: one CPU only, so no cross-vCPU mode".into()),
            }
        }
        [] => notes.push("latency: the CPUs of this process are unknown; unpinned only".into()),
    }
    for (name, client, server) in wanted {
        // A machine that refuses pinning gives a report without that mode, not a failed run.
        match ServerProcess::bench_pinned(devices, server) {
            Ok(process) => modes.push(Mode {
                name,
                client: Some(client),
                server: Some(process),
                goal: true,
            }),
            Err(e) => notes.push(format!("latency: no {name} mode: {e:#}")),
        }
    }
    (modes, notes)
}

/// Everything one mode measured over the windows.
struct Measured {
    usbipd: Series,
    raw: [Series; 3],
    client: Series,
}

pub async fn latency(
    shared: &mut ServerProcess,
    plan: &Plan,
) -> anyhow::Result<(Vec<Row>, Vec<String>)> {
    let (mut modes, mut notes) = modes(&pin::allowed(), CLIENT_PORT + plan.windows);
    // Quick mode: about as many round trips in all as before the modes existed (it must stay
    // a short smoke test); a full run: `latency_count` per target, window and mode.
    let rounds = if plan.quick {
        plan.latency_count / 3
    } else {
        plan.latency_count
    };
    let count = rounds + rounds / 10;
    let mut peers = Vec::new();
    let mut measured = Vec::new();
    for mode in &mut modes {
        let server = mode.server.as_mut().unwrap_or(&mut *shared);
        let raws = [server.raw, server.raw_blocking, server.raw_current];
        let raws: Vec<SocketAddr> = raws
            .into_iter()
            .map(|a| a.ok_or_else(|| anyhow::anyhow!("the bench server has no raw server")))
            .collect::<anyhow::Result<_>>()?;
        let (stream, devid) = lean::import(server.usbip, "0-3").await?;
        peers.push(Peers {
            usbip: server.usbip,
            lean: Arc::new((stream.into_std()?, devid)),
            raws: [raws[0], raws[1], raws[2]],
            client_busid: String::new(),
        });
        measured.push(Measured {
            usbipd: Series::default(),
            raw: Default::default(),
            client: Series::default(),
        });
    }
    for i in 0..plan.windows {
        for (m, mode) in modes.iter().enumerate() {
            let mut p = peers[m].clone();
            p.client_busid = format!("0-{}", CLIENT_PORT + i);
            let times = match mode.client {
                Some(cpu) => pin::on_cpu(cpu, move || window(p, count)).await?,
                None => tokio::task::spawn_blocking(move || window(p, count)).await??,
            };
            let mut times = times.into_iter().map(percentiles);
            let out = &mut measured[m];
            let mut next = || times.next().unwrap_or((f64::NAN, f64::NAN));
            out.usbipd.push(next());
            for r in &mut out.raw {
                r.push(next());
            }
            out.client.push(next());
            let r = &out.raw;
            eprintln!(
                "  latency window {i}, {}: usbipd p50 {:.1} p99 {:.1} us; raw async {:.1}/{:.1}; blocking {:.1}/{:.1}; current-thread {:.1}/{:.1}; usbip-client {:.1}/{:.1}",
                mode.name,
                out.usbipd.p50[i], out.usbipd.p99[i],
                r[0].p50[i], r[0].p99[i], r[1].p50[i], r[1].p99[i], r[2].p50[i], r[2].p99[i],
                out.client.p50[i], out.client.p99[i],
            );
        }
    }
    drop(peers);
    let mut rows = Vec::new();
    let mut verdict = Vec::new();
    for (mode, m) in modes.iter().zip(&measured) {
        let (mode_rows, met) = rows_of(mode, m);
        rows.extend(mode_rows);
        if mode.goal {
            verdict.push(format!(
                "{} {}",
                mode.name,
                if met { "met" } else { "MISSED" }
            ));
        }
    }
    if !verdict.is_empty() {
        let all = verdict.iter().all(|v| v.ends_with(" met"));
        notes.push(format!(
            "latency goal (issue 14 goal 1, p50 <= 1.1 and p99 <= 1.3 of the fastest raw server, met only if met in every pinned mode): {} ({})",
            if all { "met" } else { "MISSED" },
            verdict.join("; ")
        ));
    }
    Ok((rows, notes))
}

/// The rows of one mode, and whether both of its goal rows are met.
fn rows_of(mode: &Mode, m: &Measured) -> (Vec<Row>, bool) {
    let windows = m.usbipd.p50.len();
    // The fastest raw server of each window, for p50 and for p99 on their own.
    let best = |f: fn(&Series) -> &Vec<f64>| -> (Vec<f64>, [usize; 3]) {
        let mut wins = [0; 3];
        let v = (0..windows)
            .map(|i| {
                let (r, v) = (0..3)
                    .map(|r| (r, f(&m.raw[r])[i]))
                    .min_by(|a, b| a.1.total_cmp(&b.1))
                    .unwrap_or((0, f64::NAN));
                wins[r] += 1;
                v
            })
            .collect();
        (v, wins)
    };
    let (best50, wins50) = best(|s| &s.p50);
    let (best99, wins99) = best(|s| &s.p99);
    let won = |w: [usize; 3]| {
        RAW.iter()
            .zip(w)
            .map(|(n, k)| format!("{n} {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let each = RAW
        .iter()
        .zip(&m.raw)
        .map(|(n, s)| format!("{n} {}/{}", fmt(median(&s.p50)), fmt(median(&s.p99))))
        .collect::<Vec<_>>()
        .join(", ");
    // usbipd against the raw server of its own runtime shape (multi-thread tokio, one task per
    // connection): what usbipd adds, apart from what the runtime's epoll path costs.
    let same_shape = Row::windows("", "", "us", m.usbipd.p50.clone(), false)
        .against("", m.raw[0].p50.clone())
        .summary();
    let note = format!(
        "windows won by each raw server, p50: {}; p99: {}; median p50/p99 of each raw server: {each} us; \
         usbipd p50 against the raw async server (the same multi-thread runtime): median ratio {} ({}-{})",
        won(wins50),
        won(wins99),
        same_shape.ratio.map(fmt).unwrap_or_else(|| "-".into()),
        fmt(same_shape.spread.0),
        fmt(same_shape.spread.1),
    );
    let baseline = "fastest raw server of each window";
    let case = format!("GET_DESCRIPTOR, 1 in flight, {}", mode.name);
    let mut p50 = Row::windows(
        "latency",
        format!("{case}, p50"),
        "us",
        m.usbipd.p50.clone(),
        false,
    )
    .against(baseline, best50.clone())
    .note(note.clone());
    let mut p99 = Row::windows(
        "latency",
        format!("{case}, p99"),
        "us",
        m.usbipd.p99.clone(),
        false,
    )
    .against(baseline, best99)
    .note(note);
    if mode.goal {
        p50 = p50.goal("<= 1.1");
        p99 = p99.goal("<= 1.3");
    }
    let met = [&p50, &p99].iter().all(|r| r.summary().met == Some(true));
    let mut rows = vec![p50, p99];
    rows.push(
        Row::windows(
            "latency",
            format!("usbip-client, 1 in flight, {}, p50", mode.name),
            "us",
            m.client.p50.clone(),
            false,
        )
        .against(baseline, best50.clone()),
    );
    rows.push(
        Row::windows(
            "latency",
            format!("{case}, p50 against the raw async server (same runtime)"),
            "us",
            m.usbipd.p50.clone(),
            false,
        )
        .against("raw async server", m.raw[0].p50.clone()),
    );
    for (name, s) in RAW.iter().zip(&m.raw) {
        rows.push(
            Row::windows(
                "latency",
                format!("raw {name} server, {}, p50", mode.name),
                "us",
                s.p50.clone(),
                false,
            )
            .against(baseline, best50.clone()),
        );
    }
    (rows, met)
}
