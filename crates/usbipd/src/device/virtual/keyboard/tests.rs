use usbip_proto::{errno, Speed};

use super::*;
use crate::device::r#virtual::descriptors::parse_configuration;
use crate::device::setup::descriptor_type;
use crate::device::testing::TestHost;
use crate::device::Device;

fn keyboard(speed: Speed) -> (VirtualDevice<Keyboard>, KeyboardHandle) {
    Keyboard::new(speed, "KB0001", BusPosition::virtual_port(1)).expect("supported speed")
}

fn class_in(request: u8, value: u16, length: u16) -> SetupPacket {
    SetupPacket {
        request_type: 0xa1,
        request,
        value,
        index: 0,
        length,
    }
}

fn class_out(request: u8, value: u16, length: u16) -> SetupPacket {
    SetupPacket {
        request_type: 0x21,
        request,
        value,
        index: 0,
        length,
    }
}

fn press(modifiers: u8, usage: u8) -> Vec<u8> {
    vec![modifiers, 0, usage, 0, 0, 0, 0, 0]
}

const RELEASE: [u8; 8] = [0; 8];

#[tokio::test]
async fn descriptors_describe_a_boot_keyboard() {
    for (speed, interval) in [(Speed::Full, 10), (Speed::High, 7)] {
        let (device, _) = keyboard(speed);
        let described = device.describe();
        assert_eq!(described.record.id_vendor, 0x1209);
        assert_eq!(described.record.id_product, 0x0001);
        assert_eq!(described.record.speed, speed);
        assert_eq!(described.interfaces.len(), 1);
        assert_eq!(
            (
                described.interfaces[0].class,
                described.interfaces[0].subclass,
                described.interfaces[0].protocol
            ),
            (3, 1, 1)
        );

        let mut host = TestHost::open(&device).unwrap();
        let dev = host
            .get_descriptor(descriptor_type::DEVICE, 0, 18)
            .await
            .unwrap();
        assert_eq!(dev.status, 0);
        assert_eq!(&dev.data[8..12], &[0x09, 0x12, 0x01, 0x00]);

        let config = host
            .get_descriptor(descriptor_type::CONFIGURATION, 0, 255)
            .await
            .unwrap();
        assert_eq!(config.status, 0);
        let total = u16::from_le_bytes([config.data[2], config.data[3]]) as usize;
        assert_eq!(total, config.data.len());
        assert_eq!(total, 9 + 9 + 9 + 7);
        let (interfaces, endpoints) = parse_configuration(&config.data);
        assert_eq!(interfaces.len(), 1);
        assert_eq!(endpoints.len(), 1);
        assert_eq!(endpoints[0].address, 0x81);
        assert_eq!(endpoints[0].attributes, 3);
        assert_eq!(endpoints[0].max_packet_size, 8);
        // The HID descriptor follows the interface descriptor, then the endpoint with bInterval.
        assert_eq!(&config.data[18..27], &hid_descriptor());
        assert_eq!(&config.data[18..20], &[9, 0x21]);
        assert_eq!(u16::from_le_bytes([config.data[25], config.data[26]]), 63);
        assert_eq!(config.data[33], interval);

        let product = host
            .get_descriptor(descriptor_type::STRING, 2, 255)
            .await
            .unwrap();
        let text: Vec<u16> = product.data[2..]
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        assert_eq!(String::from_utf16_lossy(&text), "usbipd virtual keyboard");
    }
    assert_eq!(
        Keyboard::new(Speed::Super, "x", BusPosition::virtual_port(1)).err(),
        Some(KeyboardError::UnsupportedSpeed(Speed::Super))
    );
}

#[tokio::test]
async fn report_and_hid_descriptors_come_from_the_interface() {
    let (device, _) = keyboard(Speed::Full);
    let mut host = TestHost::open(&device).unwrap();
    let get = |kind: u8, length: u16| SetupPacket {
        request_type: 0x81,
        request: 0x06,
        value: u16::from(kind) << 8,
        index: 0,
        length,
    };
    let report = host.control(get(0x22, 63), &[]).await.unwrap();
    assert_eq!(report.status, 0);
    assert_eq!(&report.data[..], &REPORT_DESCRIPTOR[..]);
    assert_eq!(report.data[..4], [0x05, 0x01, 0x09, 0x06]);
    assert_eq!(*report.data.last().unwrap(), 0xc0);

    let hid = host.control(get(0x21, 9), &[]).await.unwrap();
    assert_eq!(&hid.data[..], &hid_descriptor());

    // A short wLength truncates; another interface or descriptor type stalls.
    let short = host.control(get(0x22, 10), &[]).await.unwrap();
    assert_eq!(short.data.len(), 10);
    let mut other_interface = get(0x22, 63);
    other_interface.index = 1;
    let stalled = host.control(other_interface, &[]).await.unwrap();
    assert_eq!(stalled.status, errno::EPIPE);
    let stalled = host.control(get(0x23, 9), &[]).await.unwrap();
    assert_eq!(stalled.status, errno::EPIPE);
}

#[tokio::test]
async fn class_requests_usbhid_sends() {
    let (device, handle) = keyboard(Speed::High);
    let mut host = TestHost::open(&device).unwrap();

    // SET_IDLE(0) then GET_IDLE.
    let c = host.control(class_out(hid::SET_IDLE, 0x0000, 0), &[]).await;
    assert_eq!(c.unwrap().status, 0);
    let c = host.control(class_out(hid::SET_IDLE, 0x7d00, 0), &[]).await;
    assert_eq!(c.unwrap().status, 0);
    let idle = host
        .control(class_in(hid::GET_IDLE, 0, 1), &[])
        .await
        .unwrap();
    assert_eq!(&idle.data[..], &[0x7d]);

    // LEDs through SET_REPORT(Output), remembered and readable back.
    let c = host
        .control(class_out(hid::SET_REPORT, 0x0200, 1), &[0x02])
        .await
        .unwrap();
    assert_eq!((c.status, c.actual_length), (0, 1));
    assert_eq!(handle.leds(), 0x02);
    let leds = host
        .control(class_in(hid::GET_REPORT, 0x0200, 1), &[])
        .await
        .unwrap();
    assert_eq!(&leds.data[..], &[0x02]);
    let input = host
        .control(class_in(hid::GET_REPORT, 0x0100, 8), &[])
        .await
        .unwrap();
    assert_eq!(&input.data[..], &RELEASE);
    // No feature report and no report IDs.
    for value in [0x0300, 0x0101] {
        let c = host.control(class_in(hid::GET_REPORT, value, 8), &[]).await;
        assert_eq!(c.unwrap().status, errno::EPIPE);
    }
    let c = host
        .control(class_out(hid::SET_REPORT, 0x0200, 0), &[])
        .await;
    assert_eq!(
        c.unwrap().status,
        errno::EPIPE,
        "an LED report needs its byte"
    );

    // Protocol: report by default, boot after SET_PROTOCOL(0), nothing else accepted.
    let p = host.control(class_in(hid::GET_PROTOCOL, 0, 1), &[]).await;
    assert_eq!(&p.unwrap().data[..], &[1]);
    let c = host.control(class_out(hid::SET_PROTOCOL, 0, 0), &[]).await;
    assert_eq!(c.unwrap().status, 0);
    let p = host.control(class_in(hid::GET_PROTOCOL, 0, 1), &[]).await;
    assert_eq!(&p.unwrap().data[..], &[0]);
    let c = host.control(class_out(hid::SET_PROTOCOL, 2, 0), &[]).await;
    assert_eq!(c.unwrap().status, errno::EPIPE);

    // Unknown class request.
    let c = host.control(class_out(0x42, 0, 0), &[]).await;
    assert_eq!(c.unwrap().status, errno::EPIPE);
}

#[tokio::test]
async fn typed_text_comes_out_as_press_release_pairs_in_order() {
    let (device, handle) = keyboard(Speed::Full);
    let mut host = TestHost::open(&device).unwrap();
    host.set_configuration(1).await.unwrap();

    // Typed before any URB is parked: it waits in the queue.
    handle.type_text("aB1\n").unwrap();
    assert_eq!(handle.pending(), 8);
    let expected = [
        press(0, 0x04),
        RELEASE.to_vec(),
        press(0x02, 0x05),
        RELEASE.to_vec(),
        press(0, 0x1e),
        RELEASE.to_vec(),
        press(0, 0x28),
        RELEASE.to_vec(),
    ];
    for report in &expected {
        let urb = host.urb(0x81, 8, &[]);
        let seqnum = host.submit(urb);
        let c = host.next().await.unwrap();
        assert_eq!(c.seqnum, seqnum);
        assert_eq!(c.status, 0);
        assert_eq!(&c.data[..], &report[..]);
    }
    assert_eq!(handle.pending(), 0);

    // Now URBs are parked first and the text follows: they complete in submission order.
    let first = host.urb(0x81, 8, &[]);
    let first = host.submit(first);
    let second = host.urb(0x81, 8, &[]);
    let second = host.submit(second);
    assert!(host.idle_for(50).await, "nothing to report yet");
    handle.type_text("z").unwrap();
    let c = host.next().await.unwrap();
    assert_eq!((c.seqnum, &c.data[..]), (first, &press(0, 0x1d)[..]));
    let c = host.next().await.unwrap();
    assert_eq!((c.seqnum, &c.data[..]), (second, &RELEASE[..]));
}

#[tokio::test]
async fn a_cancelled_urb_leaves_its_report_to_the_next_one() {
    let (device, handle) = keyboard(Speed::Full);
    let mut host = TestHost::open(&device).unwrap();
    let urb = host.urb(0x81, 8, &[]);
    let cancelled = host.submit(urb);
    host.session.cancel(cancelled);
    handle.type_text("q").unwrap();
    assert!(
        host.idle_for(50).await,
        "the cancelled URB must not complete"
    );
    assert_eq!(handle.pending(), 2);

    let urb = host.urb(0x81, 8, &[]);
    let next = host.submit(urb);
    let c = host.next().await.unwrap();
    assert_eq!((c.seqnum, c.status), (next, 0));
    assert_eq!(&c.data[..], &press(0, 0x14)[..]);
}

#[tokio::test]
async fn unknown_characters_and_a_full_queue_are_errors_that_queue_nothing() {
    let (_device, handle) = keyboard(Speed::Full);
    assert_eq!(
        handle.type_text("ok€"),
        Err(KeyboardError::UnknownChar('€'))
    );
    assert_eq!(handle.pending(), 0, "all or nothing");

    let almost = "x".repeat(QUEUE_CAPACITY / 2 - 1);
    handle.type_text(&almost).unwrap();
    assert_eq!(handle.pending(), QUEUE_CAPACITY - 2);
    assert!(matches!(
        handle.type_text("yz"),
        Err(KeyboardError::QueueFull { needed: 4, .. })
    ));
    assert_eq!(handle.pending(), QUEUE_CAPACITY - 2);
    handle.type_text("y").unwrap();
    assert_eq!(handle.pending(), QUEUE_CAPACITY);
    assert!(handle.type_text("y").is_err());

    let (_device, fresh) = keyboard(Speed::Full);
    let too_long = "x".repeat(QUEUE_CAPACITY);
    assert!(matches!(
        fresh.type_text(&too_long),
        Err(KeyboardError::QueueFull { needed, .. }) if needed == 2 * QUEUE_CAPACITY
    ));
    assert_eq!(fresh.pending(), 0);
}

#[tokio::test]
async fn other_endpoints_stall_and_a_short_buffer_overflows() {
    let (device, handle) = keyboard(Speed::Full);
    let mut host = TestHost::open(&device).unwrap();
    let urb = host.urb(0x01, 0, &[1, 2]);
    let out = host.submit(urb);
    let c = host.next().await.unwrap();
    assert_eq!((c.seqnum, c.status), (out, errno::EPIPE));
    let urb = host.urb(0x82, 8, &[]);
    host.submit(urb);
    assert_eq!(host.next().await.unwrap().status, errno::EPIPE);

    let urb = host.urb(0x81, 4, &[]);
    let short = host.submit(urb);
    handle.type_text("a").unwrap();
    let c = host.next().await.unwrap();
    assert_eq!((c.seqnum, c.status), (short, errno::EOVERFLOW));
    assert!(c.data.is_empty());
}

#[tokio::test]
async fn a_closed_session_drops_its_urbs_and_the_next_one_gets_the_text() {
    let (device, handle) = keyboard(Speed::Full);
    let mut host = TestHost::open(&device).unwrap();
    let urb = host.urb(0x81, 8, &[]);
    host.submit(urb);
    drop(host);
    handle.type_text("m").unwrap();
    assert_eq!(handle.pending(), 2, "no client: the reports wait");

    let mut host = TestHost::open(&device).unwrap();
    let urb = host.urb(0x81, 8, &[]);
    let seqnum = host.submit(urb);
    let c = host.next().await.unwrap();
    assert_eq!(c.seqnum, seqnum);
    assert_eq!(&c.data[..], &press(0, 0x10)[..]);
}
