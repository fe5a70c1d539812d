//! The TLS figure (issue 17): bulk IN throughput and GET_DESCRIPTOR latency over TLS against
//! plain USB/IP, on the same server process, the same kind of device and in the same run. Two
//! TLS paths: TLS in this process (what `usbip-client` over rustls does; the server always does
//! TLS in user space) and the client's relay (TLS, then a Unix socket pair, read by the client
//! as vhci-hcd would read it). Kernel TLS on the client needs TCP_ULP "tls" in the kernel; where
//! it is missing, the report says so instead of a figure.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use usbip_client::{Connection, Submit};
use usbipd::client::tls::ClientTls;
use usbipd::device::r#virtual::gadget_zero;
use usbipd::tls::relay;
use usbipd::tls::trust::Trust;

use crate::child::ServerProcess;
use crate::figures::Plan;
use crate::load::{self, percentile_us, Counters};
use crate::report::{size, Row};

/// A client key the bench server trusts, and the server's state directory.
pub struct Client {
    server_dir: tempfile::TempDir,
    _client_dir: tempfile::TempDir,
    tls: ClientTls,
}

impl Client {
    pub fn new() -> anyhow::Result<Client> {
        let server_dir = tempfile::tempdir()?;
        let client_dir = tempfile::tempdir()?;
        let tls = ClientTls::open(client_dir.path(), None)?;
        Trust::new(server_dir.path()).add(tls.fingerprint(), "usbipd-bench")?;
        Ok(Client {
            server_dir,
            _client_dir: client_dir,
            tls,
        })
    }

    pub fn server_dir(&self) -> &Path {
        self.server_dir.path()
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Route {
    Plain,
    Tls,
    Relay,
}

impl Route {
    fn name(self) -> &'static str {
        match self {
            Route::Plain => "plain TCP",
            Route::Tls => "TLS in the client process",
            Route::Relay => "TLS relay to a socket pair",
        }
    }
}

/// [`connect`], retried for a few seconds: the figure before this one may have held every
/// connection slot of this address (`max_connections_per_address`), and the server frees them
/// only as it sees those connections close, so a new one can be turned away at first.
async fn connect_when_free(
    server: &ServerProcess,
    path: Route,
    busid: &str,
) -> anyhow::Result<Connection> {
    let mut tries = 0;
    loop {
        match connect(server, path, busid).await {
            Ok(conn) => return Ok(conn),
            Err(e) if tries < 30 => {
                tries += 1;
                eprintln!("  {}: {e}; again in 100 ms", path.name());
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn connect(server: &ServerProcess, path: Route, busid: &str) -> anyhow::Result<Connection> {
    if path == Route::Plain {
        return load::import(server.usbip, busid).await;
    }
    let (addr, client) = server
        .tls
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("the bench server has no TLS listener"))?;
    let stream = client.tls.connect("bench", *addr, None).await?;
    let conn = match path {
        Route::Relay => {
            let (kernel, ours) = relay::socket_pair()?;
            tokio::spawn(relay::relay(stream, ours));
            kernel.set_nonblocking(true)?;
            Connection::import_over(tokio::net::UnixStream::from_std(kernel)?, busid).await?
        }
        _ => Connection::import_over(stream, busid).await?,
    };
    load::configure(conn).await
}

/// One URB in flight: `count` rounds of one GET_DESCRIPTOR on each connection in turn (the
/// order rotated every round, so that the machine's noise falls on every path alike), after a
/// tenth as many rounds of warm-up. Round-trip times per connection.
async fn latency_window(conns: &[Connection], count: usize) -> anyhow::Result<Vec<Vec<Duration>>> {
    let conns = conns.to_vec();
    tokio::spawn(async move {
        let setup = [0x80, 0x06, 0x00, 0x01, 0, 0, 18, 0];
        let mut times: Vec<Vec<Duration>> =
            conns.iter().map(|_| Vec::with_capacity(count)).collect();
        for i in 0..count + count / 10 {
            for k in 0..conns.len() {
                let c = (i + k) % conns.len();
                let t = Instant::now();
                let done = conns[c].submit(Submit::control(setup, Vec::new())).await?;
                anyhow::ensure!(done.status == 0, "GET_DESCRIPTOR failed: {}", done.status);
                if i >= count / 10 {
                    times[c].push(t.elapsed());
                }
            }
        }
        anyhow::Ok(times)
    })
    .await?
}

pub async fn figure(
    server: &mut ServerProcess,
    plan: &Plan,
) -> anyhow::Result<(Vec<Row>, Vec<String>)> {
    let paths = [Route::Plain, Route::Tls, Route::Relay];
    let mut conns = Vec::new();
    for (i, &path) in paths.iter().enumerate() {
        conns.push(connect_when_free(server, path, &format!("0-{}", 10 + i)).await?);
    }
    let shapes: &[(usize, usize)] = if plan.quick {
        &[(64 << 10, 16)]
    } else {
        &[(4 << 10, 16), (64 << 10, 1), (64 << 10, 16)]
    };
    // Windows as for the goal rows (one in quick mode, a smoke test): in each, every shape over
    // plain TCP, then over each TLS path, so that each ratio compares measurements taken
    // under the same load of the machine.
    let windows = if plan.quick { 1 } else { plan.windows };
    // [shape][path] -> MiB/s per window.
    let mut mib = vec![vec![Vec::new(); paths.len()]; shapes.len()];
    // [path] -> (p50, p99) per window.
    let mut lat = vec![Vec::new(); paths.len()];
    for i in 0..windows {
        for (s, &(n, depth)) in shapes.iter().enumerate() {
            for (p, (&path, conn)) in paths.iter().zip(&conns).enumerate() {
                let c = Arc::new(Counters::default());
                let task = tokio::spawn(load::urbs(
                    conn.clone(),
                    Submit::bulk_in(gadget_zero::EP_IN & 0x0f, n as u32),
                    depth,
                    c.clone(),
                ));
                let w = load::measure(server, &[c], plan.warmup, plan.duration).await;
                task.await?;
                anyhow::ensure!(w.errors == 0, "{}: {} URBs failed", path.name(), w.errors);
                eprintln!(
                    "  window {i}: bulk IN {} x{depth} over {}: {:.0} MiB/s (server {:.2} cores, client {:.2})",
                    size(n),
                    path.name(),
                    w.mib_per_sec(),
                    w.server_cpu / w.secs,
                    w.client_cpu / w.secs
                );
                mib[s][p].push(w.mib_per_sec());
            }
        }
        let times = latency_window(&conns, plan.latency_count / 2).await?;
        for (p, mut times) in times.into_iter().enumerate() {
            times.sort();
            lat[p].push((percentile_us(&times, 50.0), percentile_us(&times, 99.0)));
        }
        for (p, &path) in paths.iter().enumerate().skip(1) {
            eprintln!(
                "  window {i}: URB latency over {}: p50 {:.1} us, p99 {:.1} us vs plain {:.1} / {:.1} us",
                path.name(),
                lat[p][i].0,
                lat[p][i].1,
                lat[0][i].0,
                lat[0][i].1
            );
        }
    }
    let mut rows = Vec::new();
    let plain = "plain TCP, same window";
    for (s, &(n, depth)) in shapes.iter().enumerate() {
        for (p, &path) in paths.iter().enumerate().skip(1) {
            rows.push(
                Row::windows(
                    "TLS",
                    format!("bulk IN {} x{depth}, {}", size(n), path.name()),
                    "MiB/s",
                    mib[s][p].clone(),
                    true,
                )
                .against(plain, mib[s][0].clone()),
            );
        }
    }
    let p50 = |v: &[(f64, f64)]| v.iter().map(|x| x.0).collect::<Vec<_>>();
    let p99 = |v: &[(f64, f64)]| v.iter().map(|x| x.1).collect::<Vec<_>>();
    for (p, &path) in paths.iter().enumerate().skip(1) {
        rows.push(
            Row::windows(
                "TLS",
                format!("GET_DESCRIPTOR p50, {}", path.name()),
                "us",
                p50(&lat[p]),
                false,
            )
            .against(plain, p50(&lat[0])),
        );
        rows.push(
            Row::windows(
                "TLS",
                format!("GET_DESCRIPTOR p99, {}", path.name()),
                "us",
                p99(&lat[p]),
                false,
            )
            .against(plain, p99(&lat[0])),
        );
    }
    let ulps = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_ulp").unwrap_or_default();
    let note = if ulps.split_whitespace().any(|u| u == "tls") {
        "TLS: this kernel has TCP_ULP tls, but the bench measures TLS in user space and the relay only; kernel TLS is used by `usbipd client attach --tls` with vhci-hcd".to_string()
    } else {
        format!("TLS: no kernel TLS on this machine (tcp_available_ulp: {}): the kernel-TLS path cannot be measured here", ulps.trim())
    };
    Ok((rows, vec![note]))
}
