//! macOS leaves: peer credentials and audit token of a Unix socket, the code signatures of this
//! program and of a peer (Security framework), and capture of a USB device from its drivers
//! (IOKit). Thin FFI and conversions only; the decisions that use them (`ipc::peer`,
//! `ipc::signature`, `device::host::capture`) are tested on Linux.
//!
//! Nothing here can be built on the Linux machines this project is developed on, but it is
//! type-checked there on every test run: `scripts/check-macos.sh` compiles this module for
//! Linux with `--cfg usbipd_check_macos`, against our own declarations in `ffi` (Linux has
//! none of these symbols, so it is checked, never linked).

// In the Linux type-check nothing calls these leaves.
#![cfg_attr(not(target_os = "macos"), allow(dead_code))]

pub mod capture;
mod ffi;
pub mod peer;
pub mod signature;

pub use capture::IoKitCapturer;
pub use peer::peer_cred;
pub use signature::CodeSignatures;
