//! The seam between the host-device logic and the USB library: enumerate, open, claim,
//! per-endpoint transfer queues, control transfers and the few device-wide calls.
//!
//! Everything above this trait (URB mapping, interception, unlink, busids) is tested against a
//! double; the implementation over nusb is in `nusb_backend`. Nothing here knows about URBs.

use std::task::{Context, Poll};

use bytes::Bytes;
use usbip_proto::{InterfaceRecord, Speed};

use super::errors::{ClaimError, HostError, XferError};
use crate::device::SetupPacket;

pub use futures_core::future::BoxFuture;

/// Everything the server shows about a host device before opening it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostDeviceInfo {
    /// `1-2.3` on Linux; from the location id on macOS (see `busid`).
    pub busid: String,
    pub busnum: u32,
    pub devnum: u32,
    /// The sysfs path on Linux; an IOKit description elsewhere.
    pub path: String,
    pub speed: Speed,
    pub vendor_id: u16,
    pub product_id: u16,
    /// bcdDevice.
    pub device_version: u16,
    pub class: u8,
    pub subclass: u8,
    pub protocol: u8,
    pub manufacturer: Option<String>,
    pub product: Option<String>,
    pub serial: Option<String>,
    /// bConfigurationValue of the active configuration; 0 if unconfigured or unknown.
    pub configuration_value: u8,
    pub num_configurations: u8,
    /// Raw configuration descriptors (all of them), where the OS gives them without opening
    /// the device (Linux sysfs). Empty otherwise.
    pub configurations: Vec<Vec<u8>>,
    /// Interfaces of the active configuration (alternate setting 0), in order.
    pub interfaces: Vec<InterfaceRecord>,
}

/// A hotplug event.
#[derive(Debug, Clone)]
pub enum HotplugEvent {
    Arrived(HostDeviceInfo),
    /// The busid of a device that left, when the backend could tell it.
    Left {
        busid: Option<String>,
    },
}

/// The transfer type of an endpoint (bits 0-1 of bmAttributes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferKind {
    Control,
    Isochronous,
    Bulk,
    Interrupt,
}

impl TransferKind {
    pub fn from_attributes(attributes: u8) -> TransferKind {
        match attributes & 3 {
            0 => TransferKind::Control,
            1 => TransferKind::Isochronous,
            2 => TransferKind::Bulk,
            _ => TransferKind::Interrupt,
        }
    }
}

/// One endpoint of a claimed interface's current alternate setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointDesc {
    pub address: u8,
    pub interface: u8,
    pub kind: TransferKind,
    pub max_packet_size: usize,
}

/// What one queued transfer asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferRequest {
    /// Read up to `length` bytes; a non-zero multiple of the max packet size.
    In { length: usize },
    /// Write `data`: the URB's payload as it came off the socket, not copied until the queue
    /// puts it where the OS wants it.
    Out { data: Bytes },
}

/// One finished transfer. Transfers of a queue finish in submission order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferDone {
    /// IN: the bytes received (possibly still in the library's zero-copy buffer). OUT: empty.
    pub data: Bytes,
    /// Bytes moved (IN: `data.len()`).
    pub actual_length: usize,
    pub status: Result<(), XferError>,
}

/// The transfer queue of one bulk or interrupt endpoint (nusb's `Endpoint`).
pub trait EndpointQueue: Send + 'static {
    fn submit(&mut self, request: TransferRequest);

    /// The oldest transfer, once it has finished. Only called while `pending() > 0`.
    fn poll_next_complete(&mut self, cx: &mut Context<'_>) -> Poll<TransferDone>;

    /// Transfers submitted and not yet returned by `poll_next_complete`.
    fn pending(&self) -> usize;

    /// Asks for every pending transfer to end; they still come back through
    /// `poll_next_complete`, as cancelled or (if too late) finished. The only cancellation
    /// the library offers: there is none per transfer.
    fn cancel_all(&mut self);

    /// CLEAR_FEATURE(ENDPOINT_HALT) and reset of the host's data toggle. Nothing may be pending.
    fn clear_halt(&mut self) -> BoxFuture<'static, Result<(), HostError>>;
}

/// Finds and opens host devices. Calls block (sysfs reads, usbfs open): call them off the
/// async executor, except where a caller says otherwise.
pub trait HostBackend: Send + Sync + 'static {
    fn list(&self) -> Result<Vec<HostDeviceInfo>, HostError>;

    /// Opens the device that has this busid now. Claims nothing yet.
    fn open(&self, busid: &str) -> Result<Box<dyn HostDeviceOps>, ClaimError>;
}

/// An opened host device. Methods block (ioctls, control transfers); the session calls them
/// from its endpoint-0 thread, never from the async executor.
pub trait HostDeviceOps: Send + 'static {
    /// bConfigurationValue of the active configuration (0: unconfigured).
    fn active_configuration(&self) -> u8;

    /// The raw configuration descriptor with this bConfigurationValue.
    fn configuration_descriptor(&self, value: u8) -> Option<Vec<u8>>;

    /// Claims every interface of the active configuration, detaching kernel drivers (on
    /// Linux atomically, and so that they are given back when released).
    fn claim_interfaces(&mut self) -> Result<(), ClaimError>;

    /// Releases every claimed interface (kernel drivers are given back). Every queue opened
    /// from them must have been dropped first.
    fn release_interfaces(&mut self);

    /// Opens the queue of a bulk or interrupt endpoint of a claimed interface.
    fn open_endpoint(
        &mut self,
        endpoint: &EndpointDesc,
    ) -> Result<Box<dyn EndpointQueue>, HostError>;

    /// A control transfer on endpoint 0. IN: returns at most `setup.length` bytes. OUT:
    /// returns nothing.
    fn control(&mut self, setup: &SetupPacket, data: &[u8]) -> Result<Vec<u8>, XferError>;

    /// SET_CONFIGURATION through the OS. Interfaces must be released first.
    fn set_configuration(&mut self, value: u8) -> Result<(), HostError>;

    /// SET_INTERFACE through the OS on a claimed interface; no queue of it may be open.
    fn set_alt_setting(&mut self, interface: u8, alt: u8) -> Result<(), HostError>;

    /// Port reset of the device. Interfaces must be released first.
    fn reset(&mut self) -> Result<(), HostError>;

    /// Lets kernel drivers bind to every interface nobody claims (Linux USBDEVFS_CONNECT):
    /// gives a device back after a process that detached its drivers died. An interface that
    /// already has a driver is left alone (not an error).
    fn attach_kernel_drivers(&mut self) -> Result<(), HostError> {
        Err(HostError::new(
            super::errors::HostErrorKind::Unsupported,
            "this backend cannot attach kernel drivers",
        ))
    }
}
