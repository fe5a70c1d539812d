//! The client's URB paths against a minimal in-test USB/IP server: `Connection` (submit from
//! many tasks), its `Pipeline`, and `OwnedPipeline`, with IN payloads that name their URB (so
//! a completion handed to the wrong waiter fails) and OUT payloads large enough to fill the
//! socket (so the backlog writer runs, and order must survive it).

use std::net::SocketAddr;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use usbip_client::{Connection, OwnedPipeline, Submit};
use usbip_proto::{Command, DeviceRecord, Limits, OpReply, OpRequest, RetSubmit, Speed};

/// Serves one import per connection; answers CMD_SUBMIT in order: IN with `length` bytes, each
/// the low byte of the seqnum; OUT with actual_length = the bytes received, after checking
/// every OUT byte equals the low byte of the seqnum.
async fn server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(connection(s));
        }
    });
    addr
}

async fn connection(mut s: TcpStream) {
    let mut buf = BytesMut::new();
    let (req, used) = loop {
        if let Some(r) = OpRequest::decode(&buf).unwrap() {
            break r;
        }
        assert!(s.read_buf(&mut buf).await.unwrap() > 0);
    };
    let _ = buf.split_to(used);
    let OpRequest::Import { busid } = req else {
        return;
    };
    let mut out = Vec::new();
    OpReply::Import(Ok(DeviceRecord {
        path: "/test".into(),
        busid,
        busnum: 1,
        devnum: 2,
        speed: Speed::High,
        id_vendor: 1,
        id_product: 2,
        bcd_device: 0,
        device_class: 0,
        device_subclass: 0,
        device_protocol: 0,
        configuration_value: 1,
        num_configurations: 1,
        num_interfaces: 1,
    }))
    .encode(&mut out);
    s.write_all(&out).await.unwrap();
    loop {
        while let Some(cmd) = Command::decode(&mut buf, &Limits::default()).unwrap() {
            let Command::Submit { cmd, data, .. } = cmd else {
                continue;
            };
            let tag = cmd.header.seqnum as u8;
            assert!(data.iter().all(|b| *b == tag), "OUT payload out of order");
            let is_in = cmd.header.direction == usbip_proto::Direction::In;
            let n = if is_in {
                cmd.transfer_buffer_length
            } else {
                data.len() as u32
            };
            let mut out = Vec::new();
            let ret = RetSubmit {
                seqnum: cmd.header.seqnum,
                status: 0,
                actual_length: n,
                start_frame: 0,
                number_of_packets: 0,
                error_count: 0,
            };
            let data = if is_in {
                vec![tag; n as usize].into()
            } else {
                bytes::Bytes::new()
            };
            usbip_proto::Reply::Submit {
                ret,
                data,
                iso: Vec::new(),
            }
            .encode(&mut out);
            if s.write_all(&out).await.is_err() {
                return;
            }
        }
        match s.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

fn out_urb(seqnum_hint: u32, n: usize) -> Submit {
    Submit::bulk_out(1, vec![seqnum_hint as u8; n])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_submits_from_many_tasks_get_their_own_completions() {
    let conn = Connection::import(server().await, "1-1").await.unwrap();
    let mut tasks = Vec::new();
    for t in 0..8u32 {
        let conn = conn.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..50 {
                let p = conn.start(Submit::bulk_in(1, 100 + t * 7 + i)).unwrap();
                let seq = p.seqnum;
                let done = p.wait().await.unwrap();
                assert_eq!(done.data.len() as u32, 100 + t * 7 + i);
                assert!(done.data.iter().all(|b| *b == seq as u8));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert!(conn.unexpected_replies().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_keeps_order_through_the_backlog() {
    let conn = Connection::import(server().await, "1-1").await.unwrap();
    let mut pipe = conn.pipeline();
    // 32 x 1 MiB OUT: far more than a socket buffer, so most of it goes through the backlog.
    // Seqnums start at 1 on a new connection; the payload carries the seqnum's low byte.
    let mut expected = std::collections::HashSet::new();
    for i in 1..=32u32 {
        let seq = pipe.start(out_urb(i, 1 << 20)).unwrap();
        assert_eq!(seq, i);
        expected.insert(seq);
    }
    while let Some(done) = pipe.next().await {
        let (seq, c) = done.unwrap();
        assert_eq!(c.actual_length, 1 << 20);
        assert!(expected.remove(&seq));
    }
    assert!(expected.is_empty());
    // And IN through the same pipeline, data by seqnum.
    for _ in 0..64 {
        pipe.start(Submit::bulk_in(1, 64 << 10)).unwrap();
    }
    let mut n = 0;
    while let Some(done) = pipe.next().await {
        let (seq, c) = done.unwrap();
        assert!(c.data.len() == 64 << 10 && c.data.iter().all(|b| *b == seq as u8));
        n += 1;
    }
    assert_eq!(n, 64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owned_pipeline_round_trips_in_and_out() {
    let mut p = OwnedPipeline::import(server().await, "1-1").await.unwrap();
    let mut started = 0u32;
    let mut seen = 0;
    for _ in 0..16 {
        started += 1;
        p.start(out_urb(started, 256 << 10));
        started += 1;
        p.start(Submit::bulk_in(1, 1000));
    }
    while let Some(done) = p.next().await {
        let (seq, c) = done.unwrap();
        if seq % 2 == 1 {
            assert_eq!(c.actual_length, 256 << 10);
        } else {
            assert!(c.data.len() == 1000 && c.data.iter().all(|b| *b == seq as u8));
        }
        seen += 1;
    }
    assert_eq!(seen, 32);
    assert_eq!(p.in_flight(), 0);
}
