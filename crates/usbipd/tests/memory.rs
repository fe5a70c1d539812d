//! Memory held for one client is bounded by `max_buffered_bytes`, OUT payload a device holds
//! included. Alone in its own test binary, so that the process's peak RSS is this test's.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::raw::{out_submit as submit, raw_import};
use common::start_server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use usbip_client::{Connection, Submit};
use usbipd::device::r#virtual::{gadget_zero, BusPosition};
use usbipd::device::Device;
use usbipd::server::ServerConfig;

const MIB: usize = 1024 * 1024;
const LIMIT: usize = 16 * MIB;

/// The process's peak resident set size, in bytes (getrusage(2): `ru_maxrss` is in KiB on
/// Linux, in bytes on macOS).
fn peak_rss() -> usize {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: nix::libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { nix::libc::getrusage(nix::libc::RUSAGE_SELF, &mut usage) };
    assert_eq!(rc, 0, "getrusage: {}", std::io::Error::last_os_error());
    let max_rss = usize::try_from(usage.ru_maxrss).unwrap();
    if cfg!(target_os = "macos") {
        max_rss
    } else {
        max_rss * 1024
    }
}

/// Gadget zero in its loopback configuration holds bulk OUT URBs once its small buffer is full.
/// A client that sends 1 MiB OUT URBs and never reads the IN side is closed at
/// `max_buffered_bytes`, the process's peak RSS stays near that limit instead of growing with
/// what was sent, and another client's connection goes on working.
#[tokio::test]
async fn out_data_held_by_a_device_counts_against_max_buffered_bytes() {
    let devices: Vec<Arc<dyn Device>> = vec![
        Arc::new(gadget_zero::new(BusPosition::virtual_port(4))),
        Arc::new(gadget_zero::new(BusPosition::virtual_port(5))),
    ];
    let config = ServerConfig {
        max_buffered_bytes: LIMIT,
        ..ServerConfig::default()
    };
    let addr = start_server(devices, config).await;
    // The other client, connected before the flood.
    let other = Connection::import(addr, "0-5").await.unwrap();
    let set_loopback = Submit::control(
        [0, 9, gadget_zero::CONFIG_LOOPBACK, 0, 0, 0, 0, 0],
        Bytes::new(),
    );
    assert_eq!(other.submit(set_loopback.clone()).await.unwrap().status, 0);

    let before = peak_rss();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let devid = raw_import(&mut stream, "0-4").await;
    stream
        .write_all(&submit(
            1,
            devid,
            0,
            [0, 9, gadget_zero::CONFIG_LOOPBACK, 0, 0, 0, 0, 0],
            Bytes::new(),
        ))
        .await
        .unwrap();
    let mut reply = [0u8; 48];
    stream.read_exact(&mut reply).await.unwrap();
    assert_eq!(&reply[20..24], &[0; 4], "SET_CONFIGURATION failed");

    // Up to 512 MiB of OUT data, far past the limit; never reading a reply.
    let payload = Bytes::from(vec![0x5au8; MIB]);
    let mut sent = 0;
    for seqnum in 2..2 + 512 {
        let urb = submit(seqnum, devid, 1, [0; 8], payload.clone());
        match tokio::time::timeout(Duration::from_secs(10), stream.write_all(&urb)).await {
            Ok(Ok(())) => sent += 1,
            Ok(Err(_)) => break, // closed by the server
            Err(_) => panic!("the server stopped reading without closing the connection"),
        }
    }
    // The server closes the connection: the read side ends (EOF or reset) within a bound.
    let mut sink = vec![0u8; 64 * 1024];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the connection stayed open after {sent} MiB of OUT data"
    );
    let growth = peak_rss().saturating_sub(before);
    eprintln!("peak RSS growth {} KiB, {sent} MiB sent", growth / 1024);
    assert!(
        growth < 2 * LIMIT + 32 * MIB,
        "peak RSS grew by {} MiB for a {} MiB limit ({sent} MiB sent)",
        growth / MIB,
        LIMIT / MIB
    );
    drop(stream);

    // The other client goes on: its loopback still loops back.
    let msg: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
    let back = other.start(Submit::bulk_in(1, 1024)).unwrap();
    let out = other
        .submit(Submit::bulk_out(1, msg.clone()))
        .await
        .unwrap();
    assert_eq!(out.status, 0);
    assert_eq!(&back.wait().await.unwrap().data[..], &msg[..]);
    assert!(!other.is_closed());
    // And the flooded device was released: a new client imports it.
    let again = Connection::import(addr, "0-4").await.unwrap();
    assert_eq!(again.submit(set_loopback).await.unwrap().status, 0);
}
