//! Errors of the host backend and how they become Linux errnos for the client.
//!
//! Transfer failures map to the status a Linux host controller driver would give the URB;
//! claim failures say exactly why the device could not be taken, with the OS error code. Nothing
//! here talks to a device.

use std::fmt;

use usbip_proto::errno;

use crate::device::OpenError;
pub use crate::platform::os_error::{ioreturn, HostError, HostErrorKind};
use crate::platform::{Os, OS};

/// Why one transfer failed, as the USB library reports it (mirrors `nusb::transfer::TransferError`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XferError {
    /// Cancelled by us or timed out.
    Cancelled,
    /// The endpoint stalled.
    Stall,
    /// The device is gone.
    Disconnected,
    /// Hardware or protocol error (CRC, babble, timeout on the bus).
    Fault,
    /// The OS rejected the request.
    InvalidArgument,
    /// Anything else; the OS error code (an errno on Linux, an IOReturn on macOS).
    Unknown(u32),
}

/// The URB status a Linux client expects for a failed transfer.
pub fn transfer_errno(e: XferError) -> i32 {
    match e {
        XferError::Cancelled => errno::ECONNRESET,
        XferError::Stall => errno::EPIPE,
        // What the Linux HCDs give URBs of a device that went away.
        XferError::Disconnected => errno::ESHUTDOWN,
        XferError::Fault => errno::EPROTO,
        XferError::InvalidArgument => errno::EINVAL,
        XferError::Unknown(code) => unknown_errno(code, OS == Os::Linux),
    }
}

/// An OS code nusb did not classify. On Linux it already is the URB's errno, so pass it on;
/// elsewhere (an IOReturn) it means nothing to a Linux client.
fn unknown_errno(code: u32, linux: bool) -> i32 {
    if linux && (1..4096).contains(&code) {
        -(code as i32)
    } else {
        errno::EPROTO
    }
}

impl HostError {
    /// The status of a standard request that the server carried out with this host call.
    /// A request the OS refused is answered as the device would refuse it: with a stall.
    pub fn request_errno(&self) -> i32 {
        match self.kind {
            HostErrorKind::Disconnected => errno::ENODEV,
            HostErrorKind::Busy => errno::EBUSY,
            _ => errno::EPIPE,
        }
    }
}

/// Why a host device could not be taken for a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimReason {
    /// Unplugged, or no device has that busid any more.
    Gone,
    /// The usbfs node (or IOKit device) may not be opened by this user.
    PermissionDenied,
    /// An interface is held by a kernel driver that cannot be detached, or by another program.
    HeldByDriver,
    Other,
}

/// A device that could not be opened or claimed, and exactly why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimError {
    pub busid: String,
    /// The interface that failed, if the failure was about one.
    pub interface: Option<u8>,
    pub reason: ClaimReason,
    pub error: HostError,
}

impl ClaimError {
    /// Classifies a failed open (`interface: None`) or claim.
    pub fn new(busid: &str, interface: Option<u8>, error: HostError) -> ClaimError {
        let reason = match error.kind {
            HostErrorKind::Disconnected => ClaimReason::Gone,
            HostErrorKind::NotFound if interface.is_none() => ClaimReason::Gone,
            HostErrorKind::PermissionDenied => ClaimReason::PermissionDenied,
            HostErrorKind::Busy => ClaimReason::HeldByDriver,
            _ => ClaimReason::Other,
        };
        ClaimError {
            busid: busid.to_string(),
            interface,
            reason,
            error,
        }
    }
}

impl fmt::Display for ClaimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot claim host device {}", self.busid)?;
        if let Some(i) = self.interface {
            write!(f, " interface {i}")?;
        }
        let why = match self.reason {
            ClaimReason::Gone => "the device is gone",
            ClaimReason::PermissionDenied if OS == Os::Macos => {
                "permission denied (capturing a device from its drivers needs root)"
            }
            ClaimReason::PermissionDenied => {
                "permission denied on the device node (run as root or grant it with a udev rule)"
            }
            ClaimReason::HeldByDriver => "held by a driver or program that cannot be detached",
            ClaimReason::Other => "the OS refused",
        };
        write!(f, ": {why}: {}", self.error)
    }
}

impl std::error::Error for ClaimError {}

impl From<ClaimError> for OpenError {
    fn from(e: ClaimError) -> OpenError {
        match e.reason {
            ClaimReason::Gone => OpenError::Gone,
            _ => OpenError::Failed(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfer_errors_map_to_linux_urb_statuses() {
        assert_eq!(transfer_errno(XferError::Stall), errno::EPIPE);
        assert_eq!(transfer_errno(XferError::Cancelled), errno::ECONNRESET);
        assert_eq!(transfer_errno(XferError::Disconnected), errno::ESHUTDOWN);
        assert_eq!(transfer_errno(XferError::Fault), errno::EPROTO);
        assert_eq!(transfer_errno(XferError::InvalidArgument), errno::EINVAL);
    }

    #[test]
    fn unknown_codes_pass_through_only_where_they_are_errnos() {
        assert_eq!(unknown_errno(121, true), errno::EREMOTEIO);
        assert_eq!(unknown_errno(0, true), errno::EPROTO);
        assert_eq!(unknown_errno(0xe000_02ed, false), errno::EPROTO);
        assert_eq!(unknown_errno(121, false), errno::EPROTO);
    }

    #[test]
    fn ioreturn_codes_classify_as_the_claim_needs() {
        assert_eq!(ioreturn::kind(0xe00002c0), HostErrorKind::Disconnected);
        assert_eq!(ioreturn::kind(0xe00002c1), HostErrorKind::PermissionDenied);
        assert_eq!(ioreturn::kind(0xe00002e2), HostErrorKind::PermissionDenied);
        assert_eq!(ioreturn::kind(0xe00002c5), HostErrorKind::Busy);
        assert_eq!(ioreturn::kind(0xe00002bc), HostErrorKind::Other); // kIOReturnError
                                                                      // So a capture refused for privileges is a permission problem, with its code.
        let e = ClaimError::new(
            "14-2",
            None,
            HostError {
                kind: ioreturn::kind(ioreturn::NOT_PRIVILEGED),
                message: "USBDeviceReEnumerate failed".into(),
                os_code: Some(ioreturn::NOT_PRIVILEGED),
            },
        );
        assert_eq!(e.reason, ClaimReason::PermissionDenied);
    }

    #[test]
    fn claim_errors_say_why_with_the_os_code() {
        let busy = HostError {
            kind: HostErrorKind::Busy,
            message: "interface is busy".into(),
            os_code: Some(16),
        };
        let e = ClaimError::new("1-2.3", Some(1), busy);
        assert_eq!(e.reason, ClaimReason::HeldByDriver);
        let text = e.to_string();
        assert!(text.contains("1-2.3 interface 1"), "{text}");
        assert!(text.contains("cannot be detached"), "{text}");
        assert!(text.contains("16"), "{text}");
        assert!(matches!(OpenError::from(e), OpenError::Failed(_)));

        let denied = HostError::new(HostErrorKind::PermissionDenied, "open failed");
        let e = ClaimError::new("1-2", None, denied);
        assert_eq!(e.reason, ClaimReason::PermissionDenied);
        assert!(e.to_string().contains("udev"));

        let gone = HostError::new(HostErrorKind::Disconnected, "device disconnected");
        assert!(matches!(
            OpenError::from(ClaimError::new("1-2", Some(0), gone)),
            OpenError::Gone
        ));
    }
}
