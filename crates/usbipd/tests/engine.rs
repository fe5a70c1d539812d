//! The server core against the project's own client: handshake, pipelining, unlink,
//! disconnect, exclusivity, and malformed input closing one connection only.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{eventually, start_server, ScriptedDevice, DEVICE_DESCRIPTOR};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use usbip_client::{list_devices, Connection, Error, Submit};
use usbip_proto::{errno, OpStatus, Speed};
use usbipd::device::Device;
use usbipd::server::ServerConfig;

async fn one_device() -> (Arc<ScriptedDevice>, std::net::SocketAddr) {
    let dev = ScriptedDevice::new("9-4");
    let addr = start_server(
        vec![dev.clone() as Arc<dyn Device>],
        ServerConfig::default(),
    )
    .await;
    (dev, addr)
}

#[tokio::test]
async fn device_list_carries_every_interface() {
    let (_dev, addr) = one_device().await;
    let list = list_devices(addr).await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].record.busid, "9-4");
    assert_eq!(list[0].record.speed, Speed::High);
    assert_eq!(list[0].interfaces.len(), 2);
    assert_eq!(list[0].interfaces[1].class, 0xff);
}

#[tokio::test]
async fn control_transfer_round_trip() {
    let (_dev, addr) = one_device().await;
    let conn = Connection::import(addr, "9-4").await.unwrap();
    assert_eq!(conn.record().devid(), 9 << 16 | 4);
    let c = conn
        .submit(Submit::control([0x80, 6, 0, 1, 0, 0, 18, 0], Bytes::new()))
        .await
        .unwrap();
    assert_eq!(c.status, 0);
    assert_eq!(&c.data[..], &DEVICE_DESCRIPTOR);
}

#[tokio::test]
async fn many_urbs_in_flight_complete_with_their_own_data() {
    let (_dev, addr) = one_device().await;
    let conn = Connection::import(addr, "9-4").await.unwrap();
    let pending: Vec<_> = (0..200u32)
        .map(|i| conn.start(Submit::bulk_in(3, 1 + i * 7)).unwrap())
        .collect();
    for (i, p) in pending.into_iter().enumerate() {
        let c = p.wait().await.unwrap();
        let len = 1 + i as u32 * 7;
        assert_eq!(c.actual_length, len);
        assert_eq!(c.data.len() as u32, len);
        assert!(c.data.iter().enumerate().all(|(j, &b)| b == j as u8));
    }
    let out = conn
        .submit(Submit::bulk_out(2, vec![7u8; 100_000]))
        .await
        .unwrap();
    assert_eq!(
        (out.status, out.actual_length, out.data.len()),
        (0, 100_000, 0)
    );
}

#[tokio::test]
async fn a_parked_in_urb_does_not_stall_other_endpoints() {
    let (dev, addr) = one_device().await;
    let conn = Connection::import(addr, "9-4").await.unwrap();
    let parked = conn.start(Submit::bulk_in(1, 8)).unwrap();
    assert!(eventually(|| dev.parked() == 1).await);
    for _ in 0..20 {
        let c = conn.submit(Submit::bulk_in(3, 64)).await.unwrap();
        assert_eq!(c.actual_length, 64);
    }
    dev.release(b"key");
    assert_eq!(&parked.wait().await.unwrap().data[..], b"key");
}

#[tokio::test]
async fn failures_carry_their_errno() {
    let (_dev, addr) = one_device().await;
    let conn = Connection::import(addr, "9-4").await.unwrap();
    let c = conn.submit(Submit::bulk_in(4, 8)).await.unwrap();
    assert_eq!(c.status, errno::EPIPE);
    assert!(c.data.is_empty());
}

#[tokio::test]
async fn unlink_of_a_pending_urb_cancels_it_and_no_ret_submit_follows() {
    let (dev, addr) = one_device().await;
    let conn = Connection::import(addr, "9-4").await.unwrap();
    let victim = conn.start(Submit::bulk_in(1, 8)).unwrap();
    assert!(eventually(|| dev.parked() == 1).await);
    let r = conn.unlink(victim.seqnum).await.unwrap();
    assert_eq!(r.status, errno::ECONNRESET);
    assert_eq!(dev.cancelled(), vec![victim.seqnum]);
    // The device no longer has it; the connection still works, and nothing late arrives.
    assert_eq!(dev.release(b"late"), None);
    let c = conn.submit(Submit::bulk_in(3, 4)).await.unwrap();
    assert_eq!(c.actual_length, 4);
    assert!(conn.unexpected_replies().is_empty());
}

#[tokio::test]
async fn unlink_after_completion_answers_zero_after_the_ret_submit() {
    let (_dev, addr) = one_device().await;
    let conn = Connection::import(addr, "9-4").await.unwrap();
    let p = conn.start(Submit::bulk_in(3, 16)).unwrap();
    let seq = p.seqnum;
    p.wait().await.unwrap();
    assert_eq!(conn.unlink(seq).await.unwrap().status, 0);
    assert!(conn.unexpected_replies().is_empty());
}

#[tokio::test]
async fn unlink_racing_completion_is_always_consistent() {
    let (dev, addr) = one_device().await;
    let conn = Connection::import(addr, "9-4").await.unwrap();
    for round in 0..200 {
        let p = conn.start(Submit::bulk_in(1, 8)).unwrap();
        assert!(eventually(|| dev.parked() == 1).await);
        let seq = p.seqnum;
        let unlink = {
            let conn = conn.clone();
            tokio::spawn(async move { conn.unlink(seq).await })
        };
        if round % 2 == 0 {
            tokio::task::yield_now().await;
        }
        dev.release(b"x");
        let status = unlink.await.unwrap().unwrap().status;
        assert!(
            status == 0 || status == errno::ECONNRESET,
            "status {status}"
        );
        if status == 0 {
            // Too late to cancel: the RET_SUBMIT came first.
            assert_eq!(&p.wait().await.unwrap().data[..], b"x");
        }
    }
    assert!(
        conn.unexpected_replies().is_empty(),
        "{:?}",
        conn.unexpected_replies()
    );
}

#[tokio::test]
async fn disconnect_cancels_everything_and_frees_the_device() {
    let (dev, addr) = one_device().await;
    let conn = Connection::import(addr, "9-4").await.unwrap();
    let pending: Vec<u32> = (0..5)
        .map(|_| conn.start(Submit::bulk_in(1, 8)).unwrap().seqnum)
        .collect();
    assert!(eventually(|| dev.parked() == 5).await);
    assert!(matches!(
        Connection::import(addr, "9-4").await,
        Err(Error::Refused(OpStatus::DevBusy))
    ));
    drop(conn);
    assert!(eventually(|| dev.script.lock().unwrap().closed == 1).await);
    let mut cancelled = dev.cancelled();
    cancelled.sort();
    assert_eq!(cancelled, pending);
    let again = Connection::import(addr, "9-4").await.unwrap();
    assert_eq!(
        again
            .submit(Submit::bulk_in(3, 2))
            .await
            .unwrap()
            .actual_length,
        2
    );
}

#[tokio::test]
async fn import_of_an_unknown_busid_is_nodev_as_the_kernel_answers() {
    let (_dev, addr) = one_device().await;
    assert!(matches!(
        Connection::import(addr, "1-1").await,
        Err(Error::Refused(OpStatus::NoDev))
    ));
}

#[tokio::test]
async fn a_malformed_packet_closes_only_its_connection() {
    let (_dev, addr) = one_device().await;
    let conn = Connection::import(addr, "9-4").await.unwrap();

    // A second client speaks garbage in the handshake.
    let mut bad = TcpStream::connect(addr).await.unwrap();
    bad.write_all(&[0x01, 0x11, 0x80, 0x99, 0, 0, 0, 0])
        .await
        .unwrap();
    let mut sink = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), bad.read_to_end(&mut sink)).await;
    assert!(matches!(n, Ok(Ok(0))), "server closes the bad connection");

    assert_eq!(
        conn.submit(Submit::bulk_in(3, 5))
            .await
            .unwrap()
            .actual_length,
        5
    );
    assert!(list_devices(addr).await.is_ok());
}

#[tokio::test]
async fn wrong_devid_or_duplicate_seqnum_closes_the_session_and_frees_the_device() {
    use usbip_proto::{CmdSubmit, Command, Direction, UrbHeader};
    let (dev, addr) = one_device().await;
    let conn = Connection::import(addr, "9-4").await.unwrap();
    conn.send_raw(Command::Submit {
        cmd: CmdSubmit {
            header: UrbHeader {
                seqnum: 999,
                devid: 0xdead,
                direction: Direction::In,
                ep: 3,
            },
            transfer_flags: 0x200,
            transfer_buffer_length: 8,
            start_frame: 0,
            number_of_packets: 0,
            interval: 0,
            setup: [0; 8],
        },
        data: Bytes::new(),
        iso: vec![],
    })
    .unwrap();
    assert!(eventually(|| conn.is_closed()).await);
    assert!(eventually(|| dev.script.lock().unwrap().closed == 1).await);

    let conn = Connection::import(addr, "9-4").await.unwrap();
    let devid = conn.record().devid();
    let parked = |seqnum| Command::Submit {
        cmd: CmdSubmit {
            header: UrbHeader {
                seqnum,
                devid,
                direction: Direction::In,
                ep: 1,
            },
            transfer_flags: 0x200,
            transfer_buffer_length: 8,
            start_frame: 0,
            number_of_packets: 0,
            interval: 0,
            setup: [0; 8],
        },
        data: Bytes::new(),
        iso: vec![],
    };
    conn.send_raw(parked(5)).unwrap();
    conn.send_raw(parked(5)).unwrap();
    assert!(eventually(|| conn.is_closed()).await);
    assert!(Connection::import(addr, "9-4").await.is_ok());
}

/// The kernel's stub checks devid on CMD_UNLINK as on CMD_SUBMIT: an unlink naming another
/// device is a protocol violation that ends the session, and cancels nothing.
#[tokio::test]
async fn unlink_with_a_wrong_devid_closes_the_session() {
    use usbip_proto::{CmdUnlink, Command, UrbHeader};
    let (dev, addr) = one_device().await;
    let conn = Connection::import(addr, "9-4").await.unwrap();
    let parked = conn.start(Submit::bulk_in(1, 8)).unwrap();
    assert!(eventually(|| dev.parked() == 1).await);
    conn.send_raw(Command::Unlink(CmdUnlink {
        header: UrbHeader {
            seqnum: parked.seqnum + 1,
            devid: conn.record().devid() ^ 0x1,
            direction: usbip_proto::Direction::Out,
            ep: 0,
        },
        unlink_seqnum: parked.seqnum,
    }))
    .unwrap();
    assert!(eventually(|| conn.is_closed()).await);
    assert!(eventually(|| dev.script.lock().unwrap().closed == 1).await);
    assert!(Connection::import(addr, "9-4").await.is_ok());
}

#[tokio::test]
async fn in_flight_limit_closes_the_connection() {
    let dev = ScriptedDevice::new("9-4");
    let config = ServerConfig {
        max_in_flight: 4,
        ..ServerConfig::default()
    };
    let addr = start_server(vec![dev.clone() as Arc<dyn Device>], config).await;
    let conn = Connection::import(addr, "9-4").await.unwrap();
    for _ in 0..4 {
        conn.start(Submit::bulk_in(1, 8)).unwrap();
    }
    assert!(eventually(|| dev.parked() == 4).await);
    assert!(!conn.is_closed());
    conn.start(Submit::bulk_in(1, 8)).unwrap();
    assert!(eventually(|| conn.is_closed()).await);
}

/// vhci-hcd can send a CMD_UNLINK ahead of the CMD_SUBMIT it cancels (seen in the kernel
/// end-to-end suite, usbtest case 11). The unlink is acknowledged as a cancellation and the
/// submit that follows never reaches the device and never gets a RET_SUBMIT.
#[tokio::test]
async fn an_unlink_that_overtakes_its_submit_cancels_it() {
    use usbip_proto::{CmdSubmit, Command, Direction, UrbHeader};
    let (_dev, addr) = one_device().await;
    let conn = Connection::import(addr, "9-4").await.unwrap();
    let first = conn.submit(Submit::bulk_in(3, 4)).await.unwrap();
    assert_eq!(first.actual_length, 4);
    let future_seqnum = 1000;
    assert_eq!(
        conn.unlink(future_seqnum).await.unwrap().status,
        errno::ECONNRESET
    );
    conn.send_raw(Command::Submit {
        cmd: CmdSubmit {
            header: UrbHeader {
                seqnum: future_seqnum,
                devid: conn.record().devid(),
                direction: Direction::In,
                ep: 3,
            },
            transfer_flags: 0x200,
            transfer_buffer_length: 8,
            start_frame: 0,
            number_of_packets: 0,
            interval: 0,
            setup: [0; 8],
        },
        data: Bytes::new(),
        iso: vec![],
    })
    .unwrap();
    // The connection goes on, and nothing arrives for the cancelled seqnum.
    assert_eq!(
        conn.submit(Submit::bulk_in(3, 2))
            .await
            .unwrap()
            .actual_length,
        2
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        conn.unexpected_replies().is_empty(),
        "{:?}",
        conn.unexpected_replies()
    );
    // An unlink of an old, finished seqnum still says "too late".
    assert_eq!(conn.unlink(1).await.unwrap().status, 0);
}

/// The exact wire order behind the usbtest-12 failure in the kernel end-to-end suite ("unlink
/// writes"; vhci-hcd seqnums kept): 1647 completes; vhci's transmit thread is late with the
/// unlink of 1647, and by the time it runs usbtest has resubmitted (1649) and killed that URB
/// (1650), so both unlinks leave in one segment, ahead of the CMD_SUBMIT they overtook. The
/// client must read RET_UNLINK(1648, 0) after RET_SUBMIT(1647), RET_UNLINK(1650, -ECONNRESET),
/// and never a RET_SUBMIT for 1649: vhci-hcd gives 1649 back on the RET_UNLINK and drops the
/// connection on a RET_SUBMIT it cannot match ("cannot find a urb of seqnum 1649").
#[tokio::test]
async fn unlinks_of_a_finished_and_of_an_overtaken_urb_in_one_segment() {
    use usbip_proto::{
        CmdSubmit, CmdUnlink, Command, Direction, Limits, OpReply, OpRequest, Reply, UrbHeader,
    };
    let (_dev, addr) = one_device().await;
    let mut sock = TcpStream::connect(addr).await.unwrap();
    let import = OpRequest::Import {
        busid: "9-4".into(),
    };
    let mut out = Vec::new();
    import.encode(&mut out);
    sock.write_all(&out).await.unwrap();
    let mut buf = bytes::BytesMut::new();
    let devid = loop {
        if let Some((OpReply::Import(Ok(record)), used)) =
            OpReply::decode(&import, &buf, &Limits::default()).unwrap()
        {
            let _ = buf.split_to(used);
            break record.devid();
        }
        assert!(sock.read_buf(&mut buf).await.unwrap() > 0, "import refused");
    };
    let header = |seqnum| UrbHeader {
        seqnum,
        devid,
        direction: Direction::Out,
        ep: 2, // bulk OUT, completes at once (the loopback sink does too)
    };
    let write = |seqnum| Command::Submit {
        cmd: CmdSubmit {
            header: header(seqnum),
            transfer_flags: 0,
            transfer_buffer_length: 4096,
            start_frame: 0,
            number_of_packets: 0,
            interval: 0,
            setup: [0; 8],
        },
        data: Bytes::from(vec![0x5a; 4096]),
        iso: vec![],
    };
    let unlink = |seqnum, victim| {
        Command::Unlink(CmdUnlink {
            header: header(seqnum),
            unlink_seqnum: victim,
        })
    };
    // Every reply in arrival order, as (seqnum, is RET_UNLINK, status).
    async fn next_reply(sock: &mut TcpStream, buf: &mut bytes::BytesMut) -> (u32, bool, i32) {
        loop {
            match Reply::decode(buf, &Limits::default(), |_| Some(Direction::Out)).unwrap() {
                Some(Reply::Submit { ret, .. }) => return (ret.seqnum, false, ret.status),
                Some(Reply::Unlink(u)) => return (u.seqnum, true, u.status),
                None => {}
            }
            let read = tokio::time::timeout(Duration::from_secs(5), sock.read_buf(buf)).await;
            assert!(matches!(read, Ok(Ok(n)) if n > 0), "no reply: {read:?}");
        }
    }
    let send = |cmds: Vec<Command>| {
        let mut out = Vec::new();
        for c in cmds {
            c.encode(&mut out);
        }
        out
    };

    sock.write_all(&send(vec![write(1647)])).await.unwrap();
    assert_eq!(next_reply(&mut sock, &mut buf).await, (1647, false, 0));
    sock.write_all(&send(vec![
        unlink(1648, 1647),
        unlink(1650, 1649),
        write(1649),
    ]))
    .await
    .unwrap();
    assert_eq!(next_reply(&mut sock, &mut buf).await, (1648, true, 0));
    assert_eq!(
        next_reply(&mut sock, &mut buf).await,
        (1650, true, errno::ECONNRESET)
    );
    // The next URB's RET_SUBMIT is the next reply: nothing came for 1649 (it would have been
    // queued first), and the connection goes on.
    sock.write_all(&send(vec![write(1651)])).await.unwrap();
    assert_eq!(next_reply(&mut sock, &mut buf).await, (1651, false, 0));
}
