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

/// One configuration: interface 0, vendor class, bulk IN and OUT of `max_packet` bytes.
fn configuration(value: u8, max_packet: u16) -> Vec<u8> {
    let string = if value == CONFIG_SOURCE_SINK {
        STRING_SOURCE_SINK
    } else {
        STRING_LOOPBACK
    };
    ConfigBuilder::new(value, string, SELF_POWERED, MAX_POWER_MA)
        .interface(0, 0, (VENDOR_SPECIFIC, 0, 0), 2, string)
        .endpoint(EP_IN, transfer_type::BULK, max_packet, 0)
        .endpoint(EP_OUT, transfer_type::BULK, max_packet, 0)
        .build()
}

/// The high-speed descriptors the framework serves.
pub fn descriptors() -> Descriptors {
    Descriptors {
        speed: Speed::High,
        device: device().to_bytes(),
        configurations: vec![
            configuration(CONFIG_SOURCE_SINK, HIGH_SPEED_BULK),
            configuration(CONFIG_LOOPBACK, HIGH_SPEED_BULK),
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
            let mut config = configuration(value, FULL_SPEED_BULK);
            config[1] = descriptor_type::OTHER_SPEED_CONFIGURATION;
            config
        })
        .to_vec()
}
