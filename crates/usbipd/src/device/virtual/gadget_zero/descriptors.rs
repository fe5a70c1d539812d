//! What Gadget Zero tells the host about itself, laid out like the Linux g_zero gadget at high
//! speed, so that the kernel's usbtest driver binds and its chapter-9 checks pass.
//!
//! Only data here: no state, no behaviour.

use usbip_proto::Speed;

use crate::device::r#virtual::descriptors::transfer_type;
use crate::device::r#virtual::{ConfigBuilder, Descriptors, DeviceDescriptor};
use crate::device::setup::descriptor_type;

/// NetChip's IDs for Linux-USB "Gadget Zero", which usbtest matches.
pub const VENDOR_ID: u16 = 0x0525;
pub const PRODUCT_ID: u16 = 0xa4a0;

/// g_zero's configuration values; source/sink comes first, so hosts choose it by default.
pub const CONFIG_SOURCE_SINK: u8 = 3;
pub const CONFIG_LOOPBACK: u8 = 2;

/// Both configurations use one interface with these two bulk endpoints.
pub const EP_IN: u8 = 0x81;
pub const EP_OUT: u8 = 0x01;

/// Source/sink's alternate setting 1 adds an isochronous source and sink, as g_zero's
/// f_sourcesink does (module defaults: isoc_maxpacket 1024, isoc_mult 0, isoc_interval 4).
pub const ALT_ISO: u8 = 1;
pub const EP_ISO_IN: u8 = 0x82;
pub const EP_ISO_OUT: u8 = 0x02;
const HIGH_SPEED_ISO: u16 = 1024;
/// A full-speed isochronous packet is at most 1023 bytes.
const FULL_SPEED_ISO: u16 = 1023;
/// 2^(4-1) = 8 microframes (1 ms) at high speed, 8 frames at full speed.
const ISO_INTERVAL: u8 = 4;

const USB_2_0: u16 = 0x0200;
const VENDOR_SPECIFIC: u8 = 0xff;
const MAX_PACKET_SIZE0: u8 = 64;
const HIGH_SPEED_BULK: u16 = 512;
const FULL_SPEED_BULK: u16 = 64;
/// bmAttributes: self powered (the builder adds the must-be-one bit 7).
const SELF_POWERED: u8 = 0x40;
/// The gadget framework's default vbus draw.
const MAX_POWER_MA: u16 = 2;

const STRING_MANUFACTURER: u8 = 1;
const STRING_PRODUCT: u8 = 2;
const STRING_SERIAL: u8 = 3;
const STRING_SOURCE_SINK: u8 = 4;
const STRING_LOOPBACK: u8 = 5;

/// The strings, in index order from 1.
fn strings() -> Vec<String> {
    [
        "usbipd",
        "Gadget Zero",
        // g_zero's default serial, long enough to take several control packets.
        "0123456789.0123456789.0123456789",
        "source and sink data",
        "loop input to output",
    ]
    .map(String::from)
    .to_vec()
}

fn device() -> DeviceDescriptor {
    DeviceDescriptor {
        usb_version: USB_2_0,
        class: VENDOR_SPECIFIC,
        subclass: 0,
        protocol: 0,
        max_packet_size0: MAX_PACKET_SIZE0,
        vendor: VENDOR_ID,
        product: PRODUCT_ID,
        device_version: 0x0100,
        manufacturer_string: STRING_MANUFACTURER,
        product_string: STRING_PRODUCT,
        serial_string: STRING_SERIAL,
        num_configurations: 2,
    }
}

/// One configuration: interface 0, vendor class, bulk IN and OUT of `bulk` bytes; source/sink
/// also has alternate setting 1 with the same bulk endpoints and isochronous IN and OUT of
/// `iso` bytes (f_loopback has no isochronous endpoints).
fn configuration(value: u8, bulk: u16, iso: u16) -> Vec<u8> {
    let class = (VENDOR_SPECIFIC, 0, 0);
    if value != CONFIG_SOURCE_SINK {
        return ConfigBuilder::new(value, STRING_LOOPBACK, SELF_POWERED, MAX_POWER_MA)
            .interface(0, 0, class, 2, STRING_LOOPBACK)
            .endpoint(EP_IN, transfer_type::BULK, bulk, 0)
            .endpoint(EP_OUT, transfer_type::BULK, bulk, 0)
            .build();
    }
    let string = STRING_SOURCE_SINK;
    ConfigBuilder::new(value, string, SELF_POWERED, MAX_POWER_MA)
        .interface(0, 0, class, 2, string)
        .endpoint(EP_IN, transfer_type::BULK, bulk, 0)
        .endpoint(EP_OUT, transfer_type::BULK, bulk, 0)
        .interface(0, ALT_ISO, class, 4, string)
        .endpoint(EP_IN, transfer_type::BULK, bulk, 0)
        .endpoint(EP_OUT, transfer_type::BULK, bulk, 0)
        .endpoint(EP_ISO_IN, transfer_type::ISOCHRONOUS, iso, ISO_INTERVAL)
        .endpoint(EP_ISO_OUT, transfer_type::ISOCHRONOUS, iso, ISO_INTERVAL)
        .build()
}

/// The high-speed descriptors the framework serves.
pub fn descriptors() -> Descriptors {
    Descriptors {
        speed: Speed::High,
        device: device().to_bytes().into(),
        configurations: vec![
            configuration(CONFIG_SOURCE_SINK, HIGH_SPEED_BULK, HIGH_SPEED_ISO).into(),
            configuration(CONFIG_LOOPBACK, HIGH_SPEED_BULK, HIGH_SPEED_ISO).into(),
        ],
        strings: strings(),
    }
}

/// The device qualifier a high-speed USB 2.0 device must have: how it would look at full speed.
pub fn device_qualifier() -> Vec<u8> {
    let d = device();
    let usb = d.usb_version.to_le_bytes();
    vec![
        10,
        descriptor_type::DEVICE_QUALIFIER,
        usb[0],
        usb[1],
        d.class,
        d.subclass,
        d.protocol,
        d.max_packet_size0,
        d.num_configurations,
        0,
    ]
}

/// The configurations as they would be at full speed, for GET_DESCRIPTOR(OTHER_SPEED_CONFIG).
pub fn other_speed_configurations() -> Vec<Vec<u8>> {
    [CONFIG_SOURCE_SINK, CONFIG_LOOPBACK]
        .map(|value| {
            let mut config = configuration(value, FULL_SPEED_BULK, FULL_SPEED_ISO);
            config[1] = descriptor_type::OTHER_SPEED_CONFIGURATION;
            config
        })
        .to_vec()
}
