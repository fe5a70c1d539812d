//! Thousands of malformed sessions against one in-process server with real virtual devices,
//! while a well-behaved client keeps transferring on a gadget zero: the server stays up, the
//! good client's transfers all complete with the right data, every bad connection ends, every
//! device is released, and memory stays bounded.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{start_server_with, ScriptedDevice};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use usbip_client::{list_devices, Connection, Submit};
use usbip_proto::{
    CmdSubmit, CmdUnlink, Command, Direction, IsoPacket, Limits, OpReply, OpRequest, OpStatus,
    UrbHeader, HEADER_LEN,
};
use usbipd::device::r#virtual::{gadget_zero, BusPosition};
use usbipd::device::registry::Registry;
use usbipd::server::ServerConfig;

/// Workers per device kind; each owns one device and runs its sessions one after another.
const WORKERS: u32 = 6;
const SESSIONS_PER_WORKER: u32 = 250;
/// Generous bounds on events that take milliseconds; reaching one means a hang.
const DEADLINE: Duration = Duration::from_secs(10);

/// xorshift64: deterministic variety without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The current resident set size (Linux only: macOS has no /proc; the test checks memory there
/// through the rest of its assertions alone).
#[cfg(target_os = "linux")]
fn vm_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn submit(seqnum: u32, devid: u32, direction: Direction, ep: u32, length: u32) -> CmdSubmit {
    CmdSubmit {
        header: UrbHeader {
            seqnum,
            devid,
            direction,
            ep,
        },
        transfer_flags: if direction == Direction::In { 0x200 } else { 0 },
        transfer_buffer_length: length,
        start_frame: 0,
        number_of_packets: 0,
        interval: 0,
        setup: [0; 8],
    }
}

fn encode(cmd: CmdSubmit, data: &[u8], iso: Vec<IsoPacket>) -> Vec<u8> {
    let mut out = Vec::new();
    Command::Submit {
        cmd,
        data: Bytes::copy_from_slice(data),
        iso,
    }
    .encode(&mut out);
    out
}

fn set_configuration(seqnum: u32, devid: u32, value: u8) -> Vec<u8> {
    let mut cmd = submit(seqnum, devid, Direction::Out, 0, 0);
    cmd.setup = [0, 9, value, 0, 0, 0, 0, 0];
    encode(cmd, &[], vec![])
}

/// Imports `busid` on a new connection, waiting while the previous session of this worker is
/// still letting the device go.
async fn import(addr: SocketAddr, busid: &str) -> (TcpStream, u32) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let request = OpRequest::Import {
            busid: busid.into(),
        };
        let mut out = Vec::new();
        request.encode(&mut out);
        stream.write_all(&out).await.unwrap();
        let mut buf = Vec::new();
        let reply = loop {
            if let Some((reply, _)) = OpReply::decode(&request, &buf, &Limits::default()).unwrap() {
                break reply;
            }
            let mut chunk = [0u8; 512];
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "import of {busid}: connection closed");
            buf.extend_from_slice(&chunk[..n]);
        };
        match reply {
            OpReply::Import(Ok(record)) => return (stream, record.devid()),
            OpReply::Import(Err(OpStatus::DevBusy)) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{busid} never released by its previous session"
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            other => panic!("import of {busid}: {other:?}"),
        }
    }
}

/// Sends `bytes`, closes the sending side and reads until the server closes; returns what came.
async fn send_and_drain(mut stream: TcpStream, bytes: &[u8]) -> Vec<u8> {
    let (mut rd, mut wr) = stream.split();
    let write = async {
        let _ = wr.write_all(bytes).await; // the server may have closed already
        let _ = wr.shutdown().await;
    };
    let read = async {
        let mut got = Vec::new();
        let _ = rd.read_to_end(&mut got).await; // a reset is an end too
        got
    };
    let (_, got) = tokio::time::timeout(DEADLINE, async { tokio::join!(write, read) })
        .await
        .expect("the server did not end a connection after the client's FIN");
    got
}

/// What one worker's device is.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    GadgetZero,
    Scripted,
}

/// One malformed session number `i` on `busid`. Returns a connection to hold open (one that
/// never reads its replies) if the session made one, and whether it imported the device.
async fn malformed(
    addr: SocketAddr,
    busid: &str,
    kind: Kind,
    i: u32,
    rng: &mut Rng,
) -> (Option<TcpStream>, bool) {
    // The server gives a non-reading client a second to take what is queued before it drops
    // the connection: a few of those per worker are enough.
    let case = match i % 14 {
        13 if i > 28 => 12,
        c => c,
    };
    match case {
        // Truncated handshake header.
        0 => {
            let mut req = Vec::new();
            OpRequest::DevList.encode(&mut req);
            let n = 1 + rng.below(7) as usize;
            let stream = TcpStream::connect(addr).await.unwrap();
            assert!(send_and_drain(stream, &req[..n]).await.is_empty());
            (None, false)
        }
        // Bad version or unknown opcode.
        1 => {
            let bytes = if rng.below(2) == 0 {
                [0x01, 0x06, 0x80, 0x05, 0, 0, 0, 0]
            } else {
                [0x01, 0x11, 0x80, 0x77, 0, 0, 0, 0]
            };
            let stream = TcpStream::connect(addr).await.unwrap();
            assert!(send_and_drain(stream, &bytes).await.is_empty());
            (None, false)
        }
        // CMD_SUBMIT before any import.
        2 => {
            let stream = TcpStream::connect(addr).await.unwrap();
            let bytes = encode(submit(1, 0, Direction::In, 1, 64), &[], vec![]);
            assert!(send_and_drain(stream, &bytes).await.is_empty());
            (None, false)
        }
        // Everything else happens after an import.
        n => {
            let (stream, devid) = import(addr, busid).await;
            let mut bytes = Vec::new();
            let mut expect_reply_bytes = None;
            match n {
                // Truncated URB header.
                3 => {
                    let full = encode(submit(1, devid, Direction::In, 1, 8), &[], vec![]);
                    bytes.extend_from_slice(&full[..1 + rng.below(47) as usize]);
                }
                // A length of 2^31.
                4 => {
                    let cmd = submit(1, devid, Direction::Out, 1, 0x8000_0000);
                    let mut h = [0u8; HEADER_LEN];
                    cmd.encode(&mut h);
                    bytes.extend_from_slice(&h);
                    bytes.extend_from_slice(&[0xab; 1000]);
                }
                // Unknown command code.
                5 => {
                    let mut h = [0u8; HEADER_LEN];
                    submit(1, devid, Direction::In, 1, 8).encode(&mut h);
                    h[3] = 0x77;
                    bytes.extend_from_slice(&h);
                }
                // Unlink of a seqnum never submitted: RET_UNLINK with status 0, and the
                // connection carries on.
                6 => {
                    Command::Unlink(CmdUnlink {
                        header: UrbHeader {
                            seqnum: 7,
                            devid,
                            direction: Direction::Out,
                            ep: 0,
                        },
                        unlink_seqnum: 0xdead_0000 | rng.below(0xffff) as u32,
                    })
                    .encode(&mut bytes);
                    expect_reply_bytes = Some(HEADER_LEN);
                }
                // The same seqnum twice while the first is in flight (both park).
                7 => {
                    if kind == Kind::GadgetZero {
                        bytes.extend(set_configuration(1, devid, gadget_zero::CONFIG_LOOPBACK));
                    }
                    for _ in 0..2 {
                        bytes.extend(encode(submit(5, devid, Direction::In, 1, 512), &[], vec![]));
                    }
                }
                // A devid that is not the imported device's.
                8 => {
                    bytes = encode(submit(1, devid ^ 0x5a5a, Direction::In, 1, 8), &[], vec![]);
                }
                // Direction mismatches: an IN setup sent as OUT with data, IN on an OUT-only
                // endpoint, then a direction that does not exist.
                9 => {
                    let mut cmd = submit(1, devid, Direction::Out, 0, 18);
                    cmd.setup = [0x80, 6, 0, 1, 0, 0, 18, 0];
                    bytes.extend(encode(cmd, &[0x11; 18], vec![]));
                    bytes.extend(encode(submit(2, devid, Direction::In, 2, 64), &[], vec![]));
                    let mut h = [0u8; HEADER_LEN];
                    submit(3, devid, Direction::In, 1, 8).encode(&mut h);
                    h[0x0f] = 2;
                    bytes.extend_from_slice(&h);
                }
                // Isochronous descriptors that do not add up, or far too many of them.
                10 => {
                    let mut cmd = submit(1, devid, Direction::Out, 3, 100);
                    if rng.below(2) == 0 {
                        cmd.number_of_packets = 2;
                        let iso = vec![
                            IsoPacket {
                                offset: 0,
                                length: 60,
                                ..Default::default()
                            },
                            IsoPacket {
                                offset: 90,
                                length: 50,
                                ..Default::default()
                            },
                        ];
                        bytes = encode(cmd, &[0; 100], iso);
                    } else {
                        cmd.number_of_packets = 0x10_0000;
                        let mut h = [0u8; HEADER_LEN];
                        cmd.encode(&mut h);
                        bytes.extend_from_slice(&h);
                    }
                }
                // More URBs in flight than max_in_flight (64): all park.
                11 => {
                    if kind == Kind::GadgetZero {
                        bytes.extend(set_configuration(1, devid, gadget_zero::CONFIG_LOOPBACK));
                    }
                    for s in 0..80 {
                        bytes.extend(encode(
                            submit(10 + s, devid, Direction::In, 1, 64),
                            &[],
                            vec![],
                        ));
                    }
                }
                // Random bytes.
                12 => {
                    let len = 1 + rng.below(2000) as usize;
                    bytes = (0..len).map(|_| rng.next() as u8).collect();
                }
                // Never reads: asks for 12 MiB of IN data (48 URBs, within max_in_flight) and
                // keeps the connection open without reading. The server must close it at
                // max_buffered_bytes; the next import of this device proves it did.
                _ => {
                    let (ep, mut all) = match kind {
                        Kind::GadgetZero => (
                            1,
                            set_configuration(1, devid, gadget_zero::CONFIG_SOURCE_SINK),
                        ),
                        Kind::Scripted => (3, Vec::new()),
                    };
                    for s in 0..48 {
                        all.extend(encode(
                            submit(10 + s, devid, Direction::In, ep, 256 * 1024),
                            &[],
                            vec![],
                        ));
                    }
                    let mut stream = stream;
                    let _ = stream.write_all(&all).await;
                    return (Some(stream), true);
                }
            }
            let got = send_and_drain(stream, &bytes).await;
            if let Some(len) = expect_reply_bytes {
                assert_eq!(got.len(), len, "RET_UNLINK expected");
                assert_eq!(&got[..4], &[0, 0, 0, 4]);
                // Nothing was submitted on this connection, so the victim may still be on its
                // way (-ECONNRESET, and its submit will be dropped) or long gone (0).
                let status = i32::from_be_bytes([got[0x14], got[0x15], got[0x16], got[0x17]]);
                assert!(
                    status == 0 || status == -104,
                    "unlink of an unknown seqnum answered {status}"
                );
            }
            (None, true)
        }
    }
}

/// The good client: source/sink (config 3: bulk IN of zeros) and loopback (config 2: bulk OUT
/// comes back on bulk IN), switching every 50 transfers until told to stop. Returns how many
/// transfers of each kind completed, all checked.
async fn good_client(addr: SocketAddr, stop: Arc<AtomicBool>) -> (u32, u32) {
    let conn = Connection::import(addr, "0-1").await.unwrap();
    let (mut source, mut loopback) = (0u32, 0u32);
    let mut round = 0u32;
    while !stop.load(Ordering::Relaxed) || source == 0 || loopback == 0 {
        let config = if round % 2 == 0 {
            gadget_zero::CONFIG_SOURCE_SINK
        } else {
            gadget_zero::CONFIG_LOOPBACK
        };
        let c = conn
            .submit(Submit::control([0, 9, config, 0, 0, 0, 0, 0], Bytes::new()))
            .await
            .unwrap();
        assert_eq!(c.status, 0, "SET_CONFIGURATION {config}");
        for i in 0..50u32 {
            if config == gadget_zero::CONFIG_SOURCE_SINK {
                let c = conn.submit(Submit::bulk_in(1, 16 * 1024)).await.unwrap();
                assert_eq!(c.status, 0);
                assert_eq!(c.data.len(), 16 * 1024);
                assert!(c.data.iter().all(|&b| b == 0), "source data is not zeros");
                source += 1;
            } else {
                let len = 1000 + (i % 7) as usize * 300;
                let data: Vec<u8> = (0..len).map(|j| (j as u32 * 7 + i + round) as u8).collect();
                let out = conn.start(Submit::bulk_out(1, data.clone())).unwrap();
                let back = conn.submit(Submit::bulk_in(1, len as u32)).await.unwrap();
                let out = out.wait().await.unwrap();
                assert_eq!((out.status, out.actual_length), (0, len as u32));
                assert_eq!(back.status, 0);
                assert_eq!(&back.data[..], &data[..], "loopback data differs");
                loopback += 1;
            }
        }
        round += 1;
    }
    assert!(conn.unexpected_replies().is_empty());
    (source, loopback)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_sessions_do_not_disturb_a_good_client() {
    let registry = Registry::new();
    registry.add(Arc::new(gadget_zero::new(BusPosition::virtual_port(1))));
    let mut busids = Vec::new();
    for w in 0..WORKERS {
        let port = 2 + w;
        registry.add(Arc::new(gadget_zero::new(BusPosition::virtual_port(port))));
        busids.push((format!("0-{port}"), Kind::GadgetZero));
        let scripted = format!("9-{}", 10 + w);
        registry.add(ScriptedDevice::new(&scripted));
        busids.push((scripted, Kind::Scripted));
    }
    let config = ServerConfig {
        max_in_flight: 64,
        max_buffered_bytes: 2 * 1024 * 1024,
        max_connections: 4096,
        max_connections_per_address: 4096,
        // Short enough to close the stalled handshakes below, long enough that a good import
        // on a loaded 2-core machine (debug build, other tests running) is not cut off.
        handshake_timeout: Duration::from_secs(4),
        ..ServerConfig::default()
    };
    let addr = start_server_with(registry.clone(), config).await;

    // Warm up (first allocations of the runtime, the good client's buffers) before measuring.
    assert_eq!(
        list_devices(addr).await.unwrap().len(),
        1 + 2 * WORKERS as usize
    );
    #[cfg(target_os = "linux")]
    let rss_before = vm_rss_kib();

    let stop = Arc::new(AtomicBool::new(false));
    let good = tokio::spawn(good_client(addr, stop.clone()));

    // Connections that send half a handshake header and stall: handshake_timeout ends them.
    let mut stalled = Vec::new();
    for _ in 0..50 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&[0x01, 0x11, 0x80]).await.unwrap();
        stalled.push(s);
    }

    let mut workers = tokio::task::JoinSet::new();
    for (n, (busid, kind)) in busids.iter().cloned().enumerate() {
        workers.spawn(async move {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (n as u64 + 1));
            let mut unread = None;
            for i in 0..SESSIONS_PER_WORKER {
                // A non-reading connection stays open, unread, until the next session that
                // imports the device again: that only works if the server closed it.
                let (held, imported) = malformed(addr, &busid, kind, i, &mut rng).await;
                if held.is_some() || imported {
                    unread = held;
                }
            }
            drop(unread);
            // Finally a URB-phase half-open connection: a partial header, then silence. It
            // keeps the device until the client goes; returned to be dropped at the end.
            let (mut s, devid) = import(addr, &busid).await;
            let full = encode(submit(1, devid, Direction::In, 1, 8), &[], vec![]);
            s.write_all(&full[..20]).await.unwrap();
            (busid, s)
        });
    }
    let mut half_open = Vec::new();
    while let Some(done) = workers.join_next().await {
        half_open.push(done.expect("a malformed-session worker failed"));
    }

    stop.store(true, Ordering::Relaxed);
    let (source, loopback) = good.await.expect("the good client failed");
    assert!(source > 0 && loopback > 0);

    // The stalled handshakes were closed by the server.
    for mut s in stalled {
        let mut buf = Vec::new();
        let r = tokio::time::timeout(DEADLINE, s.read_to_end(&mut buf)).await;
        assert!(
            matches!(r, Ok(Ok(0)) | Ok(Err(_))),
            "a stalled handshake stayed open"
        );
    }
    // Half-open URB sessions hold their devices until their clients go; then they are free.
    for (busid, _) in &half_open {
        assert!(matches!(
            Connection::import(addr, busid).await,
            Err(usbip_client::Error::Refused(OpStatus::DevBusy))
        ));
    }
    let busy: Vec<String> = half_open.iter().map(|(b, _)| b.clone()).collect();
    drop(half_open);
    for busid in &busy {
        let (s, _) = import(addr, busid).await;
        drop(s);
    }
    assert_eq!(
        list_devices(addr).await.unwrap().len(),
        1 + 2 * WORKERS as usize
    );

    // Let the last sessions finish tearing down before measuring.
    for busid in &busy {
        let (s, _) = import(addr, busid).await;
        drop(s);
    }
    #[cfg(target_os = "linux")]
    {
        let rss_after = vm_rss_kib();
        let growth_mib = rss_after.saturating_sub(rss_before) / 1024;
        assert!(
            growth_mib < 64,
            "RSS grew by {growth_mib} MiB ({rss_before} kB -> {rss_after} kB)"
        );
        eprintln!("RSS {rss_before} -> {rss_after} kB");
    }
    eprintln!(
        "{} malformed sessions; good client: {source} source + {loopback} loopback transfers",
        2 * WORKERS * SESSIONS_PER_WORKER
    );
}
