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
