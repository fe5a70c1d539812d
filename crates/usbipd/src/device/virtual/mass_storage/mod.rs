//! A USB mass-storage device (Bulk-Only Transport, SCSI transparent command set) backed by a
//! disk image file, for Linux's usb-storage and sd drivers to use like a USB stick.
//!
//! `bot` frames commands, `scsi` answers them, `image` does the file I/O, `session` runs the
//! transport state machine. This module only describes the device and builds it.

mod bot;
mod image;
mod scsi;
mod session;

#[cfg(test)]
mod tests;

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::Arc;

use usbip_proto::Speed;

use super::descriptors::transfer_type;
use super::{
    BusPosition, ConfigBuilder, Descriptors, DeviceDescriptor, Function, FunctionSession,
    VirtualDevice,
};
use crate::device::Completer;
pub use image::{temporary as temporary_image, Image};
use scsi::{Identity, Lun};

/// pid.codes test VID and the PID this project uses for its disk.
const VENDOR_ID: u16 = 0x1209;
const PRODUCT_ID: u16 = 0x0003;

/// Interface class triplet: mass storage, SCSI transparent command set, Bulk-Only Transport.
const CLASS_MASS_STORAGE: (u8, u8, u8) = (0x08, 0x06, 0x50);

const INTERFACE: u8 = 0;
const EP_IN: u8 = 0x81;
const EP_OUT: u8 = 0x02;
/// High-speed bulk max packet size.
const MAX_PACKET: usize = 512;

/// A virtual disk: the [`Function`] to put in a [`VirtualDevice`].
pub struct MassStorage {
    descriptors: Descriptors,
    image: Arc<Image>,
}

impl MassStorage {
    /// Opens the image at `path`; `read_only` makes the disk write-protected.
    pub fn open(path: impl AsRef<Path>, read_only: bool) -> io::Result<MassStorage> {
        Ok(MassStorage::from_image(Image::open(path, read_only)?))
    }

    /// Uses an already open image file.
    pub fn from_file(file: File, read_only: bool) -> io::Result<MassStorage> {
        Ok(MassStorage::from_image(Image::from_file(file, read_only)?))
    }

    pub fn from_image(image: Image) -> MassStorage {
        let device = DeviceDescriptor {
            usb_version: 0x0200,
            class: 0, // defined by the interface
            subclass: 0,
            protocol: 0,
            max_packet_size0: 64,
            vendor: VENDOR_ID,
            product: PRODUCT_ID,
            device_version: 0x0100,
            manufacturer_string: 1,
            product_string: 2,
            serial_string: 3,
            num_configurations: 1,
        };
        let config = ConfigBuilder::new(1, 0, 0x80, 100)
            .interface(INTERFACE, 0, CLASS_MASS_STORAGE, 2, 0)
            .endpoint(EP_IN, transfer_type::BULK, MAX_PACKET as u16, 0)
            .endpoint(EP_OUT, transfer_type::BULK, MAX_PACKET as u16, 0)
            .build();
        MassStorage {
            descriptors: Descriptors {
                speed: Speed::High,
                device: device.to_bytes().into(),
                configurations: vec![config.into()],
                strings: vec![
                    "usbipd".to_string(),
                    "Virtual Mass Storage".to_string(),
                    // usb-storage wants at least 12 hex digits here; the image gives 16.
                    image.serial().to_string(),
                ],
            },
            image: Arc::new(image),
        }
    }

    /// Exports the disk at `position`.
    pub fn into_device(self, position: BusPosition) -> VirtualDevice<MassStorage> {
        VirtualDevice::new(self, position)
    }

    /// Capacity in 512-byte blocks.
    pub fn blocks(&self) -> u64 {
        self.image.blocks()
    }

    pub fn read_only(&self) -> bool {
        self.image.read_only()
    }

    /// Makes every acknowledged write durable (fdatasync if anything was written since the
    /// last sync); says whether there was anything to sync. Blocks: for the server's stop.
    pub fn flush(&self) -> io::Result<bool> {
        self.image.flush()
    }

    /// The image's path, for messages.
    pub fn image_name(&self) -> &str {
        self.image.name()
    }

    fn identity(&self) -> Identity {
        Identity {
            vendor: "usbipd".to_string(),
            product: "Virtual Disk".to_string(),
            revision: "0100".to_string(),
            serial: self.image.serial().to_string(),
        }
    }
}

/// Opens the image at `path` and makes it an exportable device at `position`.
pub fn new(
    path: impl AsRef<Path>,
    read_only: bool,
    position: BusPosition,
) -> io::Result<VirtualDevice<MassStorage>> {
    Ok(MassStorage::open(path, read_only)?.into_device(position))
}

impl Function for MassStorage {
    fn descriptors(&self) -> &Descriptors {
        &self.descriptors
    }

    fn open(&self, completer: Completer) -> Box<dyn FunctionSession> {
        let lun = Lun::new(self.image.blocks(), self.image.read_only(), self.identity());
        Box::new(session::Session::new(self.image.clone(), lun, completer))
    }
}
