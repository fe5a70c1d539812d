//! macOS facts about a host device: busid and bus number from the IOKit location id.
//!
//! Keep this tiny: it is type-checked for the Apple targets (`scripts/check-apple.sh`), not run
//! on the project's Linux machines.

use nusb::DeviceInfo;

use crate::platform::busid::macos_busid;
use crate::platform::RawDescriptors;

pub fn busid(info: &DeviceInfo) -> Option<String> {
    macos_busid(info.location_id())
}

pub fn busnum(info: &DeviceInfo) -> u32 {
    info.location_id() >> 24
}

pub fn path(info: &DeviceInfo) -> String {
    format!("IOService:location {:#010x}", info.location_id())
}

pub fn descriptors(_info: &DeviceInfo) -> RawDescriptors {
    // Only an opened device gives its configuration descriptors on macOS.
    RawDescriptors::default()
}
