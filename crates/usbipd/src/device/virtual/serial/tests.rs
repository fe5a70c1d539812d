use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use usbip_proto::{errno, Speed};

use super::*;
use crate::device::r#virtual::descriptors::parse_configuration;
use crate::device::setup::descriptor_type;
use crate::device::testing::TestHost;
use crate::device::Device;

async fn serial(speed: Speed) -> VirtualDevice<Serial> {
    let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
    Serial::bind(any_port, speed, "ACM0001", BusPosition::virtual_port(2))
        .await
        .expect("bind an ephemeral port")
}

/// Connects a TCP peer and waits until the device has taken it as its peer.
async fn connect(device: &VirtualDevice<Serial>) -> TcpStream {
    let stream = TcpStream::connect(device.function().local_addr())
        .await
        .unwrap();
    let local = stream.local_addr().unwrap();
    for _ in 0..3000 {
        if device.function().peer() == Some(local) {
            return stream;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the device never took the peer");
}

/// Waits until `n` bytes from the peer sit in the device's pipe to the host.
async fn wait_for_pipe_to_host(device: &VirtualDevice<Serial>, n: usize) {
    for _ in 0..3000 {
        if device.function().shared.pipes().to_host_room() == PIPE_CAPACITY - n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the peer's bytes never arrived");
}

async fn read_exactly(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut buf))
        .await
        .expect("peer read timed out")
        .unwrap();
    buf
}

fn acm_request(request: u8, value: u16, length: u16) -> SetupPacket {
    SetupPacket {
        request_type: if request == cdc::GET_LINE_CODING {
            0xa1
        } else {
            0x21
        },
        request,
        value,
        index: 0,
        length,
    }
}

#[tokio::test]
async fn descriptors_are_what_cdc_acm_binds_to() {
    for (speed, bulk) in [(Speed::Full, 64), (Speed::High, 512)] {
        let device = serial(speed).await;
        let described = device.describe();
        assert_eq!(
            (described.record.id_vendor, described.record.id_product),
            (0x1209, 0x0002)
        );
        assert_eq!(described.record.device_class, 0xef);
        assert_eq!(described.record.num_interfaces, 2);
        let triplets: Vec<_> = described
            .interfaces
            .iter()
            .map(|i| (i.class, i.subclass, i.protocol))
            .collect();
        assert_eq!(triplets, vec![(2, 2, 1), (0x0a, 0, 0)]);

        let mut host = TestHost::open(&device).unwrap();
        let config = host
            .get_descriptor(descriptor_type::CONFIGURATION, 0, 512)
            .await
            .unwrap();
        let c = &config.data[..];
        assert_eq!(u16::from_le_bytes([c[2], c[3]]) as usize, c.len());
        assert_eq!(c[4], 2);
        let (interfaces, endpoints) = parse_configuration(c);
        assert_eq!(interfaces.len(), 2);
        let eps: Vec<_> = endpoints
            .iter()
            .map(|e| (e.interface, e.address, e.attributes, e.max_packet_size))
            .collect();
        assert_eq!(
            eps,
            vec![(0, 0x81, 3, 16), (1, 0x82, 2, bulk), (1, 0x02, 2, bulk)]
        );
        // IAD first, then interface 0 followed by header, call management, ACM and union.
        assert_eq!(&c[9..17], &[8, 0x0b, 0, 2, 2, 2, 1, 0]);
        let functional = &c[26..26 + 19];
        assert_eq!(&functional[..5], &[5, 0x24, 0, 0x10, 0x01]);
        assert_eq!(&functional[5..10], &[5, 0x24, 1, 0, 1]);
        assert_eq!(&functional[10..14], &[4, 0x24, 2, 0x06]);
        assert_eq!(&functional[14..19], &[5, 0x24, 6, 0, 1]);
    }
    let taken = serial(Speed::Full).await;
    let again = Serial::bind(
        taken.function().local_addr(),
        Speed::Full,
        "x",
        BusPosition::virtual_port(3),
    )
    .await;
    assert!(matches!(again, Err(SerialError::Bind { .. })));
}

#[tokio::test]
async fn class_requests_remember_line_coding_and_control_lines() {
    let device = serial(Speed::High).await;
    let mut host = TestHost::open(&device).unwrap();
    let coding = host
        .control(acm_request(cdc::GET_LINE_CODING, 0, 7), &[])
        .await
        .unwrap();
    assert_eq!(&coding.data[..], &[0x80, 0x25, 0, 0, 0, 0, 8], "9600 8N1");

    let c = host
        .control(
            acm_request(cdc::SET_LINE_CODING, 0, 7),
            &[0x00, 0xc2, 0x01, 0x00, 2, 2, 7],
        )
        .await
        .unwrap();
    assert_eq!((c.status, c.actual_length), (0, 7));
    assert_eq!(
        device.function().line_coding(),
        LineCoding {
            rate: 115200,
            stop_bits: 2,
            parity: 2,
            data_bits: 7
        }
    );
    let coding = host
        .control(acm_request(cdc::GET_LINE_CODING, 0, 7), &[])
        .await
        .unwrap();
    assert_eq!(&coding.data[..], &[0x00, 0xc2, 0x01, 0x00, 2, 2, 7]);
    let c = host
        .control(acm_request(cdc::SET_LINE_CODING, 0, 3), &[1, 2, 3])
        .await;
    assert_eq!(
        c.unwrap().status,
        errno::EPIPE,
        "a short line coding stalls"
    );

    let c = host
        .control(acm_request(cdc::SET_CONTROL_LINE_STATE, 0x03, 0), &[])
        .await;
    assert_eq!(c.unwrap().status, 0);
    assert_eq!(
        device.function().control_lines(),
        ControlLines {
            dtr: true,
            rts: true
        }
    );
    let c = host
        .control(acm_request(cdc::SEND_BREAK, 250, 0), &[])
        .await;
    assert_eq!(c.unwrap().status, 0);

    // DTR came up before any notification URB: SERIAL_STATE waits for one.
    let urb = host.urb(0x81, 16, &[]);
    let seqnum = host.submit(urb);
    let n = host.next().await.unwrap();
    assert_eq!((n.seqnum, n.status), (seqnum, 0));
    assert_eq!(&n.data[..], &[0xa1, 0x20, 0, 0, 0, 0, 2, 0, 0x03, 0]);
    // Nothing more to say: the next one stays parked.
    let urb = host.urb(0x81, 16, &[]);
    host.submit(urb);
    assert!(host.idle_for(50).await);

    let mut other_interface = acm_request(cdc::GET_LINE_CODING, 0, 7);
    other_interface.index = 1;
    let c = host.control(other_interface, &[]).await;
    assert_eq!(c.unwrap().status, errno::EPIPE);
}

#[tokio::test]
async fn bytes_flow_between_the_tcp_peer_and_the_bulk_endpoints() {
    let device = serial(Speed::High).await;
    let mut host = TestHost::open(&device).unwrap();
    // A parked notification URB and a parked bulk IN must not hold up the OUT URB.
    let urb = host.urb(0x81, 16, &[]);
    host.submit(urb);
    let urb = host.urb(0x82, 1024, &[]);
    let parked_in = host.submit(urb);

    let mut peer = connect(&device).await;
    let urb = host.urb(0x02, 0, b"hello, peer");
    let out = host.submit(urb);
    let c = host.next().await.unwrap();
    assert_eq!((c.seqnum, c.status, c.actual_length), (out, 0, 11));
    assert_eq!(read_exactly(&mut peer, 11).await, b"hello, peer");

    peer.write_all(b"hi, host").await.unwrap();
    let c = host.next().await.unwrap();
    assert_eq!((c.seqnum, c.status), (parked_in, 0));
    assert_eq!(&c.data[..], b"hi, host");
    assert_eq!(c.actual_length, 8);
}

#[tokio::test]
async fn a_short_in_urb_takes_what_fits_and_the_rest_follows() {
    let device = serial(Speed::Full).await;
    let mut host = TestHost::open(&device).unwrap();
    let mut peer = connect(&device).await;
    peer.write_all(b"0123456789").await.unwrap();
    wait_for_pipe_to_host(&device, 10).await;

    let urb = host.urb(0x82, 4, &[]);
    let first = host.submit(urb);
    let c = host.next().await.unwrap();
    assert_eq!((c.seqnum, &c.data[..]), (first, &b"0123"[..]));
    let urb = host.urb(0x82, 64, &[]);
    let second = host.submit(urb);
    let c = host.next().await.unwrap();
    assert_eq!((c.seqnum, c.status), (second, 0));
    assert_eq!(
        &c.data[..],
        b"456789",
        "completes with what there is, not waiting to fill"
    );
    assert_eq!(c.actual_length, 6);

    // Several parked URBs: the oldest takes the next bytes, the others keep waiting.
    let urb = host.urb(0x82, 64, &[]);
    let third = host.submit(urb);
    let urb = host.urb(0x82, 64, &[]);
    host.submit(urb);
    peer.write_all(b"ab").await.unwrap();
    let c = host.next().await.unwrap();
    assert_eq!((c.seqnum, &c.data[..]), (third, &b"ab"[..]));
    assert!(host.idle_for(50).await);
}

#[tokio::test]
async fn a_cancelled_in_urb_loses_no_data() {
    let device = serial(Speed::Full).await;
    let mut host = TestHost::open(&device).unwrap();
    let mut peer = connect(&device).await;
    let urb = host.urb(0x82, 64, &[]);
    let cancelled = host.submit(urb);
    host.session.cancel(cancelled);
    peer.write_all(b"kept").await.unwrap();
    assert!(
        host.idle_for(100).await,
        "the cancelled URB must not complete"
    );

    let urb = host.urb(0x82, 64, &[]);
    let next = host.submit(urb);
    let c = host.next().await.unwrap();
    assert_eq!((c.seqnum, c.status), (next, 0));
    assert_eq!(&c.data[..], b"kept");
}

#[tokio::test]
async fn out_urbs_wait_for_a_slow_peer_and_are_discarded_without_one() {
    let device = serial(Speed::High).await;
    let mut host = TestHost::open(&device).unwrap();

    // No peer: the bytes go nowhere, at once.
    let urb = host.urb(0x02, 0, b"lost");
    let out = host.submit(urb);
    let c = host.next().await.unwrap();
    assert_eq!((c.seqnum, c.status, c.actual_length), (out, 0, 4));

    // A peer that does not read: the socket buffers and then our pipe fill up, and OUT URBs
    // stop completing instead of piling up in memory.
    let mut peer = connect(&device).await;
    let block = vec![0x55u8; 16 * 1024];
    let (mut submitted, mut completed) = (0usize, 0usize);
    let mut stalled = false;
    for _ in 0..1024 {
        let urb = host.urb(0x02, 0, &block);
        host.submit(urb);
        submitted += 1;
        match tokio::time::timeout(Duration::from_millis(200), host.completions.recv()).await {
            Ok(Some(c)) => {
                assert_eq!((c.status, c.actual_length as usize), (0, block.len()));
                completed += 1;
            }
            _ => {
                stalled = true;
                break;
            }
        }
    }
    assert!(stalled, "OUT URBs kept completing with nobody reading");

    // Reading drains every byte in order, and the waiting URB completes.
    let total = submitted * block.len();
    let mut got = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    while got < total {
        let n = tokio::time::timeout(Duration::from_secs(5), peer.read(&mut buf))
            .await
            .expect("peer read timed out")
            .unwrap();
        assert!(n > 0);
        assert!(buf[..n].iter().all(|&b| b == 0x55));
        got += n;
    }
    assert_eq!(got, total);
    while completed < submitted {
        let c = host.next().await.expect("the waiting OUT URB completes");
        assert_eq!(c.status, 0);
        completed += 1;
    }
}

#[tokio::test]
async fn one_peer_at_a_time_and_the_bridge_ends_with_the_device() {
    let device = serial(Speed::Full).await;
    let addr = device.function().local_addr();
    let mut first = connect(&device).await;
    let mut second = TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(5), second.read(&mut buf))
        .await
        .expect("the second peer should be turned away");
    assert!(matches!(n, Ok(0) | Err(_)));
    assert_eq!(device.function().peer(), Some(first.local_addr().unwrap()));

    drop(device);
    let n = tokio::time::timeout(Duration::from_secs(5), first.read(&mut buf))
        .await
        .expect("dropping the device closes the peer");
    assert!(matches!(n, Ok(0) | Err(_)));
    assert!(TcpStream::connect(addr).await.is_err(), "listener closed");
}
