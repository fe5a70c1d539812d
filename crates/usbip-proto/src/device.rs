//! The 312-byte device record (`struct usbip_usb_device`) and the 4-byte interface record
//! (`struct usbip_usb_interface`) that device-list and import replies carry.

use crate::error::ProtoError;

pub const DEVICE_RECORD_LEN: usize = 0x138;
pub const INTERFACE_RECORD_LEN: usize = 4;
const PATH_LEN: usize = 256;
const BUSID_LEN: usize = 32;

/// Linux `enum usb_device_speed`, the value the device record carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Speed {
    Unknown = 0,
    Low = 1,
    Full = 2,
    High = 3,
    Wireless = 4,
    Super = 5,
    SuperPlus = 6,
}

impl Speed {
    pub fn from_u32(v: u32) -> Speed {
        match v {
            1 => Speed::Low,
            2 => Speed::Full,
            3 => Speed::High,
            4 => Speed::Wireless,
            5 => Speed::Super,
            6 => Speed::SuperPlus,
            _ => Speed::Unknown,
        }
    }

    /// The name sysfs gives the speed, in Mbit/s.
    pub fn as_mbps(self) -> &'static str {
        match self {
            Speed::Unknown => "unknown",
            Speed::Low => "1.5",
            Speed::Full => "12",
            Speed::High => "480",
            Speed::Wireless => "53.3-480",
            Speed::Super => "5000",
            Speed::SuperPlus => "10000",
        }
    }
}

/// One device as a server describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRecord {
    /// sysfs path on Linux servers; any descriptive path elsewhere. At most 255 bytes are sent.
    pub path: String,
    /// e.g. `1-2.3`. At most 31 bytes are sent.
    pub busid: String,
    pub busnum: u32,
    pub devnum: u32,
    pub speed: Speed,
    pub id_vendor: u16,
    pub id_product: u16,
    pub bcd_device: u16,
    pub device_class: u8,
    pub device_subclass: u8,
    pub device_protocol: u8,
    pub configuration_value: u8,
    pub num_configurations: u8,
    pub num_interfaces: u8,
}

impl DeviceRecord {
    /// The devid the client puts in every URB header: `busnum << 16 | devnum`.
    pub fn devid(&self) -> u32 {
        (self.busnum << 16) | (self.devnum & 0xffff)
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.resize(start + DEVICE_RECORD_LEN, 0);
        let rec = &mut out[start..];
        put_str(&mut rec[..PATH_LEN], &self.path);
        put_str(&mut rec[PATH_LEN..PATH_LEN + BUSID_LEN], &self.busid);
        rec[0x120..0x124].copy_from_slice(&self.busnum.to_be_bytes());
        rec[0x124..0x128].copy_from_slice(&self.devnum.to_be_bytes());
        rec[0x128..0x12c].copy_from_slice(&(self.speed as u32).to_be_bytes());
        rec[0x12c..0x12e].copy_from_slice(&self.id_vendor.to_be_bytes());
        rec[0x12e..0x130].copy_from_slice(&self.id_product.to_be_bytes());
        rec[0x130..0x132].copy_from_slice(&self.bcd_device.to_be_bytes());
        rec[0x132] = self.device_class;
        rec[0x133] = self.device_subclass;
        rec[0x134] = self.device_protocol;
        rec[0x135] = self.configuration_value;
        rec[0x136] = self.num_configurations;
        rec[0x137] = self.num_interfaces;
    }

    /// Decodes exactly [`DEVICE_RECORD_LEN`] bytes.
    pub fn decode(rec: &[u8; DEVICE_RECORD_LEN]) -> DeviceRecord {
        let u32_at = |o: usize| u32::from_be_bytes([rec[o], rec[o + 1], rec[o + 2], rec[o + 3]]);
        let u16_at = |o: usize| u16::from_be_bytes([rec[o], rec[o + 1]]);
        DeviceRecord {
            path: get_str(&rec[..PATH_LEN]),
            busid: get_str(&rec[PATH_LEN..PATH_LEN + BUSID_LEN]),
            busnum: u32_at(0x120),
            devnum: u32_at(0x124),
            speed: Speed::from_u32(u32_at(0x128)),
            id_vendor: u16_at(0x12c),
            id_product: u16_at(0x12e),
            bcd_device: u16_at(0x130),
            device_class: rec[0x132],
            device_subclass: rec[0x133],
            device_protocol: rec[0x134],
            configuration_value: rec[0x135],
            num_configurations: rec[0x136],
            num_interfaces: rec[0x137],
        }
    }
}

/// Class triplet of one interface of the active configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct InterfaceRecord {
    pub class: u8,
    pub subclass: u8,
    pub protocol: u8,
}

impl InterfaceRecord {
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[self.class, self.subclass, self.protocol, 0]);
    }
}

/// A device record with the interface list the device-list reply appends to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedDevice {
    pub record: DeviceRecord,
    pub interfaces: Vec<InterfaceRecord>,
}

/// Copies `s` NUL-padded into `field`, truncated (at a character boundary, so the field stays
/// UTF-8) so that a terminating NUL always remains.
fn put_str(field: &mut [u8], s: &str) {
    let mut n = s.len().min(field.len() - 1);
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    field[..n].copy_from_slice(&s.as_bytes()[..n]);
}

/// Reads a NUL-terminated field leniently (a peer's path is informational): at most
/// `field.len() - 1` bytes, the last being the terminator's place, and bytes that are not UTF-8
/// become one '?' each, so that the string still fits its field when encoded again.
fn get_str(field: &[u8]) -> String {
    let field = &field[..field.len() - 1];
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    let bytes = &field[..end];
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(_) => bytes
            .iter()
            .map(|&b| if b.is_ascii() { char::from(b) } else { '?' })
            .collect(),
    }
}

/// Parses the 32-byte busid field of OP_REQ_IMPORT strictly: NUL-terminated printable ASCII.
pub(crate) fn parse_busid(field: &[u8]) -> Result<String, ProtoError> {
    let end = field
        .iter()
        .position(|&b| b == 0)
        .ok_or(ProtoError::BadBusid)?;
    let s = &field[..end];
    if s.iter().all(|b| b.is_ascii_graphic()) {
        Ok(String::from_utf8_lossy(s).into_owned())
    } else {
        Err(ProtoError::BadBusid)
    }
}

pub(crate) fn busid_field(busid: &str) -> [u8; BUSID_LEN] {
    let mut f = [0u8; BUSID_LEN];
    put_str(&mut f, busid);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> DeviceRecord {
        DeviceRecord {
            path: "/sys/devices/pci0000:00/0000:00:1d.0/usb1/1-1".into(),
            busid: "1-1".into(),
            busnum: 1,
            devnum: 2,
            speed: Speed::High,
            id_vendor: 0x0525,
            id_product: 0xa4a0,
            bcd_device: 0x0100,
            device_class: 0xff,
            device_subclass: 0,
            device_protocol: 0,
            configuration_value: 1,
            num_configurations: 1,
            num_interfaces: 1,
        }
    }

    #[test]
    fn record_layout_matches_the_kernel() {
        let mut out = Vec::new();
        sample().encode(&mut out);
        assert_eq!(out.len(), 312);
        assert_eq!(&out[0x100..0x104], b"1-1\0");
        assert_eq!(&out[0x120..0x128], &[0, 0, 0, 1, 0, 0, 0, 2]);
        assert_eq!(&out[0x128..0x12c], &[0, 0, 0, 3]);
        assert_eq!(&out[0x12c..0x132], &[0x05, 0x25, 0xa4, 0xa0, 0x01, 0x00]);
        assert_eq!(&out[0x132..0x138], &[0xff, 0, 0, 1, 1, 1]);
        let arr: [u8; DEVICE_RECORD_LEN] = out.try_into().unwrap();
        assert_eq!(DeviceRecord::decode(&arr), sample());
    }

    #[test]
    fn overlong_strings_keep_a_terminating_nul() {
        let mut rec = sample();
        rec.busid = "x".repeat(40);
        let mut out = Vec::new();
        rec.encode(&mut out);
        assert_eq!(out[0x100 + 31], 0);
        assert_eq!(parse_busid(&out[0x100..0x120]).unwrap(), "x".repeat(31));
    }

    /// Found by fuzzing (codec_handshake): a record with a non-UTF-8 or unterminated string
    /// decoded to a string that no longer fit its field, so encoding it again changed it.
    #[test]
    fn decoded_strings_round_trip_whatever_the_bytes() {
        let mut bytes = Vec::new();
        sample().encode(&mut bytes);
        bytes[..PATH_LEN].fill(0xe9); // Latin-1, no terminator
        bytes[PATH_LEN..PATH_LEN + BUSID_LEN].fill(0xff);
        let rec = DeviceRecord::decode(&bytes[..].try_into().unwrap());
        assert_eq!(rec.path, "?".repeat(PATH_LEN - 1));
        assert_eq!(rec.busid, "?".repeat(BUSID_LEN - 1));
        let mut again = Vec::new();
        rec.encode(&mut again);
        assert_eq!(DeviceRecord::decode(&again[..].try_into().unwrap()), rec);

        // Truncating a long non-ASCII string never splits a character.
        let mut long = sample();
        long.busid = "é".repeat(20); // 40 bytes; the field holds 31
        let mut out = Vec::new();
        long.encode(&mut out);
        assert_eq!(
            DeviceRecord::decode(&out[..].try_into().unwrap()).busid,
            "é".repeat(15)
        );
    }

    #[test]
    fn busid_must_be_terminated_printable_ascii() {
        assert_eq!(parse_busid(&[b'a'; 32]), Err(ProtoError::BadBusid));
        let mut f = [0u8; 32];
        f[0] = b'1';
        f[1] = 0x07;
        assert_eq!(parse_busid(&f), Err(ProtoError::BadBusid));
        assert_eq!(parse_busid(&busid_field("3-1.2")).unwrap(), "3-1.2");
    }
}
