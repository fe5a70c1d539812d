//! The extension's error codes: stable numbers shared by the IPC protocol, the CLI and the logs,
//! each with an actionable message; and the OS error code (errno, or IOReturn on macOS) behind
//! a failure.
//!
//! Numbers are part of the protocol: never renumber or reuse one, only add.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a request to the extension failed. The numbers are stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "u16", try_from = "u16")]
#[repr(u16)]
pub enum ErrorCode {
    /// The request was malformed, too large or failed validation.
    InvalidRequest = 1,
    /// The request's protocol version is not one this extension speaks.
    UnsupportedVersion = 2,
    /// The peer's user or group may not use the extension.
    NotAuthorized = 3,
    /// The peer's code is not signed by the extension's team (macOS, signed extension).
    UntrustedSignature = 4,
    /// The extension's socket, or its directory, belongs to another user or is writable by
    /// others: whoever listens there is not trusted with our requests.
    UntrustedSocket = 5,
    /// The busid is not of the form `1-2` or `1-2.3`.
    InvalidBusid = 10,
    /// No device with this busid is plugged in.
    NoSuchDevice = 11,
    /// The device is not bound (unbind, import).
    NotBound = 12,
    /// The device is bound already.
    AlreadyBound = 13,
    /// The OS refused access to the device (permissions).
    AccessDenied = 20,
    /// Another program holds the device.
    DeviceBusy = 21,
    /// The kernel driver could not be detached.
    DetachFailed = 22,
    /// The device went away during the operation.
    DeviceGone = 23,
    /// Opening or claiming failed for another OS reason.
    ClaimFailed = 24,
    /// Giving the device back to its kernel driver failed.
    ReleaseFailed = 25,
    /// The claim registry could not be read or written.
    StateFile = 30,
    /// The extension is not running or does not answer.
    Unavailable = 40,
    /// A bug: the extension could not complete the request.
    Internal = 99,
}

const ALL: [ErrorCode; 18] = [
    ErrorCode::InvalidRequest,
    ErrorCode::UnsupportedVersion,
    ErrorCode::NotAuthorized,
    ErrorCode::UntrustedSignature,
    ErrorCode::UntrustedSocket,
    ErrorCode::InvalidBusid,
    ErrorCode::NoSuchDevice,
    ErrorCode::NotBound,
    ErrorCode::AlreadyBound,
    ErrorCode::AccessDenied,
    ErrorCode::DeviceBusy,
    ErrorCode::DetachFailed,
    ErrorCode::DeviceGone,
    ErrorCode::ClaimFailed,
    ErrorCode::ReleaseFailed,
    ErrorCode::StateFile,
    ErrorCode::Unavailable,
    ErrorCode::Internal,
];

impl From<ErrorCode> for u16 {
    fn from(c: ErrorCode) -> u16 {
        c as u16
    }
}

impl TryFrom<u16> for ErrorCode {
    type Error = String;
    fn try_from(n: u16) -> Result<ErrorCode, String> {
        ALL.into_iter()
            .find(|c| *c as u16 == n)
            .ok_or_else(|| format!("unknown error code {n}"))
    }
}

impl ErrorCode {
    /// What went wrong and what to do about it, for the CLI.
    pub fn advice(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "the request was refused as malformed; check the command's arguments",
            ErrorCode::UnsupportedVersion => "the extension runs a different version of usbipd; restart it (or the daemon) so both match",
            ErrorCode::NotAuthorized => "your user may not control the extension; run as root or as the configured daemon user/group (--allow-uid/--allow-gid)",
            ErrorCode::UntrustedSignature => "only programs signed by the same developer as the extension may control it; use the usbipd installed with it (`usbipd status` shows which one)",
            ErrorCode::UntrustedSocket => "the extension's socket or its directory belongs to another user or is writable by others; remove it, or point --extension-socket at the real one",
            ErrorCode::InvalidBusid => "a busid looks like 1-2 or 1-2.3; see `usbipd status` for the devices",
            ErrorCode::NoSuchDevice => "no device with this busid is plugged in; check the busid and the cable",
            ErrorCode::NotBound => "the device is not bound; `usbipd bind --busid <busid>` first",
            ErrorCode::AlreadyBound => "the device is bound already; nothing to do",
            ErrorCode::AccessDenied if crate::platform::OS == crate::platform::Os::Macos => "the extension may not capture the device: it must run as root (`sudo usbipd extension install` sets up its launchd daemon)",
            ErrorCode::AccessDenied => "the extension may not open the device: run it as root, or grant it write access to /dev/bus/usb/<bus>/<dev> with a udev rule",
            ErrorCode::DeviceBusy => "another program holds the device; close it and bind again",
            ErrorCode::DetachFailed => "the kernel driver would not let go of the device; unload it or unmount the device's volumes, then bind again",
            ErrorCode::DeviceGone => "the device was unplugged; plug it in again (a bound device is claimed again automatically)",
            ErrorCode::ClaimFailed => "the device could not be claimed; see the OS error code and `usbipd status` for recent errors",
            ErrorCode::ReleaseFailed => "the kernel driver did not take the device back; unplug and replug it",
            ErrorCode::StateFile => "the claim registry file could not be used; check its path and permissions (see the message)",
            ErrorCode::Unavailable => "the extension is not running; `usbipd server` starts it (see `usbipd status`), or run `usbipd extension install`",
            ErrorCode::Internal => "an internal error; please report it with the extension's log",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "E{:03} {:?}", *self as u16, self)
    }
}

/// The operating system's own error number behind a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OsCode {
    /// A positive errno (Linux, and BSD layer on macOS).
    Errno(i32),
    /// An IOKit IOReturn (macOS).
    IoReturn(u32),
}

impl fmt::Display for OsCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            OsCode::Errno(n) => {
                write!(f, "errno {n} ({:?})", nix::errno::Errno::from_raw(n))
            }
            OsCode::IoReturn(n) => write!(f, "IOReturn {n:#010x}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_stable_and_round_trip() {
        // These numbers are the protocol: this test must only ever grow.
        let fixed = [
            (ErrorCode::InvalidRequest, 1),
            (ErrorCode::UnsupportedVersion, 2),
            (ErrorCode::NotAuthorized, 3),
            (ErrorCode::UntrustedSignature, 4),
            (ErrorCode::UntrustedSocket, 5),
            (ErrorCode::InvalidBusid, 10),
            (ErrorCode::NoSuchDevice, 11),
            (ErrorCode::NotBound, 12),
            (ErrorCode::AlreadyBound, 13),
            (ErrorCode::AccessDenied, 20),
            (ErrorCode::DeviceBusy, 21),
            (ErrorCode::DetachFailed, 22),
            (ErrorCode::DeviceGone, 23),
            (ErrorCode::ClaimFailed, 24),
            (ErrorCode::ReleaseFailed, 25),
            (ErrorCode::StateFile, 30),
            (ErrorCode::Unavailable, 40),
            (ErrorCode::Internal, 99),
        ];
        assert_eq!(fixed.len(), ALL.len());
        for (code, n) in fixed {
            assert_eq!(code as u16, n);
            assert_eq!(serde_json::to_string(&code).unwrap(), n.to_string());
            assert_eq!(ErrorCode::try_from(n), Ok(code));
        }
        assert!(serde_json::from_str::<ErrorCode>("7").is_err());
    }

    #[test]
    fn os_codes_print_errno_names_and_ioreturn_hex() {
        assert_eq!(OsCode::Errno(13).to_string(), "errno 13 (EACCES)");
        assert_eq!(
            OsCode::IoReturn(0xe00002c5).to_string(),
            "IOReturn 0xe00002c5"
        );
    }
}
