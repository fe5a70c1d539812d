//! `usbipd attach --lima VM | --docker` (the host side, as usbipd-win's `attach --wsl`): put the
//! static Linux client into a Lima/Colima VM or Docker Desktop's VM and run
//! `usbipd client attach` there; `usbipd detach` ends it again.
//!
//! `plan` is the command sequences as data (pure, tested for every variant); `runner` executes
//! them as processes (`limactl`, `docker`), behind a trait; `records` remembers which busid is
//! attached where, so that detach knows what to stop. No platform code: this runs wherever
//! `limactl` or `docker` exist.

pub mod plan;
pub mod records;
pub mod runner;
