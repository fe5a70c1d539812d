//! Platform leaves: the few things only one OS does, behind plain functions and traits the rest
//! of the program uses. Nothing here holds policy. `volumes` is the platform-neutral trait the
//! macOS disk-arbitration leaf implements.

#[cfg(target_os = "linux")]
pub mod linux;
#[cfg(target_os = "linux")]
pub mod linux_uevent;
#[cfg(target_os = "macos")]
pub mod macos;
pub mod volumes;

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
