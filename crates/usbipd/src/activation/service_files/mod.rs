//! Service definitions generated from the installed executable: a systemd unit and two launchd
//! daemon plists (the extension's, and the daemon's as `brew services` installs it), as strings, by pure functions (the installers write them; `usbipd service-file`
//! prints them for packagers).
//!
//! Nothing here touches the file system or the environment.

pub mod launchd;
pub mod systemd;

/// systemd unit name of the extension.
pub const SYSTEMD_UNIT: &str = "usbipd-extension.service";
/// launchd label of the extension.
pub const LAUNCHD_LABEL: &str = "dev.usbipd.extension";
/// Where launchd sends the extension's standard error (what it writes before its unified-log
/// logging starts, and a panic); its logs go to the unified log.
pub const LAUNCHD_LOG: &str = "/Library/Logs/usbipd/extension.log";
/// launchd label of the daemon (`usbipd server`): the one Homebrew gives the formula's service,
/// so `sudo brew services start usbipd` and a plist installed by hand are the same job.
pub const DAEMON_LABEL: &str = "homebrew.mxcl.usbipd";
/// Where launchd sends the daemon's standard error (a hand-installed plist; Homebrew's goes
/// to `$(brew --prefix)/var/log/usbipd.log`).
pub const DAEMON_LOG: &str = "/Library/Logs/usbipd/server.log";
/// The unified log's subsystem of usbipd's services (`log show --predicate 'subsystem ==
/// "dev.usbipd"'`).
pub use crate::platform::OSLOG_SUBSYSTEM;
