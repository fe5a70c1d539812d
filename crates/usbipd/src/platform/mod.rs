//! Platform leaves: the few things only one OS does, behind plain functions and traits the rest
//! of the program uses. Nothing here holds policy.
//!
//! - `device_facts` (per OS): a host device's busid, bus number, path and cached descriptors,
//!   from what the OS knows without opening it; `busid` and `descriptors` are the pure parts.
//! - `peer_cred` (per OS): who is at the other end of a Unix socket.
//! - `volumes`: the platform-neutral trait the macOS disk-arbitration leaf implements.
//! - `system_log`: a tracing layer into the platform's own log for a service (macOS).
//! - `signals`: the shutdown signals a foreground process or a service stops on.
//! - `sd_notify`: systemd readiness notification (Linux service; a no-op elsewhere).
//! - `kernel_events`: USB devices arriving and leaving as the kernel announces them (Linux
//!   uevents; none elsewhere).
//! - `net`: socket options and flags only some kernels have (TCP_USER_TIMEOUT, MSG_NOSIGNAL).
//! - [`OS`], [`device_capture`], [`code_signatures`], [`missing_privileges`]: the facts and
//!   parts the logic above picks between, so it names no OS itself.
//!
//! This file is the only switch on `target_os` (with `build.rs`, which sets `cfg(host_usb)` for
//! the OSes nusb has a host backend on); `tests/layering.rs` fails on any other.

#[cfg(target_os = "linux")]
pub mod linux;
#[cfg(target_os = "macos")]
pub mod macos;

#[cfg(target_os = "linux")]
pub use linux::{device_facts, peer_cred};
#[cfg(target_os = "macos")]
pub use macos::{device_facts, peer_cred};

pub mod busid;
pub mod capturer;
pub mod descriptors;
pub mod kernel_events;
pub mod kernel_tls;
pub mod net;
pub mod os_error;
pub mod sd_notify;
pub mod signals;
pub mod signatures;
pub mod volumes;

pub use descriptors::RawDescriptors;

use std::sync::Arc;

use capturer::Capturer;
use signatures::SignatureReader;
use volumes::VolumeUnmounter;

/// The OS this build is for, where the logic above differs only in data: a message, which
/// service manager, what a raw OS error code is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Os {
    Linux,
    Macos,
    Other,
}

pub const OS: Os = if cfg!(target_os = "linux") {
    Os::Linux
} else if cfg!(target_os = "macos") {
    Os::Macos
} else {
    Os::Other
};

/// Taking a device from the drivers that hold it, where the OS needs more than the USB
/// library (macOS: IOKit capture, after unmounting a disk's volumes). Linux usbfs detaches
/// kernel drivers itself: nothing.
pub struct DeviceCapture {
    pub capturer: Arc<dyn Capturer>,
    pub volumes: Arc<dyn VolumeUnmounter>,
}

#[cfg(target_os = "macos")]
pub fn device_capture() -> Option<DeviceCapture> {
    Some(DeviceCapture {
        capturer: Arc::new(macos::IoKitCapturer),
        volumes: Arc::new(macos::DiskArbitration),
    })
}

#[cfg(not(target_os = "macos"))]
pub fn device_capture() -> Option<DeviceCapture> {
    None
}

/// The reader of code signatures, where peers are checked by signature (macOS); `None` where
/// the uid/gid check is the whole of peer authentication.
#[cfg(target_os = "macos")]
pub fn code_signatures() -> Option<Arc<dyn SignatureReader>> {
    Some(Arc::new(macos::CodeSignatures))
}

#[cfg(not(target_os = "macos"))]
pub fn code_signatures() -> Option<Arc<dyn SignatureReader>> {
    None
}

/// What this process lacks to claim host devices, item by item; empty if nothing. Linux: the
/// usbfs tree and write access to its nodes; elsewhere capturing needs root.
#[cfg(target_os = "linux")]
pub fn missing_privileges() -> Vec<String> {
    linux::missing_privileges(std::path::Path::new("/dev/bus/usb"))
}

#[cfg(not(target_os = "linux"))]
pub fn missing_privileges() -> Vec<String> {
    if nix::unistd::geteuid().is_root() {
        Vec::new()
    } else {
        vec!["not root: capturing devices from their kernel drivers needs root".into()]
    }
}

/// What the kernel says about the process at the other end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCred {
    pub pid: i32,
    pub uid: u32,
    /// The primary group.
    pub gid: u32,
    /// The supplementary groups, as the kernel recorded them when the peer connected.
    pub groups: Vec<u32>,
}

/// The unified-log subsystem of every usbipd process on macOS (`log show --predicate
/// 'subsystem == "dev.usbipd"'`).
pub const OSLOG_SUBSYSTEM: &str = "dev.usbipd";

/// A tracing layer into the system's log for a service, where the platform has one apart from
/// standard error: the unified log on macOS (subsystem `dev.usbipd`, this category).
pub type SystemLog = Box<dyn tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync>;

#[cfg(target_os = "macos")]
pub fn system_log(category: &str) -> Option<SystemLog> {
    Some(macos::oslog::layer(category))
}

/// Elsewhere a service's standard error is its log (journald keeps a unit's).
#[cfg(not(target_os = "macos"))]
pub fn system_log(_category: &str) -> Option<SystemLog> {
    None
}
