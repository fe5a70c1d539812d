//! The host-bus adapter against the host backend's double and a sysfs tree in a temp dir:
//! listing with drivers, a claim kept across sessions, release, error codes, hotplug.

use std::os::unix::fs::symlink;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use usbip_proto::{InterfaceRecord, Speed};

use super::*;
use crate::device::host::backend::TransferDone;
use crate::device::host::double::Double;
use crate::device::host::errors::XferError;
use crate::device::host::{HostError, HostErrorKind};
use crate::device::r#virtual::descriptors::transfer_type::BULK;
use crate::device::r#virtual::ConfigBuilder;
use crate::device::testing::TestHost;
use crate::device::SetupPacket;

fn config() -> Vec<u8> {
    ConfigBuilder::new(1, 0, 0x80, 100)
        .interface(0, 0, (0xff, 0, 0), 2, 0)
        .endpoint(0x81, BULK, 64, 0)
        .endpoint(0x02, BULK, 64, 0)
        .interface(0, 1, (0xff, 0, 0), 0, 0)
        .build()
}

fn info() -> HostDeviceInfo {
    HostDeviceInfo {
        busid: "1-2.3".into(),
        busnum: 1,
        devnum: 7,
        path: "/nonexistent/usb1/1-2/1-2.3".into(),
        speed: Speed::High,
        vendor_id: 0x1234,
        product_id: 0x5678,
        device_version: 0x0100,
        class: 0,
        subclass: 0,
        protocol: 0,
        manufacturer: None,
        product: None,
        serial: Some("42".into()),
        configuration_value: 1,
        num_configurations: 1,
        configurations: vec![config()],
        interfaces: vec![InterfaceRecord {
            class: 0xff,
            subclass: 0,
            protocol: 0,
        }],
    }
}

/// `/sys/bus/usb/devices` with the interfaces' driver links.
fn sysfs(root: &Path, links: &[(&str, &str)]) {
    for (interface, driver) in links {
        let dir = root.join(interface);
        std::fs::create_dir_all(&dir).unwrap();
        symlink(
            format!("../../../bus/usb/drivers/{driver}"),
            dir.join("driver"),
        )
        .unwrap();
    }
}

fn bus(sysfs_root: &Path) -> (Double, Arc<UsbHostBus>) {
    let double = Double::new(info(), vec![config()], 1);
    let bus = UsbHostBus::new(
        Arc::new(double.clone()),
        Some(sysfs_root.to_path_buf()),
        "usbfs",
    );
    (double, bus)
}

fn count(double: &Double, call: &str) -> usize {
    double.calls().iter().filter(|c| *c == call).count()
}

async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..6000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Opens a session once the last one has given the handle back (its endpoint-0 thread ends
/// just after the session is dropped).
async fn open_when_returned(device: &dyn crate::device::Device) -> TestHost {
    for _ in 0..6000 {
        match TestHost::open(device) {
            Ok(host) => return host,
            Err(crate::device::OpenError::Busy) => {
                tokio::time::sleep(Duration::from_millis(5)).await
            }
            Err(e) => panic!("{e}"),
        }
    }
    panic!("the handle never came back");
}

#[test]
fn the_driver_comes_from_the_active_configurations_interfaces() {
    let dir = tempfile::tempdir().unwrap();
    sysfs(
        dir.path(),
        &[
            ("1-2.3:1.0", "usbfs"),
            ("1-2.3:1.1", "usbhid"),
            ("1-2.3:2.0", "cdc_acm"), // another configuration
            ("1-2.30:1.0", "btusb"),  // another device
        ],
    );
    std::fs::create_dir_all(dir.path().join("1-2.3:1.2")).unwrap(); // no driver
    let root = dir.path();
    assert_eq!(
        interface_driver(root, "1-2.3", 1).as_deref(),
        Some("usbhid")
    );
    assert_eq!(
        interface_driver(root, "1-2.3", 2).as_deref(),
        Some("cdc_acm")
    );
    assert_eq!(
        interface_driver(root, "1-2.30", 1).as_deref(),
        Some("btusb")
    );
    assert_eq!(interface_driver(root, "1-2", 1), None);
    let only_usbfs = tempfile::tempdir().unwrap();
    sysfs(only_usbfs.path(), &[("1-1:1.0", "usbfs")]);
    assert_eq!(
        interface_driver(only_usbfs.path(), "1-1", 1).as_deref(),
        Some("usbfs")
    );
}

#[test]
fn devices_are_listed_with_ids_serial_and_driver() {
    let dir = tempfile::tempdir().unwrap();
    sysfs(dir.path(), &[("1-2.3:1.0", "usbhid")]);
    let (double, bus) = bus(dir.path());
    assert_eq!(
        bus.devices(),
        vec![BusDevice {
            busid: "1-2.3".into(),
            vid: 0x1234,
            pid: 0x5678,
            serial: Some("42".into()),
            driver: Some("usbhid".into()),
        }]
    );
    assert!(double.calls().is_empty(), "listing opened the device");
}

#[tokio::test]
async fn a_claim_is_kept_across_sessions_and_released_to_the_kernel_driver() {
    let dir = tempfile::tempdir().unwrap();
    sysfs(dir.path(), &[("1-2.3:1.0", "usbhid")]);
    let (double, bus) = bus(dir.path());
    let claim = bus.claim("1-2.3").expect("claim");
    assert_eq!(double.calls(), ["open", "claim"]);
    assert_eq!(claim.detached_driver().as_deref(), Some("usbhid"));
    let device = claim.device();
    assert_eq!(device.describe().record.busid, "1-2.3");
    assert_eq!(device.describe().record.id_vendor, 0x1234);

    for round in 0..3 {
        let mut host = open_when_returned(device.as_ref()).await;
        // One session at a time: the handle is lent out.
        assert!(matches!(
            TestHost::open(device.as_ref()),
            Err(crate::device::OpenError::Busy)
        ));
        // A client switches interface 0 to alternate setting 1 ...
        let set_alt = SetupPacket {
            request_type: 0x01,
            request: 0x0b,
            value: 1,
            index: 0,
            length: 0,
        };
        assert_eq!(host.control(set_alt, &[]).await.unwrap().status, 0);
        drop(host);
        // ... and when it goes, the setting goes back to 0; nothing is released.
        until("alt setting reset", || {
            count(&double, "set_alt_setting 0 0") == round + 1
        })
        .await;
        until("queues closed", || double.state().open.is_empty()).await;
    }
    assert_eq!(count(&double, "open"), 1, "{:?}", double.calls());
    assert_eq!(count(&double, "claim"), 1, "{:?}", double.calls());
    assert_eq!(count(&double, "release"), 0, "{:?}", double.calls());
    assert_eq!(double.state().claimed, [0]);

    claim.release().expect("release");
    let calls = double.calls();
    assert_eq!(
        calls[calls.len() - 2..],
        ["release", "attach_kernel_drivers"]
    );
    assert!(double.state().claimed.is_empty());
    // Released: no more sessions on it.
    assert!(TestHost::open(device.as_ref()).is_err());
}

/// Without a hotplug source, a transfer failing with ENODEV/ESHUTDOWN is the only sign of an
/// unplug: it is reported once the device has really left the bus, and not while it is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_whose_transfers_fail_as_disconnected_reports_its_departure_once_it_left() {
    let dir = tempfile::tempdir().unwrap();
    let (double, bus) = bus(dir.path());
    let mut events = bus.subscribe();
    let claim = bus.claim("1-2.3").unwrap();
    let device = claim.device();
    let mut host = TestHost::open(device.as_ref()).unwrap();
    let get_status = SetupPacket {
        request_type: 0x80,
        request: 0x00,
        value: 0,
        index: 0,
        length: 2,
    };
    double.state().control = Box::new(|_, _| Err(XferError::Disconnected));

    // Still listed (an ESHUTDOWN of an endpoint being disabled, say): not a departure.
    let done = host.control(get_status, &[]).await.unwrap();
    assert_eq!(done.status, usbip_proto::errno::ESHUTDOWN);
    tokio::time::sleep(DEPARTURE_CHECK + Duration::from_millis(300)).await;
    assert!(events.try_recv().is_err(), "departed while still listed");
    assert!(!claim.departed());

    // Gone from the bus: a bulk transfer failing as disconnected reports it.
    double.state().gone = true;
    let urb = host.urb(0x81, 64, &[]);
    host.submit(urb);
    until("bulk IN queued", || double.pending(0x81).len() == 1).await;
    double.finish(
        0x81,
        TransferDone {
            data: Default::default(),
            actual_length: 0,
            status: Err(XferError::Disconnected),
        },
    );
    let event = tokio::time::timeout(Duration::from_secs(5), events.recv()).await;
    assert_eq!(
        event.unwrap(),
        Some(BusEvent::Departed {
            busid: "1-2.3".into()
        })
    );
    assert!(claim.departed());
    // Reported once, however many transfers fail after.
    assert_eq!(
        host.control(get_status, &[]).await.unwrap().status,
        usbip_proto::errno::ESHUTDOWN
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(events.try_recv().is_err());
}

#[tokio::test]
async fn release_waits_for_a_session_that_is_ending() {
    let dir = tempfile::tempdir().unwrap();
    let (double, bus) = bus(dir.path());
    let claim = bus.claim("1-2.3").unwrap();
    let host = TestHost::open(claim.device().as_ref()).unwrap();
    let release = tokio::task::spawn_blocking(move || claim.release());
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(count(&double, "release"), 0, "released under a session");
    drop(host);
    release.await.unwrap().expect("release after the session");
    assert_eq!(count(&double, "release"), 1);
}

#[test]
fn failures_have_stable_codes_and_the_os_error() {
    let dir = tempfile::tempdir().unwrap();
    let (double, bus) = bus(dir.path());
    let err = |r: Result<Box<dyn BusClaim>, BusError>| match r {
        Ok(_) => panic!("claimed"),
        Err(e) => e,
    };

    let e = err(bus.claim("9-9"));
    assert_eq!(e.code, ErrorCode::DeviceGone);

    double.state().open_error = Some(HostError {
        kind: HostErrorKind::PermissionDenied,
        message: "Permission denied".into(),
        os_code: Some(13),
    });
    let e = err(bus.claim("1-2.3"));
    assert_eq!(
        (e.code, e.os),
        (ErrorCode::AccessDenied, Some(OsCode::Errno(13)))
    );

    double.state().open_error = None;
    double.state().claim_error = Some(HostError {
        kind: HostErrorKind::Busy,
        message: "Device or resource busy".into(),
        os_code: Some(16),
    });
    let e = err(bus.claim("1-2.3"));
    assert_eq!(
        (e.code, e.os),
        (ErrorCode::DeviceBusy, Some(OsCode::Errno(16)))
    );
    // What was claimed before the failure went back.
    assert_eq!(double.calls().last().map(String::as_str), Some("release"));

    // Without an OS code the reason decides.
    double.state().claim_error = Some(HostError::new(HostErrorKind::Other, "odd"));
    assert_eq!(err(bus.claim("1-2.3")).code, ErrorCode::ClaimFailed);
    let gone = host::ClaimError::new(
        "1-2.3",
        None,
        HostError::new(HostErrorKind::Disconnected, "gone"),
    );
    assert_eq!(claim_error(&gone, Stage::Claim).code, ErrorCode::DeviceGone);
    let failed = host::ClaimError::new("1-2.3", Some(0), HostError::new(HostErrorKind::Other, "x"));
    assert_eq!(
        claim_error(&failed, Stage::Release).code,
        ErrorCode::ReleaseFailed
    );
}

#[test]
fn reattach_connects_the_drivers_of_a_device_nobody_holds() {
    let dir = tempfile::tempdir().unwrap();
    let (double, bus) = bus(dir.path());
    bus.reattach("1-2.3").expect("reattach");
    assert_eq!(double.calls(), ["open", "attach_kernel_drivers"]);
    assert!(double.state().claimed.is_empty());
    assert_eq!(bus.reattach("9-9").unwrap_err().code, ErrorCode::DeviceGone);
}

#[test]
fn dropping_a_claim_of_an_unplugged_device_closes_it_without_a_release() {
    let dir = tempfile::tempdir().unwrap();
    let (double, bus) = bus(dir.path());
    let claim = bus.claim("1-2.3").unwrap();
    drop(claim); // its sysfs directory does not exist: the device is gone
    assert_eq!(double.calls(), ["open", "claim"]);
}

/// The kernel's remove event comes before the device's sysfs directory goes: an unplugged claim
/// is closed even so, while a claim dropped on a stop keeps a present device's handle.
#[test]
fn an_unplugged_claim_is_closed_even_while_its_sysfs_directory_lingers() {
    let dir = tempfile::tempdir().unwrap();
    let device_dir = dir.path().join("1-2.3");
    std::fs::create_dir_all(&device_dir).unwrap();
    std::fs::write(device_dir.join("devnum"), "7\n").unwrap();
    let mut i = info();
    i.path = device_dir.to_string_lossy().into_owned();
    let double = Double::new(i, vec![config()], 1);
    let bus = UsbHostBus::new(
        Arc::new(double.clone()),
        Some(dir.path().to_path_buf()),
        "usbfs",
    );
    let handles = || Arc::strong_count(&double.state);
    let idle = handles();

    let claim = bus.claim("1-2.3").unwrap();
    assert_eq!(handles(), idle + 1);
    drop(claim); // a stop: the present device stays held until the process exits
    assert_eq!(handles(), idle + 1);

    let claim = bus.claim("1-2.3").unwrap();
    assert_eq!(handles(), idle + 2);
    claim.unplugged();
    assert_eq!(
        handles(),
        idle + 1,
        "the unplugged device's handle was kept"
    );
}

#[tokio::test]
async fn hotplug_events_reach_every_subscriber_with_busids() {
    let dir = tempfile::tempdir().unwrap();
    sysfs(dir.path(), &[("1-2.3:1.0", "usbhid")]);
    let (_, bus) = bus(dir.path());
    let mut a = bus.subscribe();
    let mut b = bus.subscribe();
    bus.hotplug(HotplugEvent::Arrived(info()));
    bus.hotplug(HotplugEvent::Left { busid: None });
    bus.hotplug(HotplugEvent::Left {
        busid: Some("1-2.3".into()),
    });
    for rx in [&mut a, &mut b] {
        match rx.recv().await {
            Some(BusEvent::Arrived(d)) => {
                assert_eq!(
                    (d.busid.as_str(), d.driver.as_deref()),
                    ("1-2.3", Some("usbhid"))
                )
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            rx.recv().await,
            Some(BusEvent::Left {
                busid: "1-2.3".into()
            })
        );
    }
    drop(b);
    bus.hotplug(HotplugEvent::Left {
        busid: Some("1-1".into()),
    });
    assert!(a.recv().await.is_some());
}

/// macOS: a device its driver holds is captured during the claim; the capture re-enumerates
/// it, and the departure the hotplug watch then reports is not taken for an unplug.
#[tokio::test]
async fn a_captured_claim_is_not_dropped_for_the_departure_its_capture_causes() {
    use crate::device::host::capture::{Capturer, CapturingBackend};
    use crate::device::host::HostError;

    struct TakesFromDriver(Double);
    impl Capturer for TakesFromDriver {
        fn capture(&self, _: &str) -> Result<(), HostError> {
            let mut s = self.0.state();
            s.calls.push("capture".into());
            s.claim_error = None;
            Ok(())
        }
        fn give_back(&self, _: &str) -> Result<(), HostError> {
            self.0.state().calls.push("give back".into());
            Ok(())
        }
        fn reset(&self, _: &str) -> Result<(), HostError> {
            Ok(())
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let double = Double::new(info(), vec![config()], 1);
    double.state().claim_error = Some(HostError {
        kind: HostErrorKind::Busy,
        message: "exclusive access".into(),
        os_code: Some(0xe000_02c5),
    });
    let backend = CapturingBackend::new(
        Arc::new(double.clone()),
        Arc::new(TakesFromDriver(double.clone())),
    );
    let own = backend.own_reenumerations();
    let bus = UsbHostBus::with_own_reenumerations(
        Arc::new(backend),
        Some(dir.path().to_path_buf()),
        "iokit",
        Some(own),
    );
    let mut events = bus.subscribe();
    let _claim = bus.claim("1-2.3").unwrap();
    assert!(
        double.calls().contains(&"capture".to_string()),
        "{:?}",
        double.calls()
    );

    bus.hotplug(HotplugEvent::Left {
        busid: Some("1-2.3".into()),
    });
    bus.hotplug(HotplugEvent::Left {
        busid: Some("1-1".into()),
    });
    // Only the other device's departure comes through.
    assert_eq!(
        events.recv().await,
        Some(BusEvent::Left {
            busid: "1-1".into()
        })
    );
}
