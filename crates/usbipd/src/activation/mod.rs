//! Automatic activation of the extension: install it on first use in the background while the
//! daemon keeps working in fallback mode, remember the outcome across restarts, and report it.
//!
//! Nothing here claims devices or talks to the extension: that is `crate::extension`. This
//! module only decides *whether* the extension is there and which `Mode` new operations use.
//!
//! - `state`: the installation state machine (pure); `state_file`: its atomic persistence
//! - `installer`: systemd / launchd / embedded installers behind the `Installer` trait
//! - `controller`: `Activation`, the daemon's handle (`mode()`, `begin_operation()`)
//! - `service_files`: the generated systemd unit and launchd plist
//! - `status`: the pure renderer of the extension part of `usbipd status`
//! - `manual`: `usbipd extension install | uninstall | status` helpers
//! - `signing`: code-signing identities (macOS)
//! - `testing`: a scripted installer double

pub mod controller;
pub mod installer;
pub mod manual;
pub mod service_files;
pub mod signing;
pub mod state;
pub mod state_file;
pub mod status;
#[cfg(any(test, feature = "test-support"))]
pub mod testing;

pub use controller::{Activation, ActivationConfig, FallbackReason, Mode, Snapshot};
pub use state::{ActivationState, ApprovalStep, InstallStatus, InstallerKind};
