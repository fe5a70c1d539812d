//! Linux facts about a host device that nusb does not give: busid, sysfs path and the raw
//! descriptors of every configuration, read from sysfs without opening the device.
//!
//! Only reads sysfs; never opens a usbfs node.

use std::fs;

use nusb::DeviceInfo;

use crate::platform::busid::linux_busid;
use crate::platform::RawDescriptors;

pub fn busid(info: &DeviceInfo) -> Option<String> {
    linux_busid(u32::from(info.busnum()), info.port_chain())
}

pub fn busnum(info: &DeviceInfo) -> u32 {
    u32::from(info.busnum())
}

pub fn path(info: &DeviceInfo) -> String {
    info.sysfs_path().display().to_string()
}

pub fn descriptors(info: &DeviceInfo) -> RawDescriptors {
    let dir = info.sysfs_path();
    let active = fs::read_to_string(dir.join("bConfigurationValue"))
        .ok()
        .and_then(|s| s.trim().parse::<u8>().ok())
        .unwrap_or(0);
    // The device descriptor followed by every configuration descriptor, as the kernel read
    // them at enumeration.
    let raw = fs::read(dir.join("descriptors")).unwrap_or_default();
    RawDescriptors::split(active, &raw)
}
