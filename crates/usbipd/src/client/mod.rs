//! The client side, for a Linux machine with vhci-hcd (a VM, a container's host): import a
//! device from a USB/IP server and hand it to the kernel, list and free vhci ports.
//!
//! `status` (the sysfs files as data) and `remote` (addresses, device choice) are pure;
//! `sysfs` and `records` do the I/O; `attach` puts them together; `auto` decides and `supervise` does what `--auto` does; `unit` is the systemd unit for it.

pub mod attach;
pub mod attach_tls;
pub mod auto;
pub mod records;
pub mod remote;
pub mod status;
pub mod supervise;
pub mod sysfs;
pub mod tls;
pub mod unit;
