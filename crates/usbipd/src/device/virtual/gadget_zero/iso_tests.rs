//! Gadget Zero's isochronous source and sink (source/sink alt 1), driven through TestHost the
//! way usbtest's cases 15 and 16 drive g_zero.

use std::time::{Duration, Instant};

use usbip_proto::{errno, transfer_flags, IsoPacket};

use super::*;
use crate::device::testing::TestHost;
use crate::device::UrbCompletion;

const SET_INTERFACE: u8 = 11;
const GET_INTERFACE: u8 = 10;

async fn host_with(pattern: Pattern, config: u8) -> TestHost {
    let options = GadgetZeroOptions {
        pattern,
        ..Default::default()
    };
    let dev = with_options(options, BusPosition::virtual_port(1));
    let mut host = TestHost::open(&dev).expect("open");
    let done = host.set_configuration(config).await.expect("completion");
    assert_eq!(done.status, 0);
    host
}

async fn set_interface(host: &mut TestHost, alt: u16) -> i32 {
    let setup = SetupPacket {
        request_type: 0x01,
        request: SET_INTERFACE,
        value: alt,
        index: 0,
        length: 0,
    };
    host.control(setup, &[]).await.expect("completion").status
}

async fn get_interface(host: &mut TestHost) -> u8 {
    let setup = SetupPacket {
        request_type: 0x81,
        request: GET_INTERFACE,
        value: 0,
        index: 0,
        length: 1,
    };
    let done = host.control(setup, &[]).await.expect("completion");
    assert_eq!(done.status, 0);
    done.data[0]
}

/// An iso URB as usbtest's `iso_alloc_urb` builds it: `length` bytes in packets of 1024, only
/// the last one short. OUT data is zeroes, as usbtest sends.
fn iso_urb(host: &mut TestHost, endpoint: u8, length: u32) -> Urb {
    let out = vec![0u8; length as usize];
    let mut urb = if endpoint & 0x80 != 0 {
        host.urb(endpoint, length, &[])
    } else {
        host.urb(endpoint, 0, &out)
    };
    urb.transfer_flags |= transfer_flags::URB_ISO_ASAP;
    urb.interval = 8;
    urb.iso = (0..length.div_ceil(1024))
        .map(|i| IsoPacket {
            offset: i * 1024,
            length: (length - i * 1024).min(1024),
            ..Default::default()
        })
        .collect();
    urb
}

async fn submit_wait(host: &mut TestHost, urb: Urb) -> UrbCompletion {
    let seqnum = host.submit(urb);
    host.next_for(seqnum).await.expect("iso completion")
}

#[tokio::test]
async fn set_interface_selects_the_iso_alternate_setting_of_source_sink_only() {
    let mut host = host_with(Pattern::Zeros, CONFIG_SOURCE_SINK).await;
    assert_eq!(get_interface(&mut host).await, 0);
    assert_eq!(set_interface(&mut host, ALT_ISO.into()).await, 0);
    assert_eq!(get_interface(&mut host).await, ALT_ISO);
    assert_eq!(set_interface(&mut host, 2).await, errno::EPIPE, "no alt 2");
    assert_eq!(get_interface(&mut host).await, ALT_ISO);
    assert_eq!(set_interface(&mut host, 0).await, 0);
    assert_eq!(get_interface(&mut host).await, 0);

    let mut host = host_with(Pattern::Zeros, CONFIG_LOOPBACK).await;
    assert_eq!(set_interface(&mut host, ALT_ISO.into()).await, errno::EPIPE);
    let mut host = host_with(Pattern::Zeros, 0).await;
    assert_eq!(
        set_interface(&mut host, 0).await,
        errno::EPIPE,
        "unconfigured"
    );
}

#[tokio::test]
async fn iso_urbs_outside_alt_1_fail_with_one_descriptor_per_packet() {
    let mut host = host_with(Pattern::Zeros, CONFIG_SOURCE_SINK).await;
    for endpoint in [EP_ISO_IN, EP_ISO_OUT] {
        let urb = iso_urb(&mut host, endpoint, 4096);
        let done = submit_wait(&mut host, urb).await;
        assert_eq!((done.status, done.actual_length), (errno::EPIPE, 0));
        assert_eq!(done.iso.len(), 4, "the client's packet count is kept");
    }
}

#[tokio::test]
async fn iso_in_packets_are_full_and_each_restarts_the_pattern() {
    let mut host = host_with(Pattern::Mod63, CONFIG_SOURCE_SINK).await;
    assert_eq!(set_interface(&mut host, ALT_ISO.into()).await, 0);
    let urb = iso_urb(&mut host, EP_ISO_IN, 3500);
    let done = submit_wait(&mut host, urb).await;
    assert_eq!(
        (done.status, done.error_count, done.actual_length),
        (0, 0, 3500)
    );
    let got: Vec<_> = done
        .iso
        .iter()
        .map(|p| (p.offset, p.length, p.actual_length, p.status))
        .collect();
    assert_eq!(
        got,
        vec![
            (0, 1024, 1024, 0),
            (1024, 1024, 1024, 0),
            (2048, 1024, 1024, 0),
            (3072, 428, 428, 0)
        ]
    );
    assert_eq!(done.data.len(), 3500);
    for (i, &b) in done.data.iter().enumerate() {
        assert_eq!(b, (i % 1024 % 63) as u8, "byte {i}");
    }
}

#[tokio::test]
async fn iso_in_packets_of_other_lengths_still_restart_the_pattern() {
    let mut host = host_with(Pattern::Mod63, CONFIG_SOURCE_SINK).await;
    assert_eq!(set_interface(&mut host, ALT_ISO.into()).await, 0);
    let mut urb = iso_urb(&mut host, EP_ISO_IN, 3000);
    urb.iso = vec![
        IsoPacket {
            offset: 0,
            length: 100,
            ..Default::default()
        },
        IsoPacket {
            offset: 1000,
            length: 200,
            ..Default::default()
        },
    ];
    let done = submit_wait(&mut host, urb).await;
    assert_eq!(done.actual_length, 300);
    let want: Vec<u8> = (0..100).chain(0..200).map(|i| (i % 63) as u8).collect();
    assert_eq!(
        &done.data[..],
        &want[..],
        "compacted, each packet from byte 0"
    );
}

#[tokio::test]
async fn iso_out_packets_are_all_sunk() {
    // Even with the mod63 pattern: usbtest writes zeroes to the iso sink, which g_zero takes.
    let mut host = host_with(Pattern::Mod63, CONFIG_SOURCE_SINK).await;
    assert_eq!(set_interface(&mut host, ALT_ISO.into()).await, 0);
    let urb = iso_urb(&mut host, EP_ISO_OUT, 4096);
    let done = submit_wait(&mut host, urb).await;
    assert_eq!(
        (done.status, done.error_count, done.actual_length),
        (0, 0, 4096)
    );
    assert!(done.data.is_empty());
    assert!(done
        .iso
        .iter()
        .all(|p| p.actual_length == 1024 && p.status == 0));
}

#[tokio::test]
async fn a_packet_longer_than_wmaxpacketsize_is_refused() {
    let mut host = host_with(Pattern::Zeros, CONFIG_SOURCE_SINK).await;
    assert_eq!(set_interface(&mut host, ALT_ISO.into()).await, 0);
    let mut urb = iso_urb(&mut host, EP_ISO_IN, 2048);
    urb.iso = vec![IsoPacket {
        offset: 0,
        length: 1025,
        ..Default::default()
    }];
    let done = submit_wait(&mut host, urb).await;
    assert_eq!((done.status, done.iso.len()), (errno::EMSGSIZE, 1));
}

#[tokio::test]
async fn a_queue_of_iso_urbs_streams_at_one_packet_per_millisecond() {
    // usbtest's test_queue: several URBs in flight, each resubmitted when it completes.
    let mut host = host_with(Pattern::Zeros, CONFIG_SOURCE_SINK).await;
    assert_eq!(set_interface(&mut host, ALT_ISO.into()).await, 0);
    let t0 = Instant::now();
    let seqnums: Vec<u32> = (0..8)
        .map(|_| {
            let urb = iso_urb(&mut host, EP_ISO_IN, 4096);
            host.submit(urb)
        })
        .collect();
    let mut frames = Vec::new();
    for want in seqnums {
        let done = host.next().await.expect("completion");
        assert_eq!(
            (done.seqnum, done.status, done.actual_length),
            (want, 0, 4096)
        );
        frames.push(done.start_frame);
    }
    // 8 URBs of 4 packets: 32 ms of bus time, never less.
    assert!(
        t0.elapsed() >= Duration::from_millis(32),
        "{:?}",
        t0.elapsed()
    );
    for pair in frames.windows(2) {
        assert_eq!(
            pair[1].wrapping_sub(pair[0]) & 0x3fff,
            32,
            "4 packets of 8 microframes"
        );
    }
}

#[tokio::test]
async fn changing_the_alternate_setting_ends_waiting_iso_urbs() {
    let mut host = host_with(Pattern::Zeros, CONFIG_SOURCE_SINK).await;
    assert_eq!(set_interface(&mut host, ALT_ISO.into()).await, 0);
    // 500 packets: half a second on the bus, so they are surely still waiting.
    let urb = iso_urb(&mut host, EP_ISO_IN, 500 * 1024);
    let seqnum = host.submit(urb);
    // Not `control`, which drops the completions of other URBs while it waits.
    let mut back_to_0 = host.urb(0, 0, &[]);
    back_to_0.setup = [0x01, SET_INTERFACE, 0, 0, 0, 0, 0, 0];
    let control = host.submit(back_to_0);
    let ended = host.next().await.expect("ended");
    let answered = host.next().await.expect("answered");
    assert_eq!(
        (ended.seqnum, answered.seqnum),
        (seqnum, control),
        "ended first"
    );
    // Ended at once, not after its packets: those would have completed with status 0.
    assert_eq!((ended.status, ended.actual_length), (errno::ESHUTDOWN, 0));
    assert_eq!(ended.iso.len(), 500);
    assert_eq!(answered.status, 0);
}

#[tokio::test]
async fn a_cancelled_iso_urb_never_completes() {
    let mut host = host_with(Pattern::Zeros, CONFIG_SOURCE_SINK).await;
    assert_eq!(set_interface(&mut host, ALT_ISO.into()).await, 0);
    let first = iso_urb(&mut host, EP_ISO_OUT, 20 * 1024);
    let first = host.submit(first);
    let second = iso_urb(&mut host, EP_ISO_OUT, 1024);
    let second = host.submit(second);
    host.session.cancel(first);
    let done = host.next().await.expect("the second one");
    assert_eq!(done.seqnum, second);
    assert!(host.idle_for(100).await, "nothing for the cancelled one");
}
