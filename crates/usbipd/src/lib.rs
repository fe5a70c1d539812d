//! usbipd: a USB/IP server. See ARCHITECTURE.md for the map.

pub mod activation;
pub mod bindings;
pub mod capture;
pub mod cli;
pub mod client;
pub mod config;
pub mod control;
pub mod device;
pub mod devices;
pub mod extension;
pub mod host_exports;
pub mod ipc;
pub mod listing;
pub mod persist;
pub mod platform;
pub mod server;
pub mod tls;
pub mod vm;
