//! Service definitions generated from the installed executable: a systemd unit and a launchd
//! daemon plist, as strings, by pure functions (the installers write them; `usbipd service-file`
//! prints them for packagers).
//!
//! Nothing here touches the file system or the environment.

pub mod launchd;
pub mod systemd;

/// systemd unit name of the extension.
pub const SYSTEMD_UNIT: &str = "usbipd-extension.service";
/// launchd label of the extension.
pub const LAUNCHD_LABEL: &str = "dev.usbipd.extension";
/// Where the launchd daemon writes its output.
pub const LAUNCHD_LOG: &str = "/Library/Logs/usbipd/extension.log";
