//! A failed OS call about a host device (open, claim, capture, set configuration, ...),
//! classified: what the platform leaves return and the device layer maps to USB/IP statuses
//! (`device::host::errors`).

use std::fmt;

/// The IOReturn codes (IOKit/IOReturn.h) the macOS leaves classify, and how.
pub mod ioreturn {
    use super::HostErrorKind;

    pub const NO_RESOURCES: u32 = 0xe000_02be;
    pub const NO_DEVICE: u32 = 0xe000_02c0;
    pub const NOT_PRIVILEGED: u32 = 0xe000_02c1;
    pub const EXCLUSIVE_ACCESS: u32 = 0xe000_02c5;
    pub const NOT_PERMITTED: u32 = 0xe000_02e2;

    /// What a failed IOKit call means for a claim.
    pub fn kind(code: u32) -> HostErrorKind {
        match code {
            NO_DEVICE => HostErrorKind::Disconnected,
            NOT_PRIVILEGED | NOT_PERMITTED => HostErrorKind::PermissionDenied,
            // A driver or another program has the device or interface open.
            EXCLUSIVE_ACCESS => HostErrorKind::Busy,
            _ => HostErrorKind::Other,
        }
    }
}

/// General category of a failed host operation (mirrors `nusb::ErrorKind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostErrorKind {
    Disconnected,
    Busy,
    PermissionDenied,
    NotFound,
    Unsupported,
    Other,
}

/// A failed host operation other than a transfer (open, claim, set configuration, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostError {
    pub kind: HostErrorKind,
    pub message: String,
    /// errno on Linux, IOReturn on macOS.
    pub os_code: Option<u32>,
}

impl HostError {
    pub fn new(kind: HostErrorKind, message: impl Into<String>) -> HostError {
        HostError {
            kind,
            message: message.into(),
            os_code: None,
        }
    }
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.message)?;
        match self.os_code {
            // nusb's own messages already name the code.
            Some(code) if self.message.contains(&code.to_string()) => Ok(()),
            Some(code) if cfg!(target_os = "macos") => write!(f, " (IOReturn {code:#010x})"),
            Some(code) => write!(f, " (os error {code})"),
            None => Ok(()),
        }
    }
}

impl std::error::Error for HostError {}
