//! The host backend over nusb 0.2: enumeration, hotplug, claiming and transfer queues.
//!
//! The only module that calls nusb. It adds no policy: URB mapping, interception and unlink
//! live above the [`HostBackend`] traits. Platform facts (busid, paths, sysfs) come from the
//! small `linux` / `macos` modules through [`Platform`].

use std::collections::{BTreeMap, HashMap};
use std::future::{poll_fn, IntoFuture};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_core::Stream;
use nusb::transfer::{
    Bulk, BulkOrInterrupt, ControlIn, ControlOut, ControlType, Direction, EndpointDirection, In,
    Interrupt, Out, Recipient, TransferError,
};
use nusb::{DeviceInfo, MaybeFuture};
use usbip_proto::{InterfaceRecord, Speed};

use super::backend::{
    BoxFuture, EndpointDesc, EndpointQueue, HostBackend, HostDeviceInfo, HostDeviceOps,
    HotplugEvent, TransferDone, TransferKind, TransferRequest,
};
use super::buffer_pool::BufferPool;
use super::errors::{ClaimError, HostError, HostErrorKind, XferError};
use super::session::CONTROL_TIMEOUT;
use crate::device::r#virtual::parse_configuration;
use crate::device::SetupPacket;

use crate::platform::device_facts;

/// The real backend.
#[derive(Debug, Default, Clone, Copy)]
pub struct NusbBackend;

impl HostBackend for NusbBackend {
    fn list(&self) -> Result<Vec<HostDeviceInfo>, HostError> {
        let devices = nusb::list_devices().wait().map_err(host_error)?;
        Ok(devices.filter_map(|d| describe(&d)).collect())
    }

    fn open(&self, busid: &str) -> Result<Box<dyn HostDeviceOps>, ClaimError> {
        let gone = || {
            ClaimError::new(
                busid,
                None,
                HostError::new(HostErrorKind::NotFound, "no such device"),
            )
        };
        let info = nusb::list_devices()
            .wait()
            .map_err(|e| ClaimError::new(busid, None, host_error(e)))?
            .find(|d| device_facts::busid(d).as_deref() == Some(busid))
            .ok_or_else(gone)?;
        let device = info
            .open()
            .wait()
            .map_err(|e| ClaimError::new(busid, None, host_error(e)))?;
        Ok(Box::new(NusbDevice {
            busid: busid.to_string(),
            device,
            interfaces: BTreeMap::new(),
        }))
    }
}

/// Describes an enumerated device; `None` for root hubs.
fn describe(d: &DeviceInfo) -> Option<HostDeviceInfo> {
    let busid = device_facts::busid(d)?;
    let raw = device_facts::descriptors(d);
    let active = raw
        .configurations
        .iter()
        .find(|c| c.get(5) == Some(&raw.active));
    let interfaces = match active {
        Some(config) => parse_configuration(config)
            .0
            .iter()
            .filter(|i| i.alt == 0)
            .map(|i| InterfaceRecord {
                class: i.class,
                subclass: i.subclass,
                protocol: i.protocol,
            })
            .collect(),
        None => d
            .interfaces()
            .map(|i| InterfaceRecord {
                class: i.class(),
                subclass: i.subclass(),
                protocol: i.protocol(),
            })
            .collect(),
    };
    let num_configurations = match raw.device.get(17) {
        Some(&n) => n,
        None => raw.configurations.len().max(1) as u8,
    };
    Some(HostDeviceInfo {
        busid,
        busnum: device_facts::busnum(d),
        devnum: u32::from(d.device_address()),
        path: device_facts::path(d),
        speed: speed(d.speed()),
        vendor_id: d.vendor_id(),
        product_id: d.product_id(),
        device_version: d.device_version(),
        class: d.class(),
        subclass: d.subclass(),
        protocol: d.protocol(),
        manufacturer: d.manufacturer_string().map(str::to_string),
        product: d.product_string().map(str::to_string),
        serial: d.serial_number().map(str::to_string),
        configuration_value: raw.active,
        num_configurations,
        configurations: raw.configurations,
        interfaces,
    })
}

/// nusb's speed as the Linux `enum usb_device_speed` the device record carries.
fn speed(s: Option<nusb::Speed>) -> Speed {
    match s {
        Some(nusb::Speed::Low) => Speed::Low,
        Some(nusb::Speed::Full) => Speed::Full,
        Some(nusb::Speed::High) => Speed::High,
        Some(nusb::Speed::Super) => Speed::Super,
        Some(nusb::Speed::SuperPlus) => Speed::SuperPlus,
        _ => Speed::Unknown,
    }
}

fn host_error(e: nusb::Error) -> HostError {
    let kind = match e.kind() {
        nusb::ErrorKind::Disconnected => HostErrorKind::Disconnected,
        nusb::ErrorKind::Busy => HostErrorKind::Busy,
        nusb::ErrorKind::PermissionDenied => HostErrorKind::PermissionDenied,
        nusb::ErrorKind::NotFound => HostErrorKind::NotFound,
        nusb::ErrorKind::Unsupported => HostErrorKind::Unsupported,
        _ => HostErrorKind::Other,
    };
    HostError {
        kind,
        message: e.to_string(),
        os_code: e.os_error(),
    }
}

fn xfer_error(e: TransferError) -> XferError {
    match e {
        TransferError::Cancelled => XferError::Cancelled,
        TransferError::Stall => XferError::Stall,
        TransferError::Disconnected => XferError::Disconnected,
        TransferError::Fault => XferError::Fault,
        TransferError::InvalidArgument => XferError::InvalidArgument,
        TransferError::Unknown(code) => XferError::Unknown(code),
    }
}

/// An opened device and the interfaces claimed on it.
struct NusbDevice {
    busid: String,
    device: nusb::Device,
    interfaces: BTreeMap<u8, nusb::Interface>,
}

impl NusbDevice {
    fn interface_numbers(&self) -> Vec<u8> {
        match self.device.active_configuration() {
            Ok(c) => c.interfaces().map(|i| i.interface_number()).collect(),
            Err(_) => Vec::new(), // unconfigured
        }
    }
}

impl HostDeviceOps for NusbDevice {
    fn active_configuration(&self) -> u8 {
        self.device
            .active_configuration()
            .map(|c| c.configuration_value())
            .unwrap_or(0)
    }

    fn configuration_descriptor(&self, value: u8) -> Option<Vec<u8>> {
        self.device
            .configurations()
            .find(|c| c.configuration_value() == value)
            .map(|c| c.as_bytes().to_vec())
    }

    fn claim_interfaces(&mut self) -> Result<(), ClaimError> {
        let mut first_error = None;
        for n in self.interface_numbers() {
            if self.interfaces.contains_key(&n) {
                continue;
            }
            // Linux: USBDEVFS_DISCONNECT_CLAIM, atomic; nusb gives the interface back to its
            // kernel driver (USBDEVFS_CONNECT) when the Interface is dropped. macOS: a plain
            // claim, which fails while a kernel driver holds the interface.
            match self.device.detach_and_claim_interface(n).wait() {
                Ok(interface) => {
                    self.interfaces.insert(n, interface);
                }
                Err(e) => {
                    first_error.get_or_insert(ClaimError::new(&self.busid, Some(n), host_error(e)));
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn release_interfaces(&mut self) {
        self.interfaces.clear();
    }

    fn open_endpoint(
        &mut self,
        endpoint: &EndpointDesc,
    ) -> Result<Box<dyn EndpointQueue>, HostError> {
        let interface = self
            .interfaces
            .get(&endpoint.interface)
            .ok_or_else(|| HostError::new(HostErrorKind::NotFound, "interface is not claimed"))?;
        let address = endpoint.address;
        let input = address & 0x80 != 0;
        let queue: Box<dyn EndpointQueue> = match (endpoint.kind, input) {
            (TransferKind::Bulk, true) => Box::new(Queue::new(
                interface
                    .endpoint::<Bulk, In>(address)
                    .map_err(host_error)?,
            )),
            (TransferKind::Bulk, false) => Box::new(Queue::new(
                interface
                    .endpoint::<Bulk, Out>(address)
                    .map_err(host_error)?,
            )),
            (TransferKind::Interrupt, true) => Box::new(Queue::new(
                interface
                    .endpoint::<Interrupt, In>(address)
                    .map_err(host_error)?,
            )),
            (TransferKind::Interrupt, false) => Box::new(Queue::new(
                interface
                    .endpoint::<Interrupt, Out>(address)
                    .map_err(host_error)?,
            )),
            _ => {
                return Err(HostError::new(
                    HostErrorKind::Unsupported,
                    "only bulk and interrupt endpoints have queues",
                ))
            }
        };
        Ok(queue)
    }

    fn control(&mut self, setup: &SetupPacket, data: &[u8]) -> Result<Vec<u8>, XferError> {
        let control_type = match (setup.request_type >> 5) & 3 {
            0 => ControlType::Standard,
            1 => ControlType::Class,
            2 => ControlType::Vendor,
            _ => return Err(XferError::InvalidArgument),
        };
        let recipient = match setup.request_type & 0x1f {
            0 => Recipient::Device,
            1 => Recipient::Interface,
            2 => Recipient::Endpoint,
            3 => Recipient::Other,
            _ => return Err(XferError::InvalidArgument),
        };
        if setup.is_in() {
            let request = ControlIn {
                control_type,
                recipient,
                request: setup.request,
                value: setup.value,
                index: setup.index,
                length: setup.length,
            };
            self.device
                .control_in(request, CONTROL_TIMEOUT)
                .wait()
                .map_err(xfer_error)
        } else {
            let request = ControlOut {
                control_type,
                recipient,
                request: setup.request,
                value: setup.value,
                index: setup.index,
                data,
            };
            self.device
                .control_out(request, CONTROL_TIMEOUT)
                .wait()
                .map(|()| Vec::new())
                .map_err(xfer_error)
        }
    }

    fn set_configuration(&mut self, value: u8) -> Result<(), HostError> {
        // usbfs refuses while any interface is claimed, and releasing ours gave them back to
        // their kernel drivers: take them off again (best effort) before switching.
        for n in self.interface_numbers() {
            let _ = self.device.detach_kernel_driver(n);
        }
        self.device
            .set_configuration(value)
            .wait()
            .map_err(host_error)
    }

    fn set_alt_setting(&mut self, interface: u8, alt: u8) -> Result<(), HostError> {
        let handle = self
            .interfaces
            .get(&interface)
            .ok_or_else(|| HostError::new(HostErrorKind::NotFound, "interface is not claimed"))?;
        handle.set_alt_setting(alt).wait().map_err(host_error)
    }

    fn reset(&mut self) -> Result<(), HostError> {
        self.device.reset().wait().map_err(host_error)
    }

    fn attach_kernel_drivers(&mut self) -> Result<(), HostError> {
        // USBDEVFS_CONNECT per interface; a no-op on macOS, where the OS matches drivers again
        // by itself. Linux answers EBUSY where a driver is already bound (devio.c), as after
        // dropping a claimed interface, which nusb follows with its own CONNECT: that interface
        // is where it should be, not an error (seen in the QEMU host suite: every unbind failed).
        for n in self.interface_numbers() {
            if self.interfaces.contains_key(&n) {
                continue;
            }
            match self.device.attach_kernel_driver(n) {
                Err(e) if e.kind() == nusb::ErrorKind::Busy => {}
                other => other.map_err(host_error)?,
            }
        }
        Ok(())
    }
}

/// A bulk or interrupt endpoint's nusb queue.
struct Queue<T: BulkOrInterrupt, D: EndpointDirection> {
    endpoint: nusb::Endpoint<T, D>,
    /// IN buffers for reuse (zero-copy where the OS allows).
    pool: BufferPool,
}

impl<T: BulkOrInterrupt, D: EndpointDirection> Queue<T, D> {
    fn new(endpoint: nusb::Endpoint<T, D>) -> Self {
        Queue {
            endpoint,
            pool: BufferPool::default(),
        }
    }
}

impl<T, D> EndpointQueue for Queue<T, D>
where
    T: BulkOrInterrupt + 'static,
    D: EndpointDirection + 'static,
{
    fn submit(&mut self, request: TransferRequest) {
        match request {
            TransferRequest::In { length } => {
                let endpoint = &self.endpoint;
                let buffer = self.pool.take(length, |len| endpoint.allocate(len));
                self.endpoint.submit(buffer)
            }
            TransferRequest::Out { data } => {
                // A pooled buffer is one the OS can take without a copy of its own (usbfs
                // maps it); the payload is copied into it once.
                let endpoint = &self.endpoint;
                let mut buffer = self.pool.take(data.len(), |len| endpoint.allocate(len));
                buffer.extend_from_slice(&data);
                self.endpoint.submit(buffer)
            }
        }
    }

    fn poll_next_complete(&mut self, cx: &mut Context<'_>) -> Poll<TransferDone> {
        self.endpoint.poll_next_complete(cx).map(|c| {
            let actual_length = c.actual_len;
            let data = if D::DIR == Direction::In {
                // The buffer's length is what arrived (actual_len); lent, not copied.
                self.pool.lend(c.buffer)
            } else {
                self.pool.give_back(c.buffer);
                Bytes::new()
            };
            TransferDone {
                data,
                actual_length,
                status: c.status.map_err(xfer_error),
            }
        })
    }

    fn pending(&self) -> usize {
        self.endpoint.pending()
    }

    fn cancel_all(&mut self) {
        self.endpoint.cancel_all();
    }

    fn clear_halt(&mut self) -> BoxFuture<'static, Result<(), HostError>> {
        let clear = self.endpoint.clear_halt().into_future();
        Box::pin(async move { clear.await.map_err(host_error) })
    }
}

/// Arrivals and departures of host devices, from nusb's watcher (udevd's events on Linux).
pub struct NusbHotplugWatch {
    events: nusb::hotplug::HotplugWatch,
    /// Busids of the devices seen, so that a departure can name its busid.
    known: HashMap<nusb::DeviceId, String>,
}

impl NusbHotplugWatch {
    /// Starts watching. Blocks briefly: it lists the present devices.
    pub fn new() -> Result<NusbHotplugWatch, HostError> {
        let events = nusb::watch_devices().map_err(host_error)?;
        let known = nusb::list_devices()
            .wait()
            .map_err(host_error)?
            .filter_map(|d| Some((d.id(), device_facts::busid(&d)?)))
            .collect();
        Ok(NusbHotplugWatch { events, known })
    }

    /// The next arrival or departure of a device that has a busid (root hubs are skipped).
    pub async fn next(&mut self) -> Option<HotplugEvent> {
        loop {
            let event = poll_fn(|cx| Pin::new(&mut self.events).poll_next(cx)).await?;
            match event {
                nusb::hotplug::HotplugEvent::Connected(d) => {
                    if let Some(info) = describe(&d) {
                        self.known.insert(d.id(), info.busid.clone());
                        return Some(HotplugEvent::Arrived(info));
                    }
                }
                nusb::hotplug::HotplugEvent::Disconnected(id) => {
                    return Some(HotplugEvent::Left {
                        busid: self.known.remove(&id),
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speeds_are_linux_codes() {
        assert_eq!(speed(Some(nusb::Speed::Super)) as u32, 5);
        assert_eq!(speed(Some(nusb::Speed::SuperPlus)) as u32, 6);
        assert_eq!(speed(Some(nusb::Speed::High)) as u32, 3);
        assert_eq!(speed(None) as u32, 0);
    }
}
