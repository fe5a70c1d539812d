//! The 8-byte USB setup packet, and the standard request numbers of USB 2.0 chapter 9.

/// A decoded setup packet (its fields are little-endian on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetupPacket {
    pub request_type: u8,
    pub request: u8,
    pub value: u16,
    pub index: u16,
    pub length: u16,
}

pub mod request {
    pub const GET_STATUS: u8 = 0x00;
    pub const CLEAR_FEATURE: u8 = 0x01;
    pub const SET_FEATURE: u8 = 0x03;
    pub const SET_ADDRESS: u8 = 0x05;
    pub const GET_DESCRIPTOR: u8 = 0x06;
    pub const SET_DESCRIPTOR: u8 = 0x07;
    pub const GET_CONFIGURATION: u8 = 0x08;
    pub const SET_CONFIGURATION: u8 = 0x09;
    pub const GET_INTERFACE: u8 = 0x0a;
    pub const SET_INTERFACE: u8 = 0x0b;
}

pub mod descriptor_type {
    pub const DEVICE: u8 = 0x01;
    pub const CONFIGURATION: u8 = 0x02;
    pub const STRING: u8 = 0x03;
    pub const INTERFACE: u8 = 0x04;
    pub const ENDPOINT: u8 = 0x05;
    pub const DEVICE_QUALIFIER: u8 = 0x06;
    pub const OTHER_SPEED_CONFIGURATION: u8 = 0x07;
    pub const BOS: u8 = 0x0f;
}

/// Feature selector of CLEAR_FEATURE/SET_FEATURE to an endpoint.
pub const ENDPOINT_HALT: u16 = 0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    Standard,
    Class,
    Vendor,
    Reserved,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recipient {
    Device,
    Interface,
    Endpoint,
    Other,
}

impl SetupPacket {
    pub fn parse(raw: &[u8; 8]) -> SetupPacket {
        SetupPacket {
            request_type: raw[0],
            request: raw[1],
            value: u16::from_le_bytes([raw[2], raw[3]]),
            index: u16::from_le_bytes([raw[4], raw[5]]),
            length: u16::from_le_bytes([raw[6], raw[7]]),
        }
    }

    pub fn to_bytes(&self) -> [u8; 8] {
        let v = self.value.to_le_bytes();
        let i = self.index.to_le_bytes();
        let l = self.length.to_le_bytes();
        [
            self.request_type,
            self.request,
            v[0],
            v[1],
            i[0],
            i[1],
            l[0],
            l[1],
        ]
    }

    /// Device-to-host?
    pub fn is_in(&self) -> bool {
        self.request_type & 0x80 != 0
    }

    pub fn kind(&self) -> RequestKind {
        match (self.request_type >> 5) & 3 {
            0 => RequestKind::Standard,
            1 => RequestKind::Class,
            2 => RequestKind::Vendor,
            _ => RequestKind::Reserved,
        }
    }

    pub fn recipient(&self) -> Recipient {
        match self.request_type & 0x1f {
            0 => Recipient::Device,
            1 => Recipient::Interface,
            2 => Recipient::Endpoint,
            _ => Recipient::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_little_endian_fields() {
        let s = SetupPacket::parse(&[0x80, 0x06, 0x00, 0x01, 0x09, 0x04, 0x40, 0x00]);
        assert_eq!(s.value, 0x0100);
        assert_eq!(s.index, 0x0409);
        assert_eq!(s.length, 64);
        assert!(s.is_in());
        assert_eq!(s.kind(), RequestKind::Standard);
        assert_eq!(s.recipient(), Recipient::Device);
        assert_eq!(
            s.to_bytes(),
            [0x80, 0x06, 0x00, 0x01, 0x09, 0x04, 0x40, 0x00]
        );
        let c = SetupPacket::parse(&[0x21, 0x0a, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            (c.kind(), c.recipient(), c.is_in()),
            (RequestKind::Class, Recipient::Interface, false)
        );
    }
}
