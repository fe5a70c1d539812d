//! macOS facts about a host device: busid and bus number from the IOKit location id.
//!
//! Keep this tiny: nothing here can be compiled on the project's Linux machines.

use nusb::DeviceInfo;

use super::busid::macos_busid;
use super::nusb_backend::{Platform, RawDescriptors};

pub(super) struct Current;

impl Platform for Current {
    fn busid(info: &DeviceInfo) -> Option<String> {
        macos_busid(info.location_id())
    }

    fn busnum(info: &DeviceInfo) -> u32 {
        info.location_id() >> 24
    }

    fn path(info: &DeviceInfo) -> String {
        format!("IOService:location {:#010x}", info.location_id())
    }

    fn descriptors(_info: &DeviceInfo) -> RawDescriptors {
        // Only an opened device gives its configuration descriptors on macOS.
        RawDescriptors::default()
    }
}
