//! Numbers of the extension (issue 4, requirement 7), reported, never asserted: start-to-ready,
//! claim latency, RSS with 0 and 16 claims, IPC round trip p50/p99. Runs the real binary on a
//! virtual host bus: `cargo bench -p usbipd --bench extension`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use usbipd::extension::virtual_bus::{VirtualBusSpec, VirtualDeviceSpec};
use usbipd::ipc::{client, Request, Response};

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let devices = (1..=16)
        .map(|i| VirtualDeviceSpec {
            driver: Some("usbhid".into()),
            ..VirtualDeviceSpec::new(&format!("1-{i}"))
        })
        .collect();
    VirtualBusSpec { devices }
        .save(&dir.join("bus.json"))
        .unwrap();
    let socket = dir.join("ext.sock");
    let t0 = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_usbipd"))
        .args(["extension", "run", "--extension-socket"])
        .arg(&socket)
        .arg("--state")
        .arg(dir.join("claims.json"))
        .arg("--virtual-bus")
        .arg(dir.join("bus.json"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    while client::call(&socket, &Request::Status).await.is_err() {
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    let ready = t0.elapsed();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss0 = rss_kib(child.id());

    let mut claims = Vec::new();
    for i in 1..=16 {
        let t = Instant::now();
        let r = client::call(
            &socket,
            &Request::Bind {
                busid: format!("1-{i}"),
            },
        )
        .await;
        assert!(matches!(r, Ok(Response::Bound(_))), "{r:?}");
        claims.push(t.elapsed());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss16 = rss_kib(child.id());

    let c = client::Client::connect(&socket).await.unwrap();
    let mut rtt = Vec::with_capacity(2000);
    for _ in 0..2000 {
        let t = Instant::now();
        c.request(&Request::Status).await.unwrap();
        rtt.push(t.elapsed());
    }
    rtt.sort();
    claims.sort();
    let _ = child.kill();
    let _ = child.wait();
    println!("extension benchmark (virtual host bus, 16 devices)");
    println!(
        "  start-to-ready (spawn until IPC answers): {:.1} ms",
        ready.as_secs_f64() * 1e3
    );
    println!(
        "  claim latency (usbipd bind round trip incl. 2 fsynced registry writes): p50 {:.2} ms, max {:.2} ms",
        pct(&claims, 0.5).as_secs_f64() * 1e3,
        claims.last().unwrap().as_secs_f64() * 1e3
    );
    println!(
        "  RSS with 0 claims: {} KiB; with 16 claims: {} KiB",
        rss0, rss16
    );
    println!(
        "  IPC round trip (status, 16 claims): p50 {:.1} us, p99 {:.1} us",
        pct(&rtt, 0.5).as_secs_f64() * 1e6,
        pct(&rtt, 0.99).as_secs_f64() * 1e6
    );
}
