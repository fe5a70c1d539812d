//! Each virtual device over the network, through the server core, with the project's own client:
//! enumeration as a host does it, then the function doing its job.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::start_server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use usbip_client::{list_devices, Connection, Submit};
use usbip_proto::{
    errno, transfer_flags, CmdSubmit, Command, Direction, IsoPacket, Limits, OpReply, OpRequest,
    Speed, UrbHeader,
};
use usbipd::device::r#virtual::gadget_zero::{GadgetZeroOptions, Pattern};
use usbipd::device::r#virtual::keyboard::Keyboard;
use usbipd::device::r#virtual::serial::Serial;
use usbipd::device::r#virtual::{gadget_zero, mass_storage, BusPosition};
use usbipd::device::Device;
use usbipd::server::ServerConfig;

fn get_descriptor(kind: u8, index: u8, len: u16) -> Submit {
    let l = len.to_le_bytes();
    Submit::control([0x80, 6, index, kind, 0, 0, l[0], l[1]], Bytes::new())
}

fn set_configuration(value: u8) -> Submit {
    Submit::control([0, 9, value, 0, 0, 0, 0, 0], Bytes::new())
}

/// Enumerates like Linux does: device descriptor (64 then 18), configuration (9 then all),
/// then SET_CONFIGURATION of the first configuration. Returns the configuration value.
async fn enumerate(conn: &Connection, vid: u16, pid: u16) -> u8 {
    let d = conn.submit(get_descriptor(1, 0, 64)).await.unwrap();
    assert_eq!((d.status, d.data.len()), (0, 18));
    let d = conn.submit(get_descriptor(1, 0, 18)).await.unwrap();
    assert_eq!(u16::from_le_bytes([d.data[8], d.data[9]]), vid);
    assert_eq!(u16::from_le_bytes([d.data[10], d.data[11]]), pid);
    let c = conn.submit(get_descriptor(2, 0, 9)).await.unwrap();
    let total = u16::from_le_bytes([c.data[2], c.data[3]]);
    let full = conn.submit(get_descriptor(2, 0, total)).await.unwrap();
    assert_eq!(full.data.len(), total as usize);
    let value = full.data[5];
    assert_eq!(
        conn.submit(set_configuration(value)).await.unwrap().status,
        0
    );
    value
}

#[tokio::test]
async fn keyboard_keys_typed_on_the_server_reach_the_client() {
    let (kb, handle) = Keyboard::new(Speed::Full, "T1", BusPosition::virtual_port(1)).unwrap();
    let addr = start_server(
        vec![Arc::new(kb) as Arc<dyn Device>],
        ServerConfig::default(),
    )
    .await;
    let list = list_devices(addr).await.unwrap();
    assert_eq!(list[0].interfaces[0].class, 3);
    let conn = Connection::import(addr, "0-1").await.unwrap();
    enumerate(&conn, 0x1209, 0x0001).await;
    let first = conn.start(Submit::bulk_in(1, 8)).unwrap();
    handle.type_text("hi").unwrap();
    let press_h = first.wait().await.unwrap();
    assert_eq!(press_h.data[2], 0x0b, "HID usage of 'h'");
    let release = conn.submit(Submit::bulk_in(1, 8)).await.unwrap();
    assert!(release.data[2..].iter().all(|&b| b == 0));
    let press_i = conn.submit(Submit::bulk_in(1, 8)).await.unwrap();
    assert_eq!(press_i.data[2], 0x0c, "HID usage of 'i'");
}

#[tokio::test]
async fn serial_bytes_cross_between_the_client_and_a_tcp_peer() {
    let serial = Serial::bind(
        "127.0.0.1:0".parse().unwrap(),
        Speed::High,
        "T2",
        BusPosition::virtual_port(2),
    )
    .await
    .unwrap();
    let tcp = serial.function().local_addr();
    let addr = start_server(
        vec![Arc::new(serial) as Arc<dyn Device>],
        ServerConfig::default(),
    )
    .await;
    let conn = Connection::import(addr, "0-2").await.unwrap();
    enumerate(&conn, 0x1209, 0x0002).await;
    let mut peer = tokio::net::TcpStream::connect(tcp).await.unwrap();
    // Wait until the bridge has the peer, then write from the USB side.
    let mut attempts = 0;
    let mut got = Vec::new();
    while got.len() < 5 && attempts < 50 {
        let out = conn
            .submit(Submit::bulk_out(2, &b"ping\n"[..]))
            .await
            .unwrap();
        assert_eq!(out.status, 0);
        let mut buf = [0u8; 64];
        if let Ok(Ok(n)) =
            tokio::time::timeout(std::time::Duration::from_millis(100), peer.read(&mut buf)).await
        {
            got.extend_from_slice(&buf[..n]);
        }
        attempts += 1;
    }
    assert!(got.starts_with(b"ping\n"), "peer got {got:?}");
    peer.write_all(b"pong").await.unwrap();
    let mut echoed = Vec::new();
    while echoed.len() < 4 {
        let c = conn.submit(Submit::bulk_in(2, 512)).await.unwrap();
        assert_eq!(c.status, 0);
        echoed.extend_from_slice(&c.data);
    }
    assert_eq!(echoed, b"pong");
}

fn cbw(tag: u32, data_len: u32, is_in: bool, cb: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(31);
    v.extend_from_slice(&0x4342_5355u32.to_le_bytes());
    v.extend_from_slice(&tag.to_le_bytes());
    v.extend_from_slice(&data_len.to_le_bytes());
    v.push(if is_in { 0x80 } else { 0 });
    v.push(0);
    v.push(cb.len() as u8);
    let mut block = [0u8; 16];
    block[..cb.len()].copy_from_slice(cb);
    v.extend_from_slice(&block);
    v
}

async fn csw_status(conn: &Connection, tag: u32) -> u8 {
    let c = conn.submit(Submit::bulk_in(1, 13)).await.unwrap();
    assert_eq!(c.data.len(), 13);
    assert_eq!(
        u32::from_le_bytes([c.data[4], c.data[5], c.data[6], c.data[7]]),
        tag
    );
    c.data[12]
}

#[tokio::test]
async fn storage_writes_reach_the_image_and_read_back() {
    let image = mass_storage::temporary_image(1024 * 1024).unwrap();
    let disk = mass_storage::new(image.path(), false, BusPosition::virtual_port(3)).unwrap();
    let addr = start_server(
        vec![Arc::new(disk) as Arc<dyn Device>],
        ServerConfig::default(),
    )
    .await;
    let list = list_devices(addr).await.unwrap();
    assert_eq!(
        (
            list[0].interfaces[0].class,
            list[0].interfaces[0].subclass,
            list[0].interfaces[0].protocol
        ),
        (8, 6, 0x50)
    );
    let conn = Connection::import(addr, "0-3").await.unwrap();
    enumerate(&conn, 0x1209, 0x0003).await;

    // READ CAPACITY(10): last LBA 2047, 512-byte blocks.
    conn.submit(Submit::bulk_out(
        2,
        cbw(1, 8, true, &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
    ))
    .await
    .unwrap();
    let cap = conn.submit(Submit::bulk_in(1, 8)).await.unwrap();
    assert_eq!(&cap.data[..], &[0, 0, 0x07, 0xff, 0, 0, 2, 0]);
    assert_eq!(csw_status(&conn, 1).await, 0);

    // WRITE(10) two blocks at LBA 10, SYNCHRONIZE CACHE, READ(10) them back.
    let data: Vec<u8> = (0..1024u32).map(|i| (i * 7 % 251) as u8).collect();
    conn.submit(Submit::bulk_out(
        2,
        cbw(2, 1024, false, &[0x2a, 0, 0, 0, 0, 10, 0, 0, 2, 0]),
    ))
    .await
    .unwrap();
    conn.submit(Submit::bulk_out(2, data.clone()))
        .await
        .unwrap();
    assert_eq!(csw_status(&conn, 2).await, 0);
    conn.submit(Submit::bulk_out(
        2,
        cbw(3, 0, false, &[0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
    ))
    .await
    .unwrap();
    assert_eq!(csw_status(&conn, 3).await, 0);
    conn.submit(Submit::bulk_out(
        2,
        cbw(4, 1024, true, &[0x28, 0, 0, 0, 0, 10, 0, 0, 2, 0]),
    ))
    .await
    .unwrap();
    let read = conn.submit(Submit::bulk_in(1, 1024)).await.unwrap();
    assert_eq!(&read.data[..], &data[..]);
    assert_eq!(csw_status(&conn, 4).await, 0);

    let on_disk = std::fs::read(image.path()).unwrap();
    assert_eq!(&on_disk[10 * 512..12 * 512], &data[..]);
}

/// A server with one gadget zero at 0-4, imported.
async fn import_gadget_zero() -> Connection {
    let gz = gadget_zero::new(BusPosition::virtual_port(4));
    let addr = start_server(
        vec![Arc::new(gz) as Arc<dyn Device>],
        ServerConfig::default(),
    )
    .await;
    Connection::import(addr, "0-4").await.unwrap()
}

#[tokio::test]
async fn gadget_zero_sources_sinks_and_loops_back() {
    let conn = import_gadget_zero().await;
    assert_eq!(
        enumerate(&conn, 0x0525, 0xa4a0).await,
        gadget_zero::CONFIG_SOURCE_SINK
    );
    let pending: Vec<_> = (0..32)
        .map(|_| conn.start(Submit::bulk_in(1, 65536)).unwrap())
        .collect();
    for p in pending {
        let c = p.wait().await.unwrap();
        assert_eq!((c.status, c.data.len()), (0, 65536));
        assert!(c.data.iter().all(|&b| b == 0));
    }
    let sunk = conn
        .submit(Submit::bulk_out(1, vec![0u8; 65536]))
        .await
        .unwrap();
    assert_eq!((sunk.status, sunk.actual_length), (0, 65536));

    assert_eq!(
        conn.submit(set_configuration(gadget_zero::CONFIG_LOOPBACK))
            .await
            .unwrap()
            .status,
        0
    );
    let msg: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
    let back = conn.start(Submit::bulk_in(1, 1024)).unwrap();
    conn.submit(Submit::bulk_out(1, msg.clone())).await.unwrap();
    assert_eq!(&back.wait().await.unwrap().data[..], &msg[..]);
}

/// An isochronous URB as usbtest builds it: packets of `packet` bytes at offsets `packet * i`.
fn iso_submit(endpoint_address: u8, lengths: &[u32], packet: u32) -> Submit {
    let iso: Vec<IsoPacket> = lengths
        .iter()
        .enumerate()
        .map(|(i, &length)| IsoPacket {
            offset: packet * i as u32,
            length,
            ..Default::default()
        })
        .collect();
    let length = iso.last().map_or(0, |p| p.offset + p.length);
    let (direction, data, flags) = if endpoint_address & 0x80 != 0 {
        (Direction::In, Bytes::new(), transfer_flags::URB_DIR_IN)
    } else {
        (Direction::Out, Bytes::from(vec![0u8; length as usize]), 0)
    };
    Submit {
        endpoint: endpoint_address & 0x0f,
        direction,
        length,
        setup: [0; 8],
        data,
        transfer_flags: flags | transfer_flags::URB_ISO_ASAP,
        interval: 8,
        iso,
    }
}

fn set_interface(alt: u8) -> Submit {
    Submit::control([0x01, 11, alt, 0, 0, 0, 0, 0], Bytes::new())
}

#[tokio::test]
async fn gadget_zero_iso_source_and_sink_through_the_server() {
    let conn = import_gadget_zero().await;
    enumerate(&conn, 0x0525, 0xa4a0).await;
    // In alt 0 the iso endpoints are not there: a stall, with the client's packet count kept.
    let early = conn
        .submit(iso_submit(gadget_zero::EP_ISO_IN, &[1024; 4], 1024))
        .await
        .unwrap();
    assert_eq!((early.status, early.iso.len()), (errno::EPIPE, 4));
    let alt = conn
        .submit(set_interface(gadget_zero::ALT_ISO))
        .await
        .unwrap();
    assert_eq!(alt.status, 0);

    // usbtest 16's shape: 8 URBs of 4 full packets in flight.
    let started = std::time::Instant::now();
    let pending: Vec<_> = (0..8)
        .map(|_| {
            conn.start(iso_submit(gadget_zero::EP_ISO_IN, &[1024; 4], 1024))
                .unwrap()
        })
        .collect();
    for p in pending {
        let c = p.wait().await.unwrap();
        assert_eq!((c.status, c.actual_length, c.data.len()), (0, 4096, 4096));
        assert!(c.data.iter().all(|&b| b == 0));
        let got: Vec<_> = c
            .iso
            .iter()
            .map(|p| (p.offset, p.length, p.actual_length, p.status))
            .collect();
        let want: Vec<_> = (0..4).map(|i| (i * 1024, 1024, 1024, 0)).collect();
        assert_eq!(got, want);
    }
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(32),
        "32 packets at one per millisecond, not {:?}",
        started.elapsed()
    );
    // usbtest 15's shape, with a short last packet.
    let out = conn
        .submit(iso_submit(
            gadget_zero::EP_ISO_OUT,
            &[1024, 1024, 100],
            1024,
        ))
        .await
        .unwrap();
    assert_eq!((out.status, out.actual_length), (0, 2148));
    assert!(out.data.is_empty());
    let actual: Vec<_> = out
        .iso
        .iter()
        .map(|p| (p.actual_length, p.status))
        .collect();
    assert_eq!(actual, vec![(1024, 0), (1024, 0), (100, 0)]);
    assert!(conn.unexpected_replies().is_empty());
}

/// Reads exactly `n` bytes.
async fn read_exact(stream: &mut tokio::net::TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    tokio::time::timeout(
        std::time::Duration::from_secs(5),
        stream.read_exact(&mut buf),
    )
    .await
    .expect("reply within 5 s")
    .expect("read");
    buf
}

/// Sends one CMD_SUBMIT on a raw connection and returns the RET_SUBMIT's header bytes.
async fn raw_control(stream: &mut tokio::net::TcpStream, devid: u32, seqnum: u32, setup: [u8; 8]) {
    let cmd = Command::Submit {
        cmd: CmdSubmit {
            header: UrbHeader {
                seqnum,
                devid,
                direction: Direction::Out,
                ep: 0,
            },
            transfer_flags: 0,
            transfer_buffer_length: 0,
            start_frame: 0,
            number_of_packets: 0,
            interval: 0,
            setup,
        },
        data: Bytes::new(),
        iso: Vec::new(),
    };
    let mut out = Vec::new();
    cmd.encode(&mut out);
    stream.write_all(&out).await.unwrap();
    let ret = read_exact(stream, 48).await;
    assert_eq!(&ret[0x14..0x18], &[0; 4], "status of control {setup:?}");
}

#[tokio::test]
async fn iso_in_ret_submit_is_byte_exact_compacted_data_then_descriptors() {
    let options = GadgetZeroOptions {
        pattern: Pattern::Mod63,
        ..Default::default()
    };
    let gz = gadget_zero::with_options(options, BusPosition::virtual_port(4));
    let addr = start_server(
        vec![Arc::new(gz) as Arc<dyn Device>],
        ServerConfig::default(),
    )
    .await;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = OpRequest::Import {
        busid: "0-4".into(),
    };
    let mut out = Vec::new();
    request.encode(&mut out);
    stream.write_all(&out).await.unwrap();
    // OP_REP_IMPORT: 8 bytes of header and the 312-byte device record.
    let reply = read_exact(&mut stream, 8 + 312).await;
    let devid = match OpReply::decode(&request, &reply, &Limits::default()) {
        Ok(Some((OpReply::Import(Ok(record)), _))) => record.devid(),
        other => panic!("import: {other:?}"),
    };
    raw_control(&mut stream, devid, 1, [0, 9, 3, 0, 0, 0, 0, 0]).await;
    raw_control(&mut stream, devid, 2, [0x01, 11, 1, 0, 0, 0, 0, 0]).await;

    // Two packets with a gap between them in the client's buffer: 100 bytes at 0, 200 at 1024.
    let mut cmd = Vec::new();
    Command::Submit {
        cmd: CmdSubmit {
            header: UrbHeader {
                seqnum: 3,
                devid,
                direction: Direction::In,
                ep: 2,
            },
            transfer_flags: transfer_flags::URB_DIR_IN | transfer_flags::URB_ISO_ASAP,
            transfer_buffer_length: 1224,
            start_frame: 0,
            number_of_packets: 2,
            interval: 8,
            setup: [0; 8],
        },
        data: Bytes::new(),
        iso: vec![
            IsoPacket {
                offset: 0,
                length: 100,
                ..Default::default()
            },
            IsoPacket {
                offset: 1024,
                length: 200,
                ..Default::default()
            },
        ],
    }
    .encode(&mut cmd);
    stream.write_all(&cmd).await.unwrap();

    let got = read_exact(&mut stream, 48 + 300 + 2 * 16).await;
    // Written out from the protocol document, not from our encoder.
    let mut want = Vec::new();
    for word in [3u32, 3, 0, 0, 0, 0, 300] {
        want.extend_from_slice(&word.to_be_bytes()); // command .. actual_length
    }
    want.extend_from_slice(&got[0x1c..0x20]); // start_frame: the bus's, checked below
    for word in [2u32, 0, 0, 0] {
        want.extend_from_slice(&word.to_be_bytes()); // number_of_packets, error_count, padding
    }
    // Each packet's data from its first byte (the source restarts its pattern per packet),
    // back to back: 100 bytes, then 200, no gap.
    want.extend((0..100u32).chain(0..200).map(|i| (i % 63) as u8));
    for word in [0u32, 100, 100, 0, 1024, 200, 200, 0] {
        want.extend_from_slice(&word.to_be_bytes()); // offset, length, actual_length, status
    }
    assert_eq!(got, want);
    let start_frame = u32::from_be_bytes([got[0x1c], got[0x1d], got[0x1e], got[0x1f]]);
    assert!(
        start_frame <= 0x3fff,
        "a high-speed microframe number: {start_frame:#x}"
    );
}
