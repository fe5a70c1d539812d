//! Host devices: real USB devices of this machine, passed through to a client with nusb.
//!
//! [`HostDevice`] is a [`Device`] over a [`HostBackend`]: it describes the device from what the
//! backend enumerated and, on open, claims every interface and starts a session that maps URBs
//! onto the backend's transfer queues. The real backend is [`NusbBackend`] (Linux usbfs, macOS
//! IOKit); tests use a double. Nothing in this module touches a device without a client.

pub mod backend;
#[cfg(host_usb)]
mod buffer_pool;
pub mod capture;
pub mod claimed;
mod endpoint;
pub mod errors;
#[cfg(host_usb)]
mod hotplug;
pub mod intercept;
#[cfg(host_usb)]
pub mod nusb_backend;
mod session;
pub mod unmount;

#[cfg(test)]
pub(crate) mod double;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use tokio::runtime::Handle;
use usbip_proto::{DeviceRecord, ExportedDevice};

pub use backend::{HostBackend, HostDeviceInfo, HostDeviceOps, HotplugEvent};
pub use claimed::ClaimedHostDevice;
pub use errors::{ClaimError, ClaimReason, HostError, HostErrorKind};
#[cfg(host_usb)]
pub use hotplug::HotplugWatch;
#[cfg(host_usb)]
pub use nusb_backend::NusbBackend;

use super::{Completer, Device, DeviceNames, DeviceSession, OpenError};
use session::HostSession;

/// A host device offered to clients.
pub struct HostDevice {
    backend: Arc<dyn HostBackend>,
    info: HostDeviceInfo,
}

impl HostDevice {
    /// A device as the backend enumerated it.
    pub fn new(backend: Arc<dyn HostBackend>, info: HostDeviceInfo) -> HostDevice {
        HostDevice { backend, info }
    }

    /// The device that has `busid` now. Blocks (enumeration reads sysfs on Linux).
    pub fn find(backend: Arc<dyn HostBackend>, busid: &str) -> Result<HostDevice, HostError> {
        let info = backend
            .list()?
            .into_iter()
            .find(|d| d.busid == busid)
            .ok_or_else(|| {
                HostError::new(HostErrorKind::NotFound, format!("no host device {busid}"))
            })?;
        Ok(HostDevice::new(backend, info))
    }

    pub fn info(&self) -> &HostDeviceInfo {
        &self.info
    }

    /// The device record of an enumerated device.
    pub(super) fn describe_info(i: &HostDeviceInfo) -> ExportedDevice {
        ExportedDevice {
            record: DeviceRecord {
                path: i.path.clone(),
                busid: i.busid.clone(),
                busnum: i.busnum,
                devnum: i.devnum,
                speed: i.speed,
                id_vendor: i.vendor_id,
                id_product: i.product_id,
                bcd_device: i.device_version,
                device_class: i.class,
                device_subclass: i.subclass,
                device_protocol: i.protocol,
                configuration_value: i.configuration_value,
                num_configurations: i.num_configurations,
                num_interfaces: i.interfaces.len() as u8,
            },
            interfaces: i.interfaces.clone(),
        }
    }
}

impl Device for HostDevice {
    fn describe(&self) -> ExportedDevice {
        HostDevice::describe_info(&self.info)
    }

    /// The strings the OS read at enumeration, so that `usbipd list` still names the device
    /// once it is shared.
    fn names(&self) -> DeviceNames {
        DeviceNames {
            manufacturer: self.info.manufacturer.clone(),
            product: self.info.product.clone(),
            serial: self.info.serial.clone(),
        }
    }

    /// Opens the device and claims every interface of its active configuration (detaching
    /// kernel drivers). This blocks for the usbfs open and the claims, a few milliseconds.
    fn open(&self, completer: Completer) -> Result<Box<dyn DeviceSession>, OpenError> {
        let runtime = Handle::try_current()
            .map_err(|_| OpenError::Failed("host devices need a tokio runtime".into()))?;
        let mut ops = self.backend.open(&self.info.busid)?;
        if let Err(e) = ops.claim_interfaces() {
            ops.release_interfaces();
            return Err(e.into());
        }
        Ok(Box::new(HostSession::start(
            ops,
            completer,
            runtime,
            self.info.busid.clone(),
        )))
    }
}
