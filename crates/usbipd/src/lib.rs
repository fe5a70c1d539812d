//! usbipd: a USB/IP server. See ARCHITECTURE.md for the map.

pub mod device;
pub mod server;
