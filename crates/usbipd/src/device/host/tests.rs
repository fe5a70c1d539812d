//! Host-device logic against the backend double: URB mapping, unlink with resubmission,
//! interception, claiming and release.

use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use bytes::Bytes;
use usbip_proto::{errno, transfer_flags, InterfaceRecord, IsoPacket, Speed};

use super::backend::{HostDeviceInfo, TransferDone, TransferRequest};
use super::double::Double;
use super::errors::{HostError, HostErrorKind, XferError};
use super::HostDevice;
use crate::device::r#virtual::descriptors::transfer_type::{BULK, INTERRUPT, ISOCHRONOUS};
use crate::device::r#virtual::ConfigBuilder;
use crate::device::testing::TestHost;
use crate::device::{Device, OpenError, SetupPacket, UrbCompletion};

fn config1() -> Vec<u8> {
    ConfigBuilder::new(1, 0, 0x20, 100)
        .interface(0, 0, (0xff, 0, 0), 2, 0)
        .endpoint(0x81, BULK, 64, 0)
        .endpoint(0x02, BULK, 64, 0)
        .interface(0, 1, (0xff, 0, 0), 1, 0)
        .endpoint(0x83, INTERRUPT, 8, 1)
        .interface(1, 0, (0x01, 2, 0), 1, 0)
        .endpoint(0x84, ISOCHRONOUS, 192, 1)
        .build()
}

fn config2() -> Vec<u8> {
    ConfigBuilder::new(2, 0, 0, 100)
        .interface(0, 0, (0x08, 0x06, 0x50), 1, 0)
        .endpoint(0x85, BULK, 512, 0)
        .build()
}

fn info() -> HostDeviceInfo {
    HostDeviceInfo {
        busid: "1-2.3".into(),
        busnum: 1,
        devnum: 7,
        path: "/sys/devices/pci0000:00/0000:00:14.0/usb1/1-2/1-2.3".into(),
        speed: Speed::High,
        vendor_id: 0x1234,
        product_id: 0x5678,
        device_version: 0x0100,
        class: 0,
        subclass: 0,
        protocol: 0,
        manufacturer: Some("Maker".into()),
        product: Some("Gadget".into()),
        serial: Some("42".into()),
        configuration_value: 1,
        num_configurations: 2,
        configurations: vec![config1(), config2()],
        interfaces: vec![
            InterfaceRecord {
                class: 0xff,
                subclass: 0,
                protocol: 0,
            },
            InterfaceRecord {
                class: 1,
                subclass: 2,
                protocol: 0,
            },
        ],
    }
}

fn setup() -> (Double, HostDevice) {
    let double = Double::new(info(), vec![config1(), config2()], 1);
    let device = HostDevice::new(std::sync::Arc::new(double.clone()), info());
    (double, device)
}

/// Waits until `cond` holds (the endpoint tasks run when the test yields).
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..400 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("timed out waiting for {what}");
}

fn in_done(data: &[u8]) -> TransferDone {
    TransferDone {
        data: Bytes::copy_from_slice(data),
        actual_length: data.len(),
        status: Ok(()),
    }
}

fn out_done(len: usize) -> TransferDone {
    TransferDone {
        data: Bytes::new(),
        actual_length: len,
        status: Ok(()),
    }
}

fn control_urb(host: &mut TestHost, setup: SetupPacket, data: &[u8]) -> crate::device::Urb {
    let mut urb = host.urb(if setup.is_in() { 0x80 } else { 0 }, 0, data);
    urb.transfer_length = if setup.is_in() {
        u32::from(setup.length)
    } else {
        data.len() as u32
    };
    urb.setup = setup.to_bytes();
    urb
}

/// Submits a URB built by [`TestHost::urb`]; returns its seqnum.
fn send(host: &mut TestHost, endpoint_address: u8, length: u32, data: &[u8]) -> u32 {
    let urb = host.urb(endpoint_address, length, data);
    host.submit(urb)
}

async fn expect(host: &mut TestHost, seqnum: u32) -> UrbCompletion {
    let c = host.next().await.expect("a completion");
    assert_eq!(c.seqnum, seqnum, "completions out of order: {c:?}");
    c
}

#[tokio::test]
async fn describes_the_device_with_linux_codes() {
    let (_, device) = setup();
    let d = device.describe();
    assert_eq!(d.record.busid, "1-2.3");
    assert_eq!(d.record.devid(), (1 << 16) | 7);
    assert_eq!(d.record.speed as u32, 3);
    assert_eq!((d.record.id_vendor, d.record.id_product), (0x1234, 0x5678));
    assert_eq!(d.record.num_configurations, 2);
    assert_eq!(d.record.configuration_value, 1);
    assert_eq!(d.record.num_interfaces, 2);
    assert_eq!(d.interfaces[1].class, 1);
    // The names stay visible once the device is shared (they come from the enumeration).
    let names = device.names();
    assert_eq!(names.manufacturer.as_deref(), Some("Maker"));
    assert_eq!(names.product.as_deref(), Some("Gadget"));
    assert_eq!(names.serial.as_deref(), Some("42"));
}

#[tokio::test]
async fn open_claims_and_opens_the_queues_of_the_current_settings() {
    let (double, device) = setup();
    let host = TestHost::open(&device).expect("open");
    assert_eq!(double.calls()[..2], ["open", "claim"]);
    let mut open: Vec<u8> = double.state().open.iter().map(|(a, _)| *a).collect();
    open.sort();
    // Alt 1's interrupt endpoint is not current; the isochronous one has no queue.
    assert_eq!(open, [0x02, 0x81]);
    drop(host);
    until("release", || {
        double.calls().contains(&"release".to_string())
    })
    .await;
    until("queues closed", || double.state().open.is_empty()).await;
}

#[tokio::test]
async fn a_device_that_cannot_be_claimed_fails_to_open_and_says_why() {
    let (double, device) = setup();
    double.state().claim_error = Some(HostError {
        kind: HostErrorKind::Busy,
        message: "interface is busy".into(),
        os_code: Some(16),
    });
    match TestHost::open(&device) {
        Err(OpenError::Failed(why)) => {
            assert!(why.contains("cannot be detached"), "{why}");
            assert!(why.contains("16"), "{why}");
        }
        Err(e) => panic!("wrong error {e}"),
        Ok(_) => panic!("opened a device it could not claim"),
    }
    assert!(double.calls().contains(&"release".to_string()));
}

#[tokio::test]
async fn bulk_in_queues_many_urbs_rounded_to_max_packet_and_completes_in_order() {
    let (double, device) = setup();
    let mut host = TestHost::open(&device).unwrap();
    let a = send(&mut host, 0x81, 100, &[]);
    let b = send(&mut host, 0x81, 64, &[]);
    let c = send(&mut host, 0x81, 0, &[]);
    until("three transfers queued", || double.pending(0x81).len() == 3).await;
    assert_eq!(
        double.pending(0x81),
        [
            TransferRequest::In { length: 128 },
            TransferRequest::In { length: 64 },
            TransferRequest::In { length: 64 },
        ]
    );
    double.finish(0x81, in_done(&[1; 100]));
    double.finish(0x81, in_done(&[2; 10]));
    double.finish(0x81, in_done(&[]));
    let ca = expect(&mut host, a).await;
    assert_eq!((ca.status, ca.actual_length, ca.data.len()), (0, 100, 100));
    let cb = expect(&mut host, b).await;
    assert_eq!((cb.status, &cb.data[..]), (0, &[2u8; 10][..]));
    let cc = expect(&mut host, c).await;
    assert_eq!((cc.status, cc.actual_length), (0, 0));
}

#[tokio::test]
async fn more_data_than_asked_is_an_overflow_and_short_not_ok_is_honoured() {
    let (double, device) = setup();
    let mut host = TestHost::open(&device).unwrap();
    let a = send(&mut host, 0x81, 10, &[]);
    let mut strict = host.urb(0x81, 64, &[]);
    strict.transfer_flags |= transfer_flags::URB_SHORT_NOT_OK;
    let b = host.submit(strict);
    until("queued", || double.pending(0x81).len() == 2).await;
    double.finish(0x81, in_done(&[7; 64]));
    double.finish(0x81, in_done(&[8; 5]));
    let ca = expect(&mut host, a).await;
    assert_eq!(
        (ca.status, ca.actual_length, ca.data.len()),
        (errno::EOVERFLOW, 10, 10)
    );
    let cb = expect(&mut host, b).await;
    assert_eq!((cb.status, cb.actual_length), (errno::EREMOTEIO, 5));
}

#[tokio::test]
async fn transfer_errors_become_linux_statuses() {
    let (double, device) = setup();
    let mut host = TestHost::open(&device).unwrap();
    let a = send(&mut host, 0x81, 64, &[]);
    let b = send(&mut host, 0x02, 0, &[1, 2, 3]);
    until("queued", || {
        double.pending(0x81).len() == 1 && double.pending(0x02).len() == 1
    })
    .await;
    double.finish(
        0x81,
        TransferDone {
            data: Bytes::new(),
            actual_length: 0,
            status: Err(XferError::Stall),
        },
    );
    assert_eq!(expect(&mut host, a).await.status, errno::EPIPE);
    double.finish(
        0x02,
        TransferDone {
            data: Bytes::new(),
            actual_length: 0,
            status: Err(XferError::Disconnected),
        },
    );
    assert_eq!(expect(&mut host, b).await.status, errno::ESHUTDOWN);
}

#[tokio::test]
async fn zero_packet_flag_sends_a_trailing_zlp_and_completes_after_it() {
    let (double, device) = setup();
    let mut host = TestHost::open(&device).unwrap();
    let mut urb = host.urb(0x02, 0, &[5; 128]);
    urb.transfer_flags |= transfer_flags::URB_ZERO_PACKET;
    let a = host.submit(urb);
    until("data and zlp queued", || double.pending(0x02).len() == 2).await;
    assert_eq!(
        double.pending(0x02)[1],
        TransferRequest::Out { data: Bytes::new() }
    );
    double.finish(0x02, out_done(128));
    assert!(
        host.idle_for(50).await,
        "completed before its zero-length packet"
    );
    double.finish(0x02, out_done(0));
    let c = expect(&mut host, a).await;
    assert_eq!((c.status, c.actual_length), (0, 128));
}

#[tokio::test]
async fn unlinking_one_urb_resubmits_the_innocent_in_order() {
    let (double, device) = setup();
    let mut host = TestHost::open(&device).unwrap();
    let a = send(&mut host, 0x81, 64, &[]);
    let b = send(&mut host, 0x81, 128, &[]);
    let c = send(&mut host, 0x81, 192, &[]);
    until("queued", || double.pending(0x81).len() == 3).await;
    host.session.cancel(b);
    let d = send(&mut host, 0x81, 256, &[]);
    until("innocents back on the queue", || {
        double.pending(0x81)
            == [
                TransferRequest::In { length: 64 },
                TransferRequest::In { length: 192 },
                TransferRequest::In { length: 256 },
            ]
    })
    .await;
    let q = double.queue(0x81);
    assert_eq!(q.lock().unwrap().cancel_alls, 1);
    assert!(host.idle_for(30).await, "a cancelled transfer was reported");
    double.finish(0x81, in_done(&[1]));
    double.finish(0x81, in_done(&[3]));
    double.finish(0x81, in_done(&[4]));
    assert_eq!(expect(&mut host, a).await.data, Bytes::from_static(&[1]));
    assert_eq!(expect(&mut host, c).await.data, Bytes::from_static(&[3]));
    assert_eq!(expect(&mut host, d).await.data, Bytes::from_static(&[4]));
    assert!(host.idle_for(30).await, "the unlinked URB completed");
}

#[tokio::test]
async fn an_innocent_transfer_caught_midway_reports_what_it_moved() {
    let (double, device) = setup();
    let mut host = TestHost::open(&device).unwrap();
    let a = send(&mut host, 0x81, 128, &[]);
    let b = send(&mut host, 0x81, 64, &[]);
    until("queued", || double.pending(0x81).len() == 2).await;
    double.queue(0x81).lock().unwrap().head_progress = 64;
    host.session.cancel(b);
    // A had moved data, so it cannot be run again: the client gets what arrived, as Linux
    // reports a URB cut short.
    let ca = expect(&mut host, a).await;
    assert_eq!((ca.status, ca.actual_length), (errno::ECONNRESET, 64));
    until("queue empty", || double.pending(0x81).is_empty()).await;
    assert!(host.idle_for(30).await);
}

#[tokio::test]
async fn clear_halt_pauses_the_queue_clears_and_resumes() {
    let (double, device) = setup();
    let mut host = TestHost::open(&device).unwrap();
    let a = send(&mut host, 0x81, 64, &[]);
    until("queued", || double.pending(0x81).len() == 1).await;
    let clear = SetupPacket {
        request_type: 0x02,
        request: 0x01,
        value: 0,
        index: 0x81,
        length: 0,
    };
    let c = host
        .control(clear, &[])
        .await
        .expect("clear halt completes");
    assert_eq!(c.status, 0);
    let calls = double.calls();
    assert!(calls.contains(&"clear_halt 81".to_string()), "{calls:?}");
    assert!(!calls.iter().any(|c| c.starts_with("control")), "{calls:?}");
    until("the pending URB is back", || {
        double.pending(0x81).len() == 1
    })
    .await;
    double.finish(0x81, in_done(&[9]));
    assert_eq!(expect(&mut host, a).await.data, Bytes::from_static(&[9]));
}

#[tokio::test]
async fn control_transfers_pass_through_with_remote_wakeup_cleared() {
    let (double, device) = setup();
    let config = config1();
    double.state().control = Box::new(move |setup, data| match setup.request {
        0x06 => Ok(config[..usize::from(setup.length).min(config.len())].to_vec()),
        0x20 => {
            assert_eq!(data, [1, 2, 3]);
            Ok(Vec::new())
        }
        _ => Err(XferError::Stall),
    });
    let mut host = TestHost::open(&device).unwrap();
    let c = host.get_descriptor(2, 0, 9).await.unwrap();
    assert_eq!((c.status, c.data.len()), (0, 9));
    assert_eq!(c.data[7] & 0x20, 0, "remote wakeup still set");
    assert_eq!(c.data[7] & 0x80, 0x80);

    let class_out = SetupPacket {
        request_type: 0x21,
        request: 0x20,
        value: 0,
        index: 0,
        length: 3,
    };
    let c = host.control(class_out, &[1, 2, 3]).await.unwrap();
    assert_eq!((c.status, c.actual_length), (0, 3));

    let vendor = SetupPacket {
        request_type: 0xc0,
        request: 0x33,
        value: 0,
        index: 0,
        length: 4,
    };
    assert_eq!(
        host.control(vendor, &[]).await.unwrap().status,
        errno::EPIPE
    );

    // A device answering more than the client's buffer holds.
    let mut urb = control_urb(
        &mut host,
        SetupPacket {
            request_type: 0x80,
            request: 0x06,
            value: 0x0200,
            index: 0,
            length: 64,
        },
        &[],
    );
    urb.transfer_length = 9;
    let seq = host.submit(urb);
    let c = expect(&mut host, seq).await;
    assert_eq!((c.status, c.data.len()), (errno::EOVERFLOW, 9));
}

#[tokio::test]
async fn an_unlinked_control_urb_that_waits_never_reaches_the_device() {
    let (double, device) = setup();
    let (release_tx, release_rx) = std_mpsc::channel::<()>();
    let release_rx = std::sync::Mutex::new(release_rx);
    double.state().control = Box::new(move |setup, _| {
        if setup.request == 0x01 {
            let _ = release_rx
                .lock()
                .unwrap()
                .recv_timeout(Duration::from_secs(5));
        }
        Ok(Vec::new())
    });
    let mut host = TestHost::open(&device).unwrap();
    let slow = SetupPacket {
        request_type: 0x40,
        request: 0x01,
        value: 0,
        index: 0,
        length: 0,
    };
    let second = SetupPacket {
        request: 0x02,
        ..slow
    };
    let a = {
        let urb = control_urb(&mut host, slow, &[]);
        host.submit(urb)
    };
    until("first control in progress", || {
        double
            .calls()
            .iter()
            .any(|c| c.starts_with("control 40 01"))
    })
    .await;
    let b = {
        let urb = control_urb(&mut host, second, &[]);
        host.submit(urb)
    };
    host.session.cancel(b);
    release_tx.send(()).unwrap();
    expect(&mut host, a).await;
    assert!(
        host.idle_for(100).await,
        "the unlinked control URB completed"
    );
    assert!(!double
        .calls()
        .iter()
        .any(|c| c.starts_with("control 40 02")));
}

#[tokio::test]
async fn set_configuration_to_the_active_one_leaves_the_device_alone() {
    let (double, device) = setup();
    let mut host = TestHost::open(&device).unwrap();
    assert_eq!(host.set_configuration(1).await.unwrap().status, 0);
    assert_eq!(double.calls(), ["open", "claim"]);
}

#[tokio::test]
async fn set_configuration_switches_through_the_host_and_reclaims() {
    let (double, device) = setup();
    let mut host = TestHost::open(&device).unwrap();
    let old = send(&mut host, 0x81, 64, &[]);
    until("queued", || double.pending(0x81).len() == 1).await;
    let set_configuration = SetupPacket {
        request_type: 0x00,
        request: 0x09,
        value: 2,
        index: 0,
        length: 0,
    };
    let set = {
        let urb = control_urb(&mut host, set_configuration, &[]);
        host.submit(urb)
    };
    // The URB of the endpoint that went away ends as Linux ends them, before the request.
    assert_eq!(expect(&mut host, old).await.status, errno::ESHUTDOWN);
    assert_eq!(expect(&mut host, set).await.status, 0);
    let calls = double.calls();
    let pos = |s: &str| calls.iter().position(|c| c == s).unwrap_or(usize::MAX);
    assert!(pos("close 81") < pos("release"), "{calls:?}");
    assert!(pos("release") < pos("set_configuration 2"), "{calls:?}");
    assert!(pos("set_configuration 2") < calls.iter().rposition(|c| c == "claim").unwrap());
    let open: Vec<u8> = double.state().open.iter().map(|(a, _)| *a).collect();
    assert_eq!(open, [0x85]);
    let stale = send(&mut host, 0x81, 64, &[]);
    assert_eq!(expect(&mut host, stale).await.status, errno::ESHUTDOWN);
    // Unknown configurations stall without touching the device.
    assert_eq!(
        host.set_configuration(9).await.unwrap().status,
        errno::EPIPE
    );
}

#[tokio::test]
async fn set_interface_closes_the_old_queues_first_and_opens_the_new() {
    let (double, device) = setup();
    let mut host = TestHost::open(&device).unwrap();
    let set = |alt: u16| SetupPacket {
        request_type: 0x01,
        request: 0x0b,
        value: alt,
        index: 0,
        length: 0,
    };
    assert_eq!(host.control(set(1), &[]).await.unwrap().status, 0);
    let calls = double.calls();
    assert!(
        calls.contains(&"set_alt_setting 0 1".to_string()),
        "{calls:?}"
    );
    assert!(!calls.iter().any(|c| c.starts_with("REFUSED")), "{calls:?}");
    let open: Vec<u8> = double.state().open.iter().map(|(a, _)| *a).collect();
    assert_eq!(open, [0x83]);
    let stale = send(&mut host, 0x81, 64, &[]);
    assert_eq!(expect(&mut host, stale).await.status, errno::ESHUTDOWN);
    let int = send(&mut host, 0x83, 8, &[]);
    until("interrupt queued", || double.pending(0x83).len() == 1).await;
    double.finish(0x83, in_done(&[1, 2]));
    assert_eq!(expect(&mut host, int).await.actual_length, 2);
    // No such alternate setting: a stall, and the host is not asked.
    assert_eq!(
        host.control(set(7), &[]).await.unwrap().status,
        errno::EPIPE
    );
    assert!(!double.calls().contains(&"set_alt_setting 0 7".to_string()));
}

/// An isochronous URB of `packets` packets of 192 bytes on endpoint 0x84.
fn iso_urb(host: &mut TestHost, packets: u32) -> crate::device::Urb {
    let mut urb = host.urb(0x84, 192 * packets, &[]);
    urb.iso = (0..packets)
        .map(|i| IsoPacket {
            offset: 192 * i,
            length: 192,
            actual_length: 0,
            status: 0,
        })
        .collect();
    urb
}

/// Every packet of a failed isochronous URB keeps its descriptor with the URB's status (vhci-hcd
/// takes `number_of_packets` from the RET_SUBMIT).
fn assert_failed_per_packet(c: &UrbCompletion, status: i32, packets: u32) {
    assert_eq!(c.status, status);
    assert_eq!(c.actual_length, 0);
    assert_eq!(c.error_count, packets);
    assert_eq!(c.iso.len(), packets as usize, "one descriptor per packet");
    for (i, p) in c.iso.iter().enumerate() {
        assert_eq!((p.offset, p.length), (192 * i as u32, 192));
        assert_eq!((p.actual_length, p.status), (0, status));
    }
}

#[tokio::test]
async fn isochronous_urbs_fail_at_once_with_enosys_and_every_packet_descriptor() {
    let (_, device) = setup();
    let mut host = TestHost::open(&device).unwrap();
    let urb = iso_urb(&mut host, 3);
    let a = host.submit(urb);
    assert_failed_per_packet(&expect(&mut host, a).await, errno::ENOSYS, 3);
}

#[tokio::test]
async fn isochronous_urb_on_a_disabled_endpoint_keeps_its_packet_descriptors() {
    let (_, device) = setup();
    let mut host = TestHost::open(&device).unwrap();
    // Configuration 2 has no endpoint 0x84.
    let set_config = SetupPacket {
        request_type: 0x00,
        request: 0x09,
        value: 2,
        index: 0,
        length: 0,
    };
    assert_eq!(host.control(set_config, &[]).await.unwrap().status, 0);
    let urb = iso_urb(&mut host, 2);
    let a = host.submit(urb);
    assert_failed_per_packet(&expect(&mut host, a).await, errno::ESHUTDOWN, 2);
}

#[tokio::test]
async fn set_address_never_reaches_the_device_and_port_reset_resets_it() {
    let (double, device) = setup();
    let mut host = TestHost::open(&device).unwrap();
    let set_address = SetupPacket {
        request_type: 0x00,
        request: 0x05,
        value: 3,
        index: 0,
        length: 0,
    };
    assert_eq!(host.control(set_address, &[]).await.unwrap().status, 0);
    let port_reset = SetupPacket {
        request_type: 0x23,
        request: 0x03,
        value: 4,
        index: 1,
        length: 0,
    };
    assert_eq!(host.control(port_reset, &[]).await.unwrap().status, 0);
    let calls = double.calls();
    assert!(!calls.iter().any(|c| c.starts_with("control")), "{calls:?}");
    let tail: Vec<&str> = calls
        .iter()
        .map(String::as_str)
        .filter(|c| ["release", "reset", "claim"].contains(c))
        .collect();
    assert_eq!(tail, ["claim", "release", "reset", "claim"]);
    let open: Vec<u8> = double.state().open.iter().map(|(a, _)| *a).collect();
    assert_eq!(open.len(), 2, "queues reopened after reset: {open:?}");
}
