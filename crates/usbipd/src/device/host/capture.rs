//! Taking a whole device from the OS's drivers where detaching them from interfaces cannot:
//! macOS. There a kernel driver's hold on an interface is not detachable, but root may have the
//! device re-enumerated "captured", so that no driver matches it until the capture ends (what
//! libusb does to detach a kernel driver on macOS). Linux needs none of this: usbfs detaches
//! and claims each interface atomically.
//!
//! [`CapturingBackend`] wraps a backend. A claim that fails because a driver holds the device
//! captures it, waits for it to come back from the re-enumeration, opens it again and claims;
//! the capture ends, and the drivers get the device back, when the device is given back
//! ([`HostDeviceOps::attach_kernel_drivers`], which also frees a capture that a crashed
//! extension left) or closed. The OS calls sit behind [`Capturer`]
//! (the IOKit leaf is `platform::macos::capture`); everything here is tested on Linux with doubles.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use super::backend::{EndpointDesc, EndpointQueue, HostBackend, HostDeviceInfo, HostDeviceOps};
use super::errors::{ClaimError, ClaimReason, HostError, HostErrorKind, XferError};
use crate::device::SetupPacket;
pub use crate::platform::capturer::Capturer;

/// How long a captured device may take to come back (libusb waits as long).
pub const CAPTURE_SETTLE: Duration = Duration::from_secs(10);

/// How long after a re-enumeration of ours its hotplug events may still arrive.
pub const OWN_EVENTS_GRACE: Duration = Duration::from_secs(2);

/// The first wait between two looks for the re-enumerated device; doubled up to 200 ms.
const FIRST_POLL: Duration = Duration::from_millis(10);

/// Devices this process is re-enumerating (capture, reset, release). The device leaves and
/// comes back, and the hotplug watch reports both; those reports are ours, not an unplug, and
/// must not make the extension drop the claim it is making.
pub struct OwnReenumerations {
    /// `None`: in progress; `Some(t)`: the device was back at `t`.
    busids: Mutex<HashMap<String, Option<Instant>>>,
    grace: Duration,
}

impl OwnReenumerations {
    pub fn new(grace: Duration) -> OwnReenumerations {
        OwnReenumerations {
            busids: Mutex::new(HashMap::new()),
            grace,
        }
    }

    fn busids(&self) -> std::sync::MutexGuard<'_, HashMap<String, Option<Instant>>> {
        self.busids.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn begin(&self, busid: &str) {
        self.busids().insert(busid.to_string(), None);
    }

    fn end(&self, busid: &str) {
        self.busids()
            .insert(busid.to_string(), Some(Instant::now()));
    }

    /// Whether a hotplug event about `busid` now is explained by a re-enumeration of ours.
    pub fn explains(&self, busid: &str) -> bool {
        let mut busids = self.busids();
        busids.retain(|_, back| back.is_none_or(|t| t.elapsed() < self.grace));
        busids.contains_key(busid)
    }
}

/// A backend whose claims capture a device a driver holds.
pub struct CapturingBackend {
    inner: Arc<dyn HostBackend>,
    capturer: Arc<dyn Capturer>,
    settle: Duration,
    own: Arc<OwnReenumerations>,
}

impl CapturingBackend {
    pub fn new(inner: Arc<dyn HostBackend>, capturer: Arc<dyn Capturer>) -> CapturingBackend {
        CapturingBackend::with_settle(inner, capturer, CAPTURE_SETTLE)
    }

    /// As [`Self::new`], waiting at most `settle` for a captured device to come back.
    pub fn with_settle(
        inner: Arc<dyn HostBackend>,
        capturer: Arc<dyn Capturer>,
        settle: Duration,
    ) -> CapturingBackend {
        CapturingBackend {
            inner,
            capturer,
            settle,
            own: Arc::new(OwnReenumerations::new(OWN_EVENTS_GRACE)),
        }
    }

    /// The re-enumerations this backend makes, for the hotplug watch to recognise.
    pub fn own_reenumerations(&self) -> Arc<OwnReenumerations> {
        self.own.clone()
    }
}

impl HostBackend for CapturingBackend {
    fn list(&self) -> Result<Vec<HostDeviceInfo>, HostError> {
        self.inner.list()
    }

    fn open(&self, busid: &str) -> Result<Box<dyn HostDeviceOps>, ClaimError> {
        let ops = self.inner.open(busid)?;
        Ok(Box::new(CapturingDevice {
            busid: busid.to_string(),
            inner: self.inner.clone(),
            capturer: self.capturer.clone(),
            settle: self.settle,
            own: self.own.clone(),
            ops: Some(ops),
            captured: false,
        }))
    }
}

/// An opened device that may be captured. `ops` is closed before a capture (the OS lets one
/// process at a time open a device) and replaced by a handle of the device that comes back.
struct CapturingDevice {
    busid: String,
    inner: Arc<dyn HostBackend>,
    capturer: Arc<dyn Capturer>,
    settle: Duration,
    own: Arc<OwnReenumerations>,
    /// `None` after a capture or reset that failed: the device is closed.
    ops: Option<Box<dyn HostDeviceOps>>,
    /// This handle captured the device (and gives it back when closed).
    captured: bool,
}

fn closed() -> HostError {
    HostError::new(
        HostErrorKind::Disconnected,
        "the device is closed: a capture, reset or give-back did not reopen it",
    )
}

impl CapturingDevice {
    fn ops(&mut self) -> Result<&mut (dyn HostDeviceOps + 'static), HostError> {
        self.ops.as_deref_mut().ok_or_else(closed)
    }

    /// Closes the device, captures it (re-enumerating it), opens the device that comes back
    /// and claims its interfaces.
    fn capture_and_claim(&mut self) -> Result<(), ClaimError> {
        if let Some(mut ops) = self.ops.take() {
            ops.release_interfaces();
        }
        self.own.begin(&self.busid);
        if let Err(e) = self.capturer.capture(&self.busid) {
            self.own.end(&self.busid);
            return Err(ClaimError::new(&self.busid, None, e));
        }
        info!(busid = %self.busid, "device captured from its drivers; waiting for it to return");
        let reopened = self.reopen(true);
        self.own.end(&self.busid);
        match reopened {
            Ok(ops) => {
                self.ops = Some(ops);
                self.captured = true;
                Ok(())
            }
            Err(e) => {
                // Not usable captured: the drivers get it back rather than nobody.
                self.captured = true;
                if let Err(back) = self.give_back() {
                    warn!(busid = %self.busid, error = %back, "captured device not given back");
                }
                Err(e)
            }
        }
    }

    /// Opens the device again after a re-enumeration (and with `claim`, claims it): one still
    /// coming back refuses, so both are retried until `settle` has passed.
    fn reopen(&self, claim: bool) -> Result<Box<dyn HostDeviceOps>, ClaimError> {
        let deadline = Instant::now() + self.settle;
        let mut pause = FIRST_POLL;
        loop {
            let attempt = self.inner.open(&self.busid).and_then(|mut ops| {
                if claim {
                    if let Err(e) = ops.claim_interfaces() {
                        ops.release_interfaces();
                        return Err(e);
                    }
                }
                Ok(ops)
            });
            match attempt {
                Ok(ops) => return Ok(ops),
                // Permission is not coming with time.
                Err(e) if e.reason == ClaimReason::PermissionDenied => return Err(e),
                Err(e) if Instant::now() + pause > deadline => {
                    debug!(busid = %self.busid, error = %e, "captured device did not come back");
                    return Err(e);
                }
                Err(_) => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(200));
                }
            }
        }
    }

    /// Closes the device and has it re-enumerated without a capture.
    fn give_back(&mut self) -> Result<(), HostError> {
        // Closed first: the OS re-enumerates a device nobody has open.
        self.ops = None;
        self.own.begin(&self.busid);
        let given = self.capturer.give_back(&self.busid);
        self.own.end(&self.busid);
        if given.is_ok() {
            self.captured = false;
            info!(busid = %self.busid, "re-enumerated without capture; the OS drivers get the device back");
        }
        given
    }
}

impl Drop for CapturingDevice {
    /// Closing a device this handle captured gives it back. (A stop of the extension closes
    /// it too: unlike a usbfs detach, a capture is not left behind for the next start.)
    fn drop(&mut self) {
        if self.captured {
            if let Err(e) = self.give_back() {
                // A device that left cannot be given back; anything else is worth a line.
                debug!(busid = %self.busid, error = %e, "captured device not given back on close");
            }
        }
    }
}

impl HostDeviceOps for CapturingDevice {
    fn active_configuration(&self) -> u8 {
        self.ops.as_ref().map_or(0, |o| o.active_configuration())
    }

    fn configuration_descriptor(&self, value: u8) -> Option<Vec<u8>> {
        self.ops.as_ref()?.configuration_descriptor(value)
    }

    fn claim_interfaces(&mut self) -> Result<(), ClaimError> {
        let busid = self.busid.clone();
        let ops = self.ops().map_err(|e| ClaimError::new(&busid, None, e))?;
        match ops.claim_interfaces() {
            Err(e) if e.reason == ClaimReason::HeldByDriver && !self.captured => {
                debug!(busid = %self.busid, error = %e, "held by a driver: capturing the device");
                self.capture_and_claim()
            }
            other => other,
        }
    }

    fn release_interfaces(&mut self) {
        // The capture stays: releasing around a configuration change must not let drivers in.
        if let Some(ops) = self.ops.as_mut() {
            ops.release_interfaces()
        }
    }

    fn open_endpoint(
        &mut self,
        endpoint: &EndpointDesc,
    ) -> Result<Box<dyn EndpointQueue>, HostError> {
        self.ops()?.open_endpoint(endpoint)
    }

    fn control(&mut self, setup: &SetupPacket, data: &[u8]) -> Result<Vec<u8>, XferError> {
        match self.ops.as_mut() {
            Some(ops) => ops.control(setup, data),
            None => Err(XferError::Disconnected),
        }
    }

    fn set_configuration(&mut self, value: u8) -> Result<(), HostError> {
        self.ops()?.set_configuration(value)
    }

    fn set_alt_setting(&mut self, interface: u8, alt: u8) -> Result<(), HostError> {
        self.ops()?.set_alt_setting(interface, alt)
    }

    /// A captured device is reset through the capturer, which keeps the capture; the plain
    /// reset (a re-enumeration without capture) would hand it to its drivers.
    fn reset(&mut self) -> Result<(), HostError> {
        if !self.captured {
            return self.ops()?.reset();
        }
        self.ops = None;
        self.own.begin(&self.busid);
        let reset = self.capturer.reset(&self.busid);
        let reopened = reset.and_then(|()| self.reopen(false).map_err(|e| e.error));
        self.own.end(&self.busid);
        self.ops = Some(reopened?);
        Ok(())
    }

    /// Gives the device back to its drivers. Always by a re-enumeration without capture, even
    /// if this handle captured nothing: a crashed extension may have left the device captured.
    fn attach_kernel_drivers(&mut self) -> Result<(), HostError> {
        if let Some(ops) = self.ops.as_mut() {
            ops.release_interfaces();
        }
        self.give_back()
    }
}

#[cfg(test)]
mod tests;
