//! Platform leaves: the few things only one OS does, behind plain functions and traits the rest
//! of the program uses. Nothing here holds policy.
//!
//! - `device_facts` (per OS): a host device's busid, bus number, path and cached descriptors,
//!   from what the OS knows without opening it; `busid` and `descriptors` are the pure parts.
//! - `peer_cred` (per OS): who is at the other end of a Unix socket.
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
pub mod descriptors;
pub mod sd_notify;
pub mod signals;

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
