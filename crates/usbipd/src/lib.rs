//! usbipd: a USB/IP server. See ARCHITECTURE.md for the map.

pub mod cli;
pub mod config;
pub mod control;
pub mod device;
pub mod devices;
pub mod extension;
pub mod ipc;
pub mod platform;
pub mod server;
