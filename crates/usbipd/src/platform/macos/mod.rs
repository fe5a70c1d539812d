//! macOS leaves: peer credentials and audit token of a Unix socket, the code signatures of this
//! program and of a peer (Security framework), capture of a USB device from its drivers
//! (IOKit), the volumes of a mass-storage device (DiskArbitration), and the unified log
//! (tracing-oslog). Thin FFI and conversions only; the decisions that use them (`ipc::peer`,
//! `ipc::signature`, `device::host::capture`, `device::host::unmount`, `logging`) are tested on
//! Linux.
//!
//! Nothing here can be linked on the Linux machines this project is developed on, but it is
//! type-checked and linted there for the real Apple targets on every test run
//! (`scripts/check-apple.sh`); it runs on a Mac in CI (`.github/workflows/ci.yml`).

pub mod capture;
pub mod device_facts;
pub mod disk_arbitration;
mod ffi;
pub mod oslog;
pub mod peer;
mod registry;
pub mod signature;

pub use capture::IoKitCapturer;
pub use disk_arbitration::DiskArbitration;
pub use peer::peer_cred;
pub use signature::CodeSignatures;
