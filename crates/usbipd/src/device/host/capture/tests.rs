//! The capture sequence against a bus double that behaves as macOS does: a driver's hold on a
//! device cannot be broken by claiming; a capture re-enumerates the device (it is gone for a
//! few opens, then back with no driver), one process at a time may have it open, and a
//! release re-enumerates it back to its driver.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::*;
use crate::device::host::double::sample_info;

const BUSID: &str = "14-2";

#[derive(Default)]
struct BusState {
    log: Vec<String>,
    /// A kernel driver holds the device (until it is captured).
    driver: bool,
    captured: bool,
    /// Opens that fail (the device is re-enumerating) before it is back.
    returning: u32,
    /// Handles open now.
    open: usize,
    /// The capture is refused with this.
    capture_error: Option<HostError>,
    /// Claims are refused for lack of permission.
    claim_denied: bool,
}

#[derive(Clone, Default)]
struct Bus(Arc<Mutex<BusState>>);

impl Bus {
    fn held_by_driver() -> Bus {
        let bus = Bus::default();
        bus.state().driver = true;
        bus
    }

    fn state(&self) -> MutexGuard<'_, BusState> {
        self.0.lock().unwrap()
    }

    fn log(&self) -> Vec<String> {
        self.state().log.clone()
    }

    fn backend(&self, settle: Duration) -> CapturingBackend {
        CapturingBackend::with_settle(Arc::new(self.clone()), Arc::new(self.clone()), settle)
    }
}

impl HostBackend for Bus {
    fn list(&self) -> Result<Vec<HostDeviceInfo>, HostError> {
        Ok(vec![sample_info(BUSID, 0x1234, 0x5678)])
    }

    fn open(&self, busid: &str) -> Result<Box<dyn HostDeviceOps>, ClaimError> {
        let mut s = self.state();
        if s.returning > 0 {
            s.returning -= 1;
            s.log.push("open: gone".into());
            let gone = HostError::new(HostErrorKind::NotFound, "no such device");
            return Err(ClaimError::new(busid, None, gone));
        }
        s.log.push("open".into());
        s.open += 1;
        Ok(Box::new(Handle {
            bus: self.clone(),
            claimed: false,
        }))
    }
}

impl Capturer for Bus {
    fn capture(&self, _busid: &str) -> Result<(), HostError> {
        let mut s = self.state();
        // IOKit re-enumerates only a device nobody else has open.
        assert_eq!(s.open, 0, "captured while a handle was open");
        if let Some(e) = s.capture_error.clone() {
            s.log.push("capture: refused".into());
            return Err(e);
        }
        s.log.push("capture".into());
        s.driver = false;
        s.captured = true;
        s.returning = 3;
        Ok(())
    }

    fn give_back(&self, _busid: &str) -> Result<(), HostError> {
        let mut s = self.state();
        assert_eq!(s.open, 0, "given back while a handle was open");
        s.log.push("give back".into());
        s.captured = false;
        s.driver = true;
        Ok(())
    }

    fn reset(&self, _busid: &str) -> Result<(), HostError> {
        let mut s = self.state();
        assert_eq!(s.open, 0, "reset while a handle was open");
        assert!(s.captured, "a capturer reset only of a captured device");
        s.log.push("captured reset".into());
        s.returning = 1;
        Ok(())
    }
}

struct Handle {
    bus: Bus,
    claimed: bool,
}

impl Drop for Handle {
    fn drop(&mut self) {
        let mut s = self.bus.state();
        s.open -= 1;
        s.log.push("close".into());
    }
}

impl HostDeviceOps for Handle {
    fn active_configuration(&self) -> u8 {
        1
    }

    fn configuration_descriptor(&self, _value: u8) -> Option<Vec<u8>> {
        None
    }

    fn claim_interfaces(&mut self) -> Result<(), ClaimError> {
        let mut s = self.bus.state();
        if s.claim_denied {
            s.log.push("claim: denied".into());
            let denied = HostError::new(HostErrorKind::PermissionDenied, "denied");
            return Err(ClaimError::new(BUSID, Some(0), denied));
        }
        if s.driver {
            s.log.push("claim: held".into());
            let busy = HostError {
                kind: HostErrorKind::Busy,
                message: "exclusive access".into(),
                os_code: Some(0xe000_02c5),
            };
            return Err(ClaimError::new(BUSID, Some(0), busy));
        }
        s.log.push("claim".into());
        self.claimed = true;
        Ok(())
    }

    fn release_interfaces(&mut self) {
        if self.claimed {
            self.bus.state().log.push("release interfaces".into());
            self.claimed = false;
        }
    }

    fn open_endpoint(&mut self, _: &EndpointDesc) -> Result<Box<dyn EndpointQueue>, HostError> {
        Err(HostError::new(HostErrorKind::Unsupported, "no endpoints"))
    }

    fn control(&mut self, _: &SetupPacket, _: &[u8]) -> Result<Vec<u8>, XferError> {
        Ok(vec![1])
    }

    fn set_configuration(&mut self, _: u8) -> Result<(), HostError> {
        Ok(())
    }

    fn set_alt_setting(&mut self, _: u8, _: u8) -> Result<(), HostError> {
        Ok(())
    }

    fn reset(&mut self) -> Result<(), HostError> {
        // IOKit's only reset re-enumerates the device without a capture.
        let mut s = self.bus.state();
        s.log.push("plain reset".into());
        if s.captured {
            s.captured = false;
            s.driver = true;
        }
        Ok(())
    }

    fn attach_kernel_drivers(&mut self) -> Result<(), HostError> {
        self.bus.state().log.push("attach".into());
        Ok(())
    }
}

const SETTLE: Duration = Duration::from_secs(5);

#[test]
fn a_device_no_driver_holds_is_claimed_without_a_capture() {
    let bus = Bus::default();
    let mut ops = bus.backend(SETTLE).open(BUSID).unwrap();
    ops.claim_interfaces().unwrap();
    drop(ops);
    assert_eq!(bus.log(), ["open", "claim", "close"]);
}

#[test]
fn a_capture_left_by_a_crashed_extension_is_freed_at_unbind() {
    // Captured by a process that died: no driver, no capture of ours.
    let bus = Bus::default();
    bus.state().captured = true;
    let mut ops = bus.backend(SETTLE).open(BUSID).unwrap();
    ops.claim_interfaces().unwrap();
    ops.attach_kernel_drivers().unwrap();
    assert!(!bus.state().captured);
    assert!(bus.state().driver);
    drop(ops);
    assert_eq!(
        bus.log(),
        ["open", "claim", "release interfaces", "close", "give back"]
    );
}

#[test]
fn a_driver_held_device_is_captured_reopened_when_back_and_claimed() {
    let bus = Bus::held_by_driver();
    let mut ops = bus.backend(SETTLE).open(BUSID).unwrap();
    ops.claim_interfaces().unwrap();
    assert!(bus.state().captured);
    assert_eq!(bus.state().open, 1);
    assert_eq!(
        bus.log(),
        [
            "open",
            "claim: held",
            "close", // closed before the capture
            "capture",
            "open: gone", // re-enumerating
            "open: gone",
            "open: gone",
            "open",
            "claim",
        ]
    );
    // The new handle is the one in use.
    assert_eq!(
        ops.control(&SetupPacket::parse(&[0x80, 6, 0, 1, 0, 0, 1, 0]), &[]),
        Ok(vec![1])
    );
}

#[test]
fn giving_the_device_back_closes_it_then_ends_the_capture() {
    let bus = Bus::held_by_driver();
    let mut ops = bus.backend(SETTLE).open(BUSID).unwrap();
    ops.claim_interfaces().unwrap();
    bus.state().log.clear();

    // Around a configuration change: the capture stays.
    ops.release_interfaces();
    assert!(bus.state().captured);

    ops.attach_kernel_drivers().unwrap();
    assert!(!bus.state().captured);
    assert!(bus.state().driver, "the driver has its device back");
    assert_eq!(bus.log(), ["release interfaces", "close", "give back"]);
    drop(ops);
    assert_eq!(bus.log().len(), 3, "nothing more on close: {:?}", bus.log());
}

#[test]
fn closing_a_captured_device_ends_the_capture() {
    let bus = Bus::held_by_driver();
    let mut ops = bus.backend(SETTLE).open(BUSID).unwrap();
    ops.claim_interfaces().unwrap();
    drop(ops);
    assert!(!bus.state().captured);
    assert!(bus.log().ends_with(&["close".into(), "give back".into()]));
}

#[test]
fn a_refused_capture_says_why_with_the_os_code_and_leaves_the_driver_alone() {
    let bus = Bus::held_by_driver();
    bus.state().capture_error = Some(HostError {
        kind: HostErrorKind::PermissionDenied,
        message: "capture needs root".into(),
        os_code: Some(0xe000_02c1), // kIOReturnNotPrivileged
    });
    let mut ops = bus.backend(SETTLE).open(BUSID).unwrap();
    let e = ops.claim_interfaces().unwrap_err();
    assert_eq!(e.reason, ClaimReason::PermissionDenied);
    assert_eq!(e.error.os_code, Some(0xe000_02c1));
    assert!(bus.state().driver);
    // The device is closed; using it says so instead of touching a stale handle.
    assert_eq!(
        ops.set_configuration(1).unwrap_err().kind,
        HostErrorKind::Disconnected
    );
    drop(ops);
    assert_eq!(
        bus.log(),
        ["open", "claim: held", "close", "capture: refused"]
    );
}

#[test]
fn a_device_that_does_not_come_back_in_time_is_given_back_to_its_driver() {
    let bus = Bus::held_by_driver();
    let slow = CapturingBackend::with_settle(
        Arc::new(bus.clone()),
        Arc::new(SlowReturn(bus.clone())),
        Duration::from_millis(30),
    );
    let mut ops = slow.open(BUSID).unwrap();
    let e = ops.claim_interfaces().unwrap_err();
    assert_eq!(e.reason, ClaimReason::Gone);
    assert!(!bus.state().captured);
    assert!(bus.state().driver);
    assert_eq!(bus.log().last().map(String::as_str), Some("give back"));
}

/// A capture after which the device stays away for a long time.
struct SlowReturn(Bus);

impl Capturer for SlowReturn {
    fn capture(&self, busid: &str) -> Result<(), HostError> {
        self.0.capture(busid)?;
        self.0.state().returning = u32::MAX;
        Ok(())
    }

    fn give_back(&self, busid: &str) -> Result<(), HostError> {
        self.0.give_back(busid)
    }

    fn reset(&self, busid: &str) -> Result<(), HostError> {
        self.0.reset(busid)
    }
}

#[test]
fn another_failure_than_a_driver_hold_is_not_a_reason_to_capture() {
    let bus = Bus::default();
    bus.state().claim_denied = true;
    let mut ops = bus.backend(SETTLE).open(BUSID).unwrap();
    let e = ops.claim_interfaces().unwrap_err();
    assert_eq!(e.reason, ClaimReason::PermissionDenied);
    assert_eq!(bus.log(), ["open", "claim: denied"]);
}

#[test]
fn a_captured_device_is_reset_without_losing_the_capture() {
    let bus = Bus::held_by_driver();
    let mut ops = bus.backend(SETTLE).open(BUSID).unwrap();
    ops.claim_interfaces().unwrap();
    ops.release_interfaces();
    bus.state().log.clear();

    ops.reset().unwrap();
    assert!(bus.state().captured);
    assert!(!bus.state().driver);
    assert_eq!(
        bus.log(),
        ["close", "captured reset", "open: gone", "open"],
        "closed, reset through the capturer, reopened when back"
    );
    // The session claims again after a reset.
    ops.claim_interfaces().unwrap();

    // An uncaptured device gets the plain reset.
    let free = Bus::default();
    let mut ops = free.backend(SETTLE).open(BUSID).unwrap();
    ops.reset().unwrap();
    assert_eq!(free.log(), ["open", "plain reset"]);
}

#[test]
fn the_hotplug_events_of_our_own_re_enumerations_are_recognised_for_a_while() {
    let bus = Bus::held_by_driver();
    let backend = bus.backend(SETTLE);
    let own = backend.own_reenumerations();
    assert!(!own.explains(BUSID));
    let mut ops = backend.open(BUSID).unwrap();
    ops.claim_interfaces().unwrap();
    assert!(own.explains(BUSID), "just captured");
    assert!(!own.explains("14-3"), "only that device");

    // Just ended: explained for the grace period (long here, so that no pause of a loaded
    // machine between the two calls can outlast it).
    let own = OwnReenumerations::new(Duration::from_secs(30));
    own.begin(BUSID);
    own.end(BUSID);
    assert!(own.explains(BUSID));

    let own = OwnReenumerations::new(Duration::from_millis(20));
    own.begin(BUSID);
    std::thread::sleep(Duration::from_millis(40));
    assert!(own.explains(BUSID), "in progress, however long");
    own.end(BUSID);
    std::thread::sleep(Duration::from_millis(40));
    assert!(
        !own.explains(BUSID),
        "an unplug after the grace period is an unplug"
    );
}
