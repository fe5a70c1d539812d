//! The OS's device capture, as the macOS leaf implements it (IOKit) and `device::host::capture`
//! drives it; declared here so that the leaf needs nothing from the layers above.

use super::os_error::HostError;

/// The OS's way to take a whole device from its drivers and to give it back.
pub trait Capturer: Send + Sync + 'static {
    /// Has the device with this busid re-enumerated so that no OS driver binds to it. Returns
    /// once the OS took the request; the device comes back (a new handle must be opened) a
    /// moment later. No handle of ours may be open.
    fn capture(&self, busid: &str) -> Result<(), HostError>;

    /// Has the device re-enumerated without a capture, so its drivers match it again; also
    /// frees a capture an earlier process left. No handle of ours may be open.
    fn give_back(&self, busid: &str) -> Result<(), HostError>;

    /// Port reset of a captured device that keeps the capture (IOKit's plain reset is a
    /// re-enumeration, which would end it). No handle of ours may be open.
    fn reset(&self, busid: &str) -> Result<(), HostError>;
}
