//! The extension's view of the host's USB bus: list devices, claim one exclusively (taking it
//! from its kernel driver), give it back, and hear about plug and unplug.
//!
//! Implemented over usbfs/IOKit by the host backend (an adapter over `device::host`) and by
//! [`super::virtual_bus::VirtualBus`] in tests. Nothing here opens a device by itself.

use std::fmt;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::device::Device;
use crate::ipc::{ErrorCode, OsCode};

/// A device on the host bus, as much as the extension needs to know without opening it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusDevice {
    pub busid: String,
    pub vid: u16,
    pub pid: u16,
    pub serial: Option<String>,
    /// The kernel driver bound to (one of) its interfaces, if any.
    pub driver: Option<String>,
}

impl BusDevice {
    pub fn vid_pid(&self) -> String {
        format!("{:04x}:{:04x}", self.vid, self.pid)
    }
}

/// Plug and unplug.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusEvent {
    Arrived(BusDevice),
    Left {
        busid: String,
    },
    /// A claimed device's transfers failed because it is gone (ENODEV/ESHUTDOWN), and it is no
    /// longer on the bus: the unplug as the claim saw it, which may be the only sign of it
    /// (no hotplug source). Applies to the claim only if [`BusClaim::departed`] says so, so a
    /// late report never releases the claim of a device that has returned since.
    Departed {
        busid: String,
    },
}

/// Why a claim, release or reattach on the bus failed: a stable code and the OS error behind
/// it. (The host backend's own error for a failed open or interface claim is
/// `device::host::ClaimError`; `host_bus::claim_error` maps it to this.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusError {
    pub code: ErrorCode,
    pub os: Option<OsCode>,
}

impl BusError {
    pub fn new(code: ErrorCode) -> BusError {
        BusError { code, os: None }
    }

    /// Classifies a positive errno from opening (`Stage::Open`), detaching a kernel driver
    /// (`Stage::Detach`), claiming or releasing.
    pub fn from_errno(stage: Stage, errno: i32) -> BusError {
        use nix::errno::Errno;
        let code = match (stage, Errno::from_raw(errno)) {
            (_, Errno::ENODEV | Errno::ENOENT | Errno::ESHUTDOWN) => ErrorCode::DeviceGone,
            (Stage::Release, _) => ErrorCode::ReleaseFailed,
            (_, Errno::EACCES | Errno::EPERM) => ErrorCode::AccessDenied,
            (Stage::Detach, _) => ErrorCode::DetachFailed,
            (_, Errno::EBUSY) => ErrorCode::DeviceBusy,
            _ => ErrorCode::ClaimFailed,
        };
        BusError {
            code,
            os: Some(OsCode::Errno(errno)),
        }
    }
}

impl fmt::Display for BusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some(os) = self.os {
            write!(f, " ({os})")?;
        }
        Ok(())
    }
}

/// Where in a claim an OS error happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Open,
    Detach,
    Claim,
    Release,
}

/// A claim on the bus: a device the extension holds exclusively. Dropping it closes the device
/// without giving it back to its kernel driver (as a crashed process would);
/// [`BusClaim::release`] gives it back.
pub trait BusClaim: Send + Sync {
    /// The device to export; its sessions run in the extension.
    fn device(&self) -> Arc<dyn Device>;

    /// The kernel driver that was detached to claim it.
    fn detached_driver(&self) -> Option<String>;

    /// Closes the device and lets its kernel driver have it again.
    fn release(self: Box<Self>) -> Result<(), BusError>;

    /// The device of this claim was seen to leave (see [`BusEvent::Departed`]).
    fn departed(&self) -> bool {
        false
    }

    /// The device left (an unplug event, or [`BusEvent::Departed`]): close it, giving nothing
    /// back. Unlike a drop, this never keeps the handle for a device that still seems present
    /// (the kernel's remove event precedes the removal of the device's sysfs directory).
    fn unplugged(self: Box<Self>) {}
}

/// The host's USB bus. Calls may block for a few milliseconds (usbfs ioctls, IOKit): the
/// extension calls them from blocking tasks.
pub trait HostBus: Send + Sync + 'static {
    /// `usbfs`, `iokit` or `virtual`, for status.
    fn kind(&self) -> &'static str;

    fn devices(&self) -> Vec<BusDevice>;

    /// Opens `busid` exclusively, detaching any kernel driver.
    fn claim(&self, busid: &str) -> Result<Box<dyn BusClaim>, BusError>;

    /// Gives `busid` back to its kernel drivers when nothing holds it any more (recovery after
    /// a crash: Linux USBDEVFS_CONNECT; on macOS a re-enumeration without capture).
    fn reattach(&self, busid: &str) -> Result<(), BusError>;

    /// Plug and unplug events from now on.
    fn subscribe(&self) -> mpsc::UnboundedReceiver<BusEvent>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errnos_map_to_stable_codes() {
        let c = |stage, e: nix::errno::Errno| BusError::from_errno(stage, e as i32).code;
        use nix::errno::Errno::*;
        assert_eq!(c(Stage::Open, EACCES), ErrorCode::AccessDenied);
        assert_eq!(c(Stage::Detach, EPERM), ErrorCode::AccessDenied);
        assert_eq!(c(Stage::Claim, EBUSY), ErrorCode::DeviceBusy);
        assert_eq!(c(Stage::Detach, EBUSY), ErrorCode::DetachFailed);
        assert_eq!(c(Stage::Open, ENODEV), ErrorCode::DeviceGone);
        assert_eq!(c(Stage::Release, EIO), ErrorCode::ReleaseFailed);
        assert_eq!(c(Stage::Claim, EIO), ErrorCode::ClaimFailed);
        let e = BusError::from_errno(Stage::Open, 13);
        assert_eq!(e.to_string(), "E020 AccessDenied (errno 13 (EACCES))");
    }
}
