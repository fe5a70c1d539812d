//! Per-packet answers and bus pacing of isochronous URBs.

use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use usbip_proto::{errno, transfer_flags, Direction, IsoPacket, Speed};

use super::*;
use crate::device::{Completer, Urb, UrbCompletion};

/// A high-speed endpoint of 1024-byte packets every 8 microframes (bInterval 4): 1 ms.
fn endpoint() -> IsoEndpoint {
    IsoEndpoint::new(
        Speed::High,
        &EndpointInfo {
            interface: 0,
            alt: 1,
            address: 0x82,
            attributes: transfer_type::ISOCHRONOUS,
            max_packet_size: 1024,
            transactions: 1,
            interval: 4,
        },
    )
}

fn packet(offset: u32, length: u32) -> IsoPacket {
    IsoPacket {
        offset,
        length,
        ..Default::default()
    }
}

fn urb(seqnum: u32, direction: Direction, length: u32, iso: Vec<IsoPacket>) -> Urb {
    let data = match direction {
        Direction::In => Bytes::new(),
        Direction::Out => (0..length).map(|i| i as u8).collect::<Vec<u8>>().into(),
    };
    Urb {
        seqnum,
        endpoint: 2,
        direction,
        transfer_flags: transfer_flags::URB_ISO_ASAP,
        transfer_length: length,
        setup: [0; 8],
        data,
        interval: 8,
        start_frame: 0,
        iso,
    }
}

/// `n` packets of 1024 bytes, as usbtest lays them out.
fn packets(n: u32) -> Vec<IsoPacket> {
    (0..n).map(|i| packet(i * 1024, 1024)).collect()
}

#[test]
fn endpoint_timing_follows_the_descriptor_and_speed() {
    let hs = endpoint();
    assert_eq!(hs.period, Duration::from_millis(1));
    assert_eq!(
        (hs.frame, hs.frame_mask, hs.max_packet),
        (MICROFRAME, 0x3fff, 1024)
    );
    let mut info = EndpointInfo {
        interface: 0,
        alt: 1,
        address: 0x02,
        attributes: transfer_type::ISOCHRONOUS,
        max_packet_size: 1023,
        transactions: 1,
        interval: 1,
    };
    let fs = IsoEndpoint::new(Speed::Full, &info);
    assert_eq!(
        (fs.period, fs.frame_mask),
        (Duration::from_millis(1), 0x7ff)
    );
    info.transactions = 3;
    info.interval = 0; // out of range: taken as 1, never a zero period
    let hb = IsoEndpoint::new(Speed::High, &info);
    assert_eq!((hb.max_packet, hb.period), (3069, MICROFRAME));
}

#[test]
fn find_takes_only_an_isochronous_endpoint_of_that_alternate_setting() {
    let config = crate::device::r#virtual::ConfigBuilder::new(1, 0, 0, 100)
        .interface(0, 0, (0xff, 0, 0), 1, 0)
        .endpoint(0x81, transfer_type::BULK, 512, 0)
        .interface(0, 1, (0xff, 0, 0), 2, 0)
        .endpoint(0x81, transfer_type::BULK, 512, 0)
        .endpoint(0x82, transfer_type::ISOCHRONOUS, 1024 | (1 << 11), 4)
        .build();
    let found = IsoEndpoint::find(Speed::High, &config, 0, 1, 0x82);
    assert_eq!(found.map(|e| e.max_packet), Some(2048));
    assert_eq!(IsoEndpoint::find(Speed::High, &config, 0, 0, 0x82), None);
    assert_eq!(IsoEndpoint::find(Speed::High, &config, 0, 1, 0x81), None);
}

#[test]
fn check_refuses_what_a_host_controller_would() {
    let ep = endpoint();
    assert_eq!(
        packets::check(&urb(1, Direction::In, 4096, packets(4)), &ep),
        Ok(())
    );
    let none = urb(1, Direction::In, 4096, Vec::new());
    assert_eq!(packets::check(&none, &ep), Err(errno::EINVAL));
    let big = urb(1, Direction::In, 4096, vec![packet(0, 1025)]);
    assert_eq!(packets::check(&big, &ep), Err(errno::EMSGSIZE));
    let outside = urb(
        1,
        Direction::In,
        1500,
        vec![packet(0, 1000), packet(1000, 1000)],
    );
    assert_eq!(packets::check(&outside, &ep), Err(errno::EINVAL));
}

#[test]
fn in_data_is_compacted_and_descriptors_keep_the_offsets() {
    // Packets with gaps between them (a client may leave room), the stream shorter than asked.
    let iso = vec![packet(0, 100), packet(1024, 200), packet(2048, 300)];
    let stream: Bytes = (0..250u32).map(|i| i as u8).collect::<Vec<u8>>().into();
    let done = packets::answer_in(&urb(7, Direction::In, 2348, iso), stream.clone());
    assert_eq!((done.seqnum, done.status, done.error_count), (7, 0, 0));
    assert_eq!(done.actual_length, 250);
    assert_eq!(&done.data[..], &stream[..], "back to back, no gaps");
    assert_eq!(
        done.data.as_ptr(),
        stream.as_ptr(),
        "a slice of the stream, not a copy"
    );
    let got: Vec<(u32, u32, u32, i32)> = done
        .iso
        .iter()
        .map(|p| (p.offset, p.length, p.actual_length, p.status))
        .collect();
    assert_eq!(
        got,
        vec![(0, 100, 100, 0), (1024, 200, 150, 0), (2048, 300, 0, 0)]
    );
}

#[test]
fn in_packets_answered_one_by_one_are_joined() {
    let iso = vec![packet(0, 10), packet(512, 20)];
    let mut n = 0u8;
    let done = packets::answer_in_each(&urb(1, Direction::In, 532, iso), |len| {
        n += 1;
        // The first packet comes back short; an over-long answer is cut to the packet.
        Bytes::from(vec![n; if n == 1 { len / 2 } else { len + 5 }])
    });
    assert_eq!(
        &done.data[..],
        &[&[1u8; 5][..], &[2u8; 20][..]].concat()[..]
    );
    assert_eq!(done.actual_length, 25);
    assert_eq!(
        (done.iso[0].actual_length, done.iso[1].actual_length),
        (5, 20)
    );
}

#[test]
fn out_packets_each_reach_the_sink_and_a_refused_one_counts_as_an_error() {
    let iso = vec![packet(0, 4), packet(8, 4), packet(12, 4)];
    let mut seen = Vec::new();
    let done = packets::answer_out(&urb(3, Direction::Out, 16, iso), |bytes| {
        seen.push(bytes.to_vec());
        if bytes[0] == 8 {
            Err(errno::EPROTO)
        } else {
            Ok(())
        }
    });
    assert_eq!(
        seen,
        vec![vec![0, 1, 2, 3], vec![8, 9, 10, 11], vec![12, 13, 14, 15]]
    );
    assert_eq!(
        (done.status, done.error_count, done.actual_length),
        (0, 1, 8)
    );
    assert!(done.data.is_empty());
    let statuses: Vec<(u32, i32)> = done
        .iso
        .iter()
        .map(|p| (p.actual_length, p.status))
        .collect();
    assert_eq!(statuses, vec![(4, 0), (0, errno::EPROTO), (4, 0)]);
}

#[test]
fn a_failed_urb_keeps_one_descriptor_per_packet() {
    let done = UrbCompletion::failed(&urb(9, Direction::In, 4096, packets(4)), errno::EPIPE);
    assert_eq!(
        (done.status, done.actual_length, done.error_count),
        (errno::EPIPE, 0, 4)
    );
    assert_eq!(done.iso.len(), 4);
    assert!(done
        .iso
        .iter()
        .all(|p| p.status == errno::EPIPE && p.actual_length == 0 && p.length == 1024));
}

fn answer(seqnum: u32, n: u32) -> UrbCompletion {
    packets::answer_in(
        &urb(seqnum, Direction::In, n * 1024, packets(n)),
        Bytes::from(vec![0; (n * 1024) as usize]),
    )
}

async fn next(rx: &mut tokio::sync::mpsc::UnboundedReceiver<UrbCompletion>) -> UrbCompletion {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .ok()
        .flatten()
        .expect("a completion within 5 s")
}

#[tokio::test]
async fn urbs_complete_in_order_one_packet_per_interval_back_to_back() {
    let (completer, mut rx) = Completer::channel();
    let mut pacer = IsoPacer::new(endpoint(), completer);
    let t0 = Instant::now();
    pacer.schedule(answer(1, 4));
    pacer.schedule(answer(2, 4));
    pacer.schedule(answer(3, 2));
    let first = next(&mut rx).await;
    let t1 = t0.elapsed();
    let second = next(&mut rx).await;
    let t2 = t0.elapsed();
    let third = next(&mut rx).await;
    let t3 = t0.elapsed();
    assert_eq!((first.seqnum, second.seqnum, third.seqnum), (1, 2, 3));
    // Never early: 4, 8 and 10 packets of 1 ms each.
    assert!(t1 >= Duration::from_millis(4), "first after {t1:?}");
    assert!(t2 >= Duration::from_millis(8), "second after {t2:?}");
    assert!(t3 >= Duration::from_millis(10), "third after {t3:?}");
    // Each starts where the one before ended: 4 packets of 8 microframes later.
    let mask = endpoint().frame_mask;
    assert_eq!(
        second.start_frame.wrapping_sub(first.start_frame) & mask,
        32
    );
    assert_eq!(
        third.start_frame.wrapping_sub(second.start_frame) & mask,
        32
    );
    assert_eq!(first.iso.len(), 4);
}

#[tokio::test]
async fn a_cancelled_urb_never_completes_and_the_rest_go_on() {
    let (completer, mut rx) = Completer::channel();
    let mut pacer = IsoPacer::new(endpoint(), completer);
    pacer.schedule(answer(1, 2));
    pacer.schedule(answer(2, 2));
    pacer.schedule(answer(3, 2));
    assert!(pacer.cancel(2));
    assert!(!pacer.cancel(2), "only once");
    assert_eq!(next(&mut rx).await.seqnum, 1);
    assert_eq!(next(&mut rx).await.seqnum, 3);
    assert!(tokio::time::timeout(Duration::from_millis(50), rx.recv())
        .await
        .is_err());
}

#[tokio::test]
async fn reset_ends_waiting_urbs_with_eshutdown_at_once() {
    let (completer, mut rx) = Completer::channel();
    let mut pacer = IsoPacer::new(endpoint(), completer);
    pacer.schedule(answer(1, 500));
    pacer.schedule(answer(2, 500));
    let t0 = Instant::now();
    pacer.reset();
    for seqnum in [1, 2] {
        let c = next(&mut rx).await;
        assert_eq!(
            (c.seqnum, c.status, c.actual_length),
            (seqnum, errno::ESHUTDOWN, 0)
        );
        assert!(c.data.is_empty());
        assert_eq!((c.iso.len(), c.error_count), (500, 500));
        assert!(c
            .iso
            .iter()
            .all(|p| p.actual_length == 0 && p.status == errno::ESHUTDOWN));
    }
    // (Ended, not paced: a paced URB would carry its packets' data and status 0.)
    // The schedule starts afresh: a new URB does not wait behind the dropped ones, whose
    // 1000 packets would have taken 1 s (the bound leaves a loaded machine 0.9 s).
    pacer.schedule(answer(3, 1));
    assert_eq!(next(&mut rx).await.seqnum, 3);
    assert!(t0.elapsed() < Duration::from_millis(900));
}

#[tokio::test]
async fn dropping_the_pacer_drops_what_waits() {
    let (completer, mut rx) = Completer::channel();
    let mut pacer = IsoPacer::new(endpoint(), completer);
    pacer.schedule(answer(1, 20));
    drop(pacer);
    // The task and its completer are gone: the channel closes without a completion.
    let got = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
    assert!(matches!(got, Ok(None)), "{got:?}");
}

#[test]
fn without_a_runtime_urbs_complete_at_once() {
    let (completer, mut rx) = Completer::channel();
    let mut pacer = IsoPacer::new(endpoint(), completer);
    pacer.schedule(answer(1, 4));
    assert_eq!(rx.try_recv().map(|c| c.seqnum).ok(), Some(1));
}
