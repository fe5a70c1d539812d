//! Gadget Zero driven through TestHost the way the kernel's usbtest drives g_zero.

use usbip_proto::{errno, transfer_flags};

use super::pattern::SHARED_LEN;
use super::*;
use crate::device::r#virtual::descriptors::parse_configuration;
use crate::device::testing::TestHost;
use crate::device::{Device, UrbCompletion};

fn device(options: GadgetZeroOptions) -> VirtualDevice<GadgetZero> {
    with_options(options, BusPosition::virtual_port(1))
}

async fn host_in(config: u8, options: GadgetZeroOptions) -> TestHost {
    let mut host = TestHost::open(&device(options)).expect("open");
    let done = host.set_configuration(config).await.expect("completion");
    assert_eq!(done.status, 0);
    host
}

async fn host(config: u8) -> TestHost {
    host_in(config, GadgetZeroOptions::default()).await
}

async fn read(host: &mut TestHost, length: u32) -> UrbCompletion {
    let urb = host.urb(EP_IN, length, &[]);
    host.submit(urb);
    host.next().await.expect("IN completion")
}

async fn write(host: &mut TestHost, data: &[u8]) -> UrbCompletion {
    let urb = host.urb(EP_OUT, 0, data);
    host.submit(urb);
    host.next().await.expect("OUT completion")
}

fn setup(request_type: u8, request: u8, value: u16, index: u16, length: u16) -> SetupPacket {
    SetupPacket {
        request_type,
        request,
        value,
        index,
        length,
    }
}

async fn endpoint_status(host: &mut TestHost, endpoint: u8) -> u8 {
    let done = host
        .control(setup(0x82, request::GET_STATUS, 0, endpoint.into(), 2), &[])
        .await
        .expect("GET_STATUS completion");
    assert_eq!(done.status, 0);
    done.data[0]
}

async fn set_halt(host: &mut TestHost, endpoint: u8) -> i32 {
    let halt = setup(
        0x02,
        request::SET_FEATURE,
        ENDPOINT_HALT,
        endpoint.into(),
        0,
    );
    host.control(halt, &[]).await.expect("completion").status
}

async fn clear_halt(host: &mut TestHost, endpoint: u8) -> i32 {
    let clear = setup(
        0x02,
        request::CLEAR_FEATURE,
        ENDPOINT_HALT,
        endpoint.into(),
        0,
    );
    host.control(clear, &[]).await.expect("completion").status
}

/// Submits a control request without waiting; completions of other URBs may come first.
fn submit_control(host: &mut TestHost, setup: SetupPacket) -> u32 {
    let mut urb = host.urb(0, 0, &[]);
    urb.setup = setup.to_bytes();
    host.submit(urb)
}

/// The next two completions, in seqnum order.
async fn next_two(host: &mut TestHost) -> [UrbCompletion; 2] {
    let mut got = [host.next().await.expect("a"), host.next().await.expect("b")];
    got.sort_by_key(|c| c.seqnum);
    got
}

#[tokio::test]
async fn descriptors_are_those_of_g_zero_at_high_speed() {
    let dev = device(GadgetZeroOptions::default());
    let described = dev.describe();
    assert_eq!(
        (described.record.id_vendor, described.record.id_product),
        (0x0525, 0xa4a0)
    );
    assert_eq!(described.record.speed, usbip_proto::Speed::High);
    assert_eq!(described.record.num_configurations, 2);
    assert_eq!(described.record.configuration_value, CONFIG_SOURCE_SINK);

    let mut host = TestHost::open(&dev).expect("open");
    let d = host.get_descriptor(1, 0, 18).await.expect("device").data;
    assert_eq!((d[2], d[3], d[4], d[7], d[17]), (0x00, 0x02, 0xff, 64, 2));

    // Source/sink first, so that the kernel picks it; loopback second.
    for (index, value) in [(0, CONFIG_SOURCE_SINK), (1, CONFIG_LOOPBACK)] {
        let c = host
            .get_descriptor(2, index, 255)
            .await
            .expect("config")
            .data;
        assert_eq!(c[5], value);
        assert_eq!(c[7] & 0x1f, 0, "reserved attribute bits stay clear");
        assert_eq!(c[4], 1, "one interface, whatever its alternate settings");
        let (interfaces, endpoints) = parse_configuration(&c);
        let alts: Vec<_> = interfaces
            .iter()
            .map(|i| (i.number, i.alt, i.class))
            .collect();
        let eps: Vec<_> = endpoints
            .iter()
            .map(|e| {
                (
                    e.alt,
                    e.address,
                    e.attributes,
                    e.max_packet_size,
                    e.interval,
                )
            })
            .collect();
        let bulk = [(0, EP_IN, 2, 512, 0), (0, EP_OUT, 2, 512, 0)];
        if value == CONFIG_SOURCE_SINK {
            // f_sourcesink's alt 1: the bulk pair again, then isochronous IN and OUT of 1024
            // bytes every 2^(4-1) microframes.
            assert_eq!(alts, vec![(0, 0, 0xff), (0, ALT_ISO, 0xff)]);
            let alt1 = [
                (ALT_ISO, EP_IN, 2, 512, 0),
                (ALT_ISO, EP_OUT, 2, 512, 0),
                (ALT_ISO, EP_ISO_IN, 1, 1024, 4),
                (ALT_ISO, EP_ISO_OUT, 1, 1024, 4),
            ];
            assert_eq!(eps, [&bulk[..], &alt1[..]].concat());
        } else {
            assert_eq!(alts, vec![(0, 0, 0xff)]);
            assert_eq!(eps, bulk.to_vec());
        }
    }

    // usbtest's chapter-9 test demands a qualifier from a high-speed device, and valid
    // other-speed configurations for each it announces.
    let q = host.get_descriptor(6, 0, 10).await.expect("qualifier");
    assert_eq!(q.status, 0);
    assert_eq!(&q.data[..], &[10, 6, 0x00, 0x02, 0xff, 0, 0, 64, 2, 0]);
    for index in 0..2 {
        let o = host.get_descriptor(7, index, 255).await.expect("other");
        assert_eq!(o.status, 0);
        assert_eq!((o.data[0], o.data[1]), (9, 7));
        let (_, endpoints) = parse_configuration(&o.data);
        // At full speed: 64-byte bulk, 1023-byte isochronous packets (the most a frame takes).
        assert!(endpoints.iter().all(|e| match e.attributes {
            1 => e.max_packet_size == 1023,
            _ => e.max_packet_size == 64,
        }));
    }
    // Interface, endpoint and BOS descriptors cannot be fetched: a stall.
    for kind in [4, 5, 0x0f] {
        let r = host.get_descriptor(kind, 0, 9).await.expect("completion");
        assert_eq!(r.status, errno::EPIPE, "descriptor type {kind}");
    }
    let serial = host.get_descriptor(3, 3, 255).await.expect("serial").data;
    assert_eq!(serial.len(), 2 + 2 * 32);
}

#[tokio::test]
async fn bulk_before_configuration_stalls() {
    let mut host = TestHost::open(&device(GadgetZeroOptions::default())).expect("open");
    assert_eq!(read(&mut host, 512).await.status, errno::EPIPE);
    assert_eq!(write(&mut host, &[0; 512]).await.status, errno::EPIPE);
}

#[tokio::test]
async fn source_returns_exactly_the_requested_zeroes() {
    let mut host = host(CONFIG_SOURCE_SINK).await;
    for length in [1, 511, 512, 4096, 65536, SHARED_LEN as u32 + 1] {
        let done = read(&mut host, length).await;
        assert_eq!(done.status, 0);
        assert_eq!(done.actual_length, length);
        assert_eq!(done.data.len(), length as usize);
        assert!(done.data.iter().all(|&b| b == 0));
    }
}

#[tokio::test]
async fn source_serves_slices_of_one_shared_buffer() {
    for pattern in [Pattern::Zeros, Pattern::Mod63] {
        let options = GadgetZeroOptions {
            pattern,
            ..Default::default()
        };
        let mut host = host_in(CONFIG_SOURCE_SINK, options).await;
        let a = read(&mut host, 4096).await.data;
        let b = read(&mut host, 65536).await.data;
        // No allocation per URB: both point into the same preallocated buffer.
        assert!(pattern.is_shared(&a) && pattern.is_shared(&b));
        assert_eq!(a.as_ptr(), b.as_ptr());
    }
}

#[tokio::test]
async fn mod63_source_and_sink_agree_and_bad_data_halts_the_sink() {
    let options = GadgetZeroOptions {
        pattern: Pattern::Mod63,
        ..Default::default()
    };
    let mut host = host_in(CONFIG_SOURCE_SINK, options).await;
    let data = read(&mut host, 1500).await.data;
    let expected: Vec<u8> = (0..1500).map(|i| (i % 512 % 63) as u8).collect();
    assert_eq!(&data[..], &expected[..]);

    let done = write(&mut host, &expected).await;
    assert_eq!((done.status, done.actual_length), (0, 1500));

    let mut bad = expected.clone();
    bad[700] ^= 0x40;
    assert_eq!(write(&mut host, &bad).await.status, errno::EPIPE);
    assert_eq!(endpoint_status(&mut host, EP_OUT).await, 1);
    assert_eq!(write(&mut host, &expected).await.status, errno::EPIPE);
    assert_eq!(read(&mut host, 64).await.status, 0, "IN is unaffected");
    assert_eq!(clear_halt(&mut host, EP_OUT).await, 0);
    assert_eq!(write(&mut host, &expected).await.status, 0);
}

#[tokio::test]
async fn default_sink_accepts_zeroes_and_unchecked_sink_anything() {
    let mut host = host(CONFIG_SOURCE_SINK).await;
    let done = write(&mut host, &[0; 4096]).await;
    assert_eq!((done.status, done.actual_length), (0, 4096));
    assert_eq!(write(&mut host, &[0, 1]).await.status, errno::EPIPE);

    let options = GadgetZeroOptions {
        pattern: Pattern::Unchecked,
        ..Default::default()
    };
    let mut host = host_in(CONFIG_SOURCE_SINK, options).await;
    let done = write(&mut host, &[7; 3000]).await;
    assert_eq!((done.status, done.actual_length), (0, 3000));
}

#[tokio::test]
async fn vendor_requests_write_and_read_back_the_control_buffer() {
    let mut host = host(CONFIG_SOURCE_SINK).await;
    for (round, len) in [(0u8, 1usize), (1, 64), (2, 1000), (3, 4096)] {
        let data: Vec<u8> = (0..len).map(|j| round.wrapping_add(j as u8)).collect();
        let w = host
            .control(setup(0x40, 0x5b, 0, 0, len as u16), &data)
            .await
            .expect("write");
        assert_eq!((w.status, w.actual_length), (0, len as u32));
        let r = host
            .control(setup(0xc0, 0x5c, 0, 0, len as u16), &[])
            .await
            .expect("read");
        assert_eq!(r.status, 0);
        assert_eq!(&r.data[..], &data[..]);
    }
    // Longer than g_zero's buffer, a non-zero wValue or a wrong direction: a stall.
    let too_long = host.control(setup(0xc0, 0x5c, 0, 0, 4097), &[]).await;
    assert_eq!(too_long.expect("completion").status, errno::EPIPE);
    let with_value = host.control(setup(0xc0, 0x5c, 1, 0, 8), &[]).await;
    assert_eq!(with_value.expect("completion").status, errno::EPIPE);
    let wrong_way = host.control(setup(0xc0, 0x5b, 0, 0, 8), &[]).await;
    assert_eq!(wrong_way.expect("completion").status, errno::EPIPE);

    // Like g_zero, the loopback configuration does not know them.
    let mut host = self::host(CONFIG_LOOPBACK).await;
    let r = host.control(setup(0xc0, 0x5c, 0, 0, 8), &[]).await;
    assert_eq!(r.expect("completion").status, errno::EPIPE);
}

#[tokio::test]
async fn halt_set_status_clear_like_usbtest_test_13() {
    let mut host = host(CONFIG_SOURCE_SINK).await;
    for (endpoint, urb_data) in [(EP_IN, None), (EP_OUT, Some([0u8; 512]))] {
        let io = |host: &mut TestHost| match urb_data {
            None => host.urb(EP_IN, 512, &[]),
            Some(data) => host.urb(EP_OUT, 0, &data),
        };
        assert_eq!(endpoint_status(&mut host, endpoint).await, 0);
        let urb = io(&mut host);
        host.submit(urb);
        assert_eq!(host.next().await.expect("io").status, 0);

        assert_eq!(set_halt(&mut host, endpoint).await, 0);
        assert_eq!(endpoint_status(&mut host, endpoint).await, 1);
        for _ in 0..2 {
            let urb = io(&mut host);
            host.submit(urb);
            assert_eq!(host.next().await.expect("io").status, errno::EPIPE);
        }

        assert_eq!(clear_halt(&mut host, endpoint).await, 0);
        assert_eq!(endpoint_status(&mut host, endpoint).await, 0);
        let urb = io(&mut host);
        host.submit(urb);
        assert_eq!(host.next().await.expect("io").status, 0);
    }
    // Endpoint 0 and endpoints that do not exist cannot be halted.
    assert_eq!(set_halt(&mut host, 0x00).await, errno::EPIPE);
    assert_eq!(set_halt(&mut host, 0x82).await, errno::EPIPE);
}

#[tokio::test]
async fn set_configuration_clears_halts() {
    let mut host = host(CONFIG_SOURCE_SINK).await;
    assert_eq!(set_halt(&mut host, EP_IN).await, 0);
    host.set_configuration(CONFIG_SOURCE_SINK)
        .await
        .expect("set");
    assert_eq!(endpoint_status(&mut host, EP_IN).await, 0);
    assert_eq!(read(&mut host, 8).await.status, 0);
}

#[tokio::test]
async fn loopback_echoes_in_order_across_urbs_of_different_sizes() {
    let mut host = host(CONFIG_LOOPBACK).await;
    let chunk = |n: usize, seed: u8| -> Vec<u8> { (0..n).map(|i| seed ^ i as u8).collect() };
    let (a, b, c, d) = (chunk(512, 1), chunk(100, 2), chunk(1000, 3), chunk(3, 4));
    for data in [&a, &b, &c, &d] {
        let done = write(&mut host, data).await;
        assert_eq!((done.status, done.actual_length), (0, data.len() as u32));
    }
    // A full packet does not end the IN transfer, a short one does: 512 + 100 come together.
    let first = read(&mut host, 4096).await;
    assert_eq!(first.data, [a.as_slice(), b.as_slice()].concat());
    // An IN shorter than the data takes part of it; the rest stays first in line.
    assert_eq!(read(&mut host, 600).await.data, c[..600]);
    assert_eq!(read(&mut host, 4096).await.data, c[600..]);
    assert_eq!(read(&mut host, 4096).await.data, d);
    assert!(host.idle_for(20).await, "nothing left to read");
}

#[tokio::test]
async fn loopback_parks_in_until_data_arrives() {
    let mut host = host(CONFIG_LOOPBACK).await;
    let first = host.urb(EP_IN, 4096, &[]);
    let second = host.urb(EP_IN, 4096, &[]);
    let (s1, s2) = (host.submit(first), host.submit(second));
    assert!(host.idle_for(20).await, "IN waits for data");

    let out = host.urb(EP_OUT, 0, &[9; 10]);
    let so = host.submit(out);
    let done = host.next().await.expect("out");
    assert_eq!((done.seqnum, done.status), (so, 0));
    let done = host.next().await.expect("first in");
    assert_eq!((done.seqnum, &done.data[..]), (s1, &[9u8; 10][..]));
    assert!(host.idle_for(20).await, "second IN still waits");

    let out = host.urb(EP_OUT, 0, &[5; 3]);
    host.submit(out);
    let [second_in, out] = next_two(&mut host).await;
    assert_eq!((second_in.seqnum, &second_in.data[..]), (s2, &[5u8; 3][..]));
    assert_eq!(out.status, 0);
}

#[tokio::test]
async fn loopback_out_waits_while_the_buffer_is_full() {
    let options = GadgetZeroOptions {
        loopback_buffer: 2048,
        ..Default::default()
    };
    let mut host = host_in(CONFIG_LOOPBACK, options).await;
    let mut sent = Vec::new();
    let mut seqnums = Vec::new();
    for i in 0..4u8 {
        let data = vec![i; 1000];
        let urb = host.urb(EP_OUT, 0, &data);
        seqnums.push(host.submit(urb));
        sent.extend_from_slice(&data);
    }
    // Two fit in 2048 bytes; the other two wait, in order.
    for &seqnum in &seqnums[..2] {
        assert_eq!(host.next().await.expect("out").seqnum, seqnum);
    }
    assert!(host.idle_for(20).await, "OUT waits for room");

    let mut echoed = Vec::new();
    let mut out_done = Vec::new();
    while echoed.len() < sent.len() {
        let urb = host.urb(EP_IN, 1000, &[]);
        let seqnum = host.submit(urb);
        loop {
            let c = host.next().await.expect("completion");
            if c.seqnum == seqnum {
                assert_eq!(c.status, 0);
                echoed.extend_from_slice(&c.data);
                break;
            }
            out_done.push(c.seqnum);
        }
    }
    while let Some(c) = tokio::time::timeout(std::time::Duration::from_millis(20), host.next())
        .await
        .ok()
        .flatten()
    {
        out_done.push(c.seqnum);
    }
    assert_eq!(
        out_done,
        seqnums[2..].to_vec(),
        "waiting OUTs complete once, in order"
    );
    assert_eq!(echoed, sent);
}

#[tokio::test]
async fn cancelled_loopback_in_never_completes_and_loses_no_data() {
    let mut host = host(CONFIG_LOOPBACK).await;
    let parked = host.urb(EP_IN, 512, &[]);
    let parked = host.submit(parked);
    let next = host.urb(EP_IN, 512, &[]);
    let next = host.submit(next);
    host.session.cancel(parked);

    let out = host.urb(EP_OUT, 0, &[1, 2, 3]);
    host.submit(out);
    let [served, _out] = next_two(&mut host).await;
    assert_eq!(served.seqnum, next, "the cancelled IN is skipped");
    assert_eq!(&served.data[..], &[1, 2, 3]);
    assert!(host.idle_for(20).await);
}

#[tokio::test]
async fn cancelled_loopback_out_never_delivers_its_data() {
    let options = GadgetZeroOptions {
        loopback_buffer: 1000,
        ..Default::default()
    };
    let mut host = host_in(CONFIG_LOOPBACK, options).await;
    assert_eq!(write(&mut host, &[1; 1000]).await.status, 0);
    let waiting = host.urb(EP_OUT, 0, &[2; 10]);
    let waiting = host.submit(waiting);
    assert!(host.idle_for(20).await);
    host.session.cancel(waiting);

    assert_eq!(read(&mut host, 2000).await.data, vec![1; 1000]);
    assert!(host.idle_for(20).await, "the cancelled OUT stays silent");
    let urb = host.urb(EP_IN, 64, &[]);
    host.submit(urb);
    assert!(host.idle_for(20).await, "and its data never comes back");
}

#[tokio::test]
async fn halting_or_reconfiguring_ends_parked_loopback_urbs() {
    let mut host = host(CONFIG_LOOPBACK).await;
    let urb = host.urb(EP_IN, 512, &[]);
    let parked = host.submit(urb);
    let halt = setup(0x02, request::SET_FEATURE, ENDPOINT_HALT, EP_IN.into(), 0);
    let control = submit_control(&mut host, halt);
    let [a, b] = next_two(&mut host).await;
    assert_eq!((a.seqnum, a.status), (parked, errno::EPIPE));
    assert_eq!((b.seqnum, b.status), (control, 0));
    assert_eq!(clear_halt(&mut host, EP_IN).await, 0);

    let urb = host.urb(EP_IN, 512, &[]);
    let parked = host.submit(urb);
    let set = setup(
        0x00,
        request::SET_CONFIGURATION,
        CONFIG_SOURCE_SINK.into(),
        0,
        0,
    );
    let control = submit_control(&mut host, set);
    let [a, b] = next_two(&mut host).await;
    assert_eq!((a.seqnum, a.status), (parked, errno::ESHUTDOWN));
    assert_eq!((b.seqnum, b.status), (control, 0));
}

#[tokio::test]
async fn zero_length_out_ends_an_in_transfer() {
    let mut host = host(CONFIG_LOOPBACK).await;
    write(&mut host, &[3; 512]).await;
    write(&mut host, &[]).await;
    write(&mut host, &[4; 512]).await;
    assert_eq!(read(&mut host, 4096).await.data, vec![3; 512]);
    assert_eq!(read(&mut host, 4096).await.data, vec![4; 512]);
    let urb = {
        let mut urb = host.urb(EP_OUT, 0, &[6; 512]);
        urb.transfer_flags |= transfer_flags::URB_ZERO_PACKET;
        urb
    };
    host.submit(urb);
    host.next().await.expect("out");
    write(&mut host, &[7; 10]).await;
    assert_eq!(read(&mut host, 4096).await.data, vec![6; 512]);
}
