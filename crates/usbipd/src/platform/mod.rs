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
pub mod os_error;
pub mod sd_notify;
pub mod signals;
pub mod signatures;
pub mod volumes;

pub use descriptors::RawDescriptors;

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
