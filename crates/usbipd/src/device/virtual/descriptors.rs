//! Builders for the standard USB descriptors virtual devices present.

use bytes::Bytes;
use usbip_proto::Speed;

use crate::device::setup::descriptor_type;

/// Everything a virtual device tells the host about itself. The descriptors are `Bytes` so that
/// answering GET_DESCRIPTOR hands out a reference, not a copy: no allocation per control URB.
#[derive(Debug, Clone)]
pub struct Descriptors {
    pub speed: Speed,
    /// The 18-byte device descriptor.
    pub device: Bytes,
    /// Whole configuration descriptors (configuration, interfaces, endpoints, class-specific),
    /// in the order GET_DESCRIPTOR(CONFIGURATION, index) returns them.
    pub configurations: Vec<Bytes>,
    /// String descriptors 1..=n (index 0, the language table, is implied: US English).
    pub strings: Vec<String>,
}

/// Fields of the device descriptor.
#[derive(Debug, Clone, Copy)]
pub struct DeviceDescriptor {
    pub usb_version: u16,
    pub class: u8,
    pub subclass: u8,
    pub protocol: u8,
    pub max_packet_size0: u8,
    pub vendor: u16,
    pub product: u16,
    pub device_version: u16,
    pub manufacturer_string: u8,
    pub product_string: u8,
    pub serial_string: u8,
    pub num_configurations: u8,
}

impl DeviceDescriptor {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut d = vec![18, descriptor_type::DEVICE];
        d.extend_from_slice(&self.usb_version.to_le_bytes());
        d.extend_from_slice(&[
            self.class,
            self.subclass,
            self.protocol,
            self.max_packet_size0,
        ]);
        d.extend_from_slice(&self.vendor.to_le_bytes());
        d.extend_from_slice(&self.product.to_le_bytes());
        d.extend_from_slice(&self.device_version.to_le_bytes());
        d.extend_from_slice(&[
            self.manufacturer_string,
            self.product_string,
            self.serial_string,
            self.num_configurations,
        ]);
        d
    }
}

/// Endpoint transfer types (bmAttributes bits 1:0).
pub mod transfer_type {
    pub const CONTROL: u8 = 0;
    pub const ISOCHRONOUS: u8 = 1;
    pub const BULK: u8 = 2;
    pub const INTERRUPT: u8 = 3;
}

/// Builds one configuration descriptor with its interfaces and endpoints.
pub struct ConfigBuilder {
    buf: Vec<u8>,
    interfaces: Vec<u8>,
}

impl ConfigBuilder {
    /// `attributes` is bmAttributes (0x80 bus powered, | 0x40 self powered, | 0x20 remote wakeup).
    pub fn new(value: u8, string: u8, attributes: u8, max_power_ma: u16) -> ConfigBuilder {
        let power = (max_power_ma / 2).min(255) as u8;
        ConfigBuilder {
            buf: vec![
                9,
                descriptor_type::CONFIGURATION,
                0,
                0,
                0,
                value,
                string,
                attributes | 0x80,
                power,
            ],
            interfaces: Vec::new(),
        }
    }

    pub fn interface(
        mut self,
        number: u8,
        alt: u8,
        class: (u8, u8, u8),
        num_endpoints: u8,
        string: u8,
    ) -> Self {
        if !self.interfaces.contains(&number) {
            self.interfaces.push(number);
        }
        self.buf.extend_from_slice(&[
            9,
            descriptor_type::INTERFACE,
            number,
            alt,
            num_endpoints,
            class.0,
            class.1,
            class.2,
            string,
        ]);
        self
    }

    pub fn endpoint(mut self, address: u8, transfer: u8, max_packet: u16, interval: u8) -> Self {
        let mp = max_packet.to_le_bytes();
        self.buf.extend_from_slice(&[
            7,
            descriptor_type::ENDPOINT,
            address,
            transfer,
            mp[0],
            mp[1],
            interval,
        ]);
        self
    }

    /// Appends a class-specific descriptor as is.
    pub fn raw(mut self, bytes: &[u8]) -> Self {
        self.buf.extend_from_slice(bytes);
        self
    }

    pub fn build(mut self) -> Vec<u8> {
        let total = (self.buf.len() as u16).to_le_bytes();
        self.buf[2] = total[0];
        self.buf[3] = total[1];
        self.buf[4] = self.interfaces.len() as u8;
        self.buf
    }
}

/// A string descriptor in UTF-16LE.
pub fn string_descriptor(s: &str) -> Vec<u8> {
    let mut d = vec![0, descriptor_type::STRING];
    for unit in s.encode_utf16().take(126) {
        d.extend_from_slice(&unit.to_le_bytes());
    }
    d[0] = d.len() as u8;
    d
}

/// One interface descriptor found in a configuration descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InterfaceInfo {
    pub number: u8,
    pub alt: u8,
    pub class: u8,
    pub subclass: u8,
    pub protocol: u8,
}

/// One endpoint descriptor found in a configuration descriptor, with the interface it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointInfo {
    pub interface: u8,
    pub alt: u8,
    pub address: u8,
    pub attributes: u8,
    pub max_packet_size: u16,
    /// High-bandwidth transactions per microframe (wMaxPacketSize bits 12:11, plus one).
    pub transactions: u8,
    pub interval: u8,
}

/// Walks a whole configuration descriptor. Tolerates truncation: stops at the first
/// descriptor whose length is impossible.
pub fn parse_configuration(config: &[u8]) -> (Vec<InterfaceInfo>, Vec<EndpointInfo>) {
    let mut interfaces = Vec::new();
    let mut endpoints = Vec::new();
    let mut pos = 0;
    let mut current: Option<(u8, u8)> = None;
    while pos + 2 <= config.len() {
        let len = config[pos] as usize;
        if len < 2 || pos + len > config.len() {
            break;
        }
        let d = &config[pos..pos + len];
        match d[1] {
            descriptor_type::INTERFACE if len >= 9 => {
                current = Some((d[2], d[3]));
                interfaces.push(InterfaceInfo {
                    number: d[2],
                    alt: d[3],
                    class: d[5],
                    subclass: d[6],
                    protocol: d[7],
                });
            }
            descriptor_type::ENDPOINT if len >= 7 => {
                if let Some((interface, alt)) = current {
                    endpoints.push(EndpointInfo {
                        interface,
                        alt,
                        address: d[2],
                        attributes: d[3],
                        max_packet_size: u16::from_le_bytes([d[4], d[5]]) & 0x7ff,
                        transactions: (((d[5] >> 3) & 0x3) + 1).min(3),
                        interval: d[6],
                    });
                }
            }
            _ => {}
        }
        pos += len;
    }
    (interfaces, endpoints)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_builder_fills_total_length_and_interface_count() {
        let c = ConfigBuilder::new(1, 0, 0, 100)
            .interface(0, 0, (8, 6, 0x50), 2, 0)
            .endpoint(0x81, transfer_type::BULK, 512, 0)
            .endpoint(0x02, transfer_type::BULK, 512, 0)
            .interface(0, 1, (8, 6, 0x50), 0, 0)
            .build();
        assert_eq!(c.len(), 9 + 9 + 7 + 7 + 9);
        assert_eq!(u16::from_le_bytes([c[2], c[3]]) as usize, c.len());
        assert_eq!(c[4], 1, "alternate settings are not extra interfaces");
        assert_eq!(c[7], 0x80);
        assert_eq!(c[8], 50);
        let (ifs, eps) = parse_configuration(&c);
        assert_eq!(ifs.len(), 2);
        assert_eq!(eps[1].address, 0x02);
        assert_eq!(eps[1].max_packet_size, 512);
    }

    #[test]
    fn strings_are_utf16le() {
        assert_eq!(string_descriptor("Hé"), vec![6, 3, b'H', 0, 0xe9, 0]);
    }
}
