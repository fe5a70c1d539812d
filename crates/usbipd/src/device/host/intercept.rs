//! Standard requests the server carries out itself instead of passing them to the device, as
//! the Linux stub driver and usbipd-win do, and the one fix-up applied to passed-through data.
//!
//! The host OS owns the device's configuration, alternate settings, halts and resets: sending
//! those requests raw would leave its view (and data toggles) out of step with the device.
//! Pure functions only.

use crate::device::setup::{descriptor_type, request, SetupPacket, ENDPOINT_HALT};

/// USB 2.0 hub class feature selector PORT_RESET (USB 2.0 table 11-17).
const PORT_RESET: u16 = 4;
/// bmRequestType of a hub-class request to a port: class, recipient "other", host-to-device.
const PORT_REQUEST_OUT: u8 = 0x23;
/// bmAttributes bit of a configuration descriptor: the device supports remote wakeup.
const REMOTE_WAKEUP: u8 = 0x20;

/// What to do with a control URB on endpoint 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intercept {
    /// Pass it to the device.
    PassThrough,
    SetConfiguration(u8),
    SetInterface {
        interface: u8,
        alt: u8,
    },
    /// CLEAR_FEATURE(ENDPOINT_HALT) on this endpoint address.
    ClearHalt(u8),
    /// SET_FEATURE(PORT_RESET) to a port: reset the device, as the kernel stub does.
    ResetDevice,
    /// The client's host controller gave the device an address; the real one already has one.
    SetAddress,
}

pub fn classify(setup: &SetupPacket) -> Intercept {
    match (setup.request_type, setup.request) {
        (0x00, request::SET_CONFIGURATION) => Intercept::SetConfiguration(setup.value as u8),
        (0x00, request::SET_ADDRESS) => Intercept::SetAddress,
        (0x01, request::SET_INTERFACE) => Intercept::SetInterface {
            interface: setup.index as u8,
            alt: setup.value as u8,
        },
        (0x02, request::CLEAR_FEATURE) if setup.value == ENDPOINT_HALT => {
            Intercept::ClearHalt(setup.index as u8)
        }
        (PORT_REQUEST_OUT, request::SET_FEATURE) if setup.value == PORT_RESET => {
            Intercept::ResetDevice
        }
        _ => Intercept::PassThrough,
    }
}

/// Clears the remote-wakeup bit of a configuration descriptor the device returned to a
/// GET_DESCRIPTOR(CONFIGURATION or OTHER_SPEED_CONFIGURATION), as usbipd-win does.
///
/// Why: USB/IP carries no suspend or resume, so a client driver that arms remote wakeup and
/// lets its (virtual) port suspend would wait for a wakeup that can never reach it. With the
/// bit clear, client drivers do not rely on it; the device stays awake on the server's bus.
pub fn fix_descriptor(setup: &SetupPacket, data: &mut [u8]) {
    let kind = (setup.value >> 8) as u8;
    let is_config = kind == descriptor_type::CONFIGURATION
        || kind == descriptor_type::OTHER_SPEED_CONFIGURATION;
    if setup.request_type == 0x80
        && setup.request == request::GET_DESCRIPTOR
        && is_config
        && data.len() > 7
        && data[1] == kind
    {
        data[7] &= !REMOTE_WAKEUP;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(request_type: u8, request: u8, value: u16, index: u16) -> SetupPacket {
        SetupPacket {
            request_type,
            request,
            value,
            index,
            length: 0,
        }
    }

    #[test]
    fn classifies_the_requests_the_stub_tweaks() {
        assert_eq!(
            classify(&setup(0x00, 0x09, 2, 0)),
            Intercept::SetConfiguration(2)
        );
        assert_eq!(
            classify(&setup(0x01, 0x0b, 1, 3)),
            Intercept::SetInterface {
                interface: 3,
                alt: 1
            }
        );
        assert_eq!(
            classify(&setup(0x02, 0x01, 0, 0x81)),
            Intercept::ClearHalt(0x81)
        );
        assert_eq!(classify(&setup(0x23, 0x03, 4, 1)), Intercept::ResetDevice);
        assert_eq!(classify(&setup(0x00, 0x05, 7, 0)), Intercept::SetAddress);
    }

    #[test]
    fn leaves_everything_else_to_the_device() {
        // CLEAR_FEATURE(DEVICE_REMOTE_WAKEUP) to the device, other port features, class
        // SET_INTERFACE-numbered requests, GET_DESCRIPTOR.
        for s in [
            setup(0x00, 0x01, 1, 0),
            setup(0x02, 0x03, 0, 0x81),
            setup(0x23, 0x03, 8, 1),
            setup(0x21, 0x0b, 0, 0),
            setup(0x21, 0x09, 0x200, 0),
            setup(0x80, 0x06, 0x100, 0),
        ] {
            assert_eq!(classify(&s), Intercept::PassThrough, "{s:?}");
        }
    }

    #[test]
    fn clears_remote_wakeup_in_configuration_descriptors_only() {
        let get = |kind: u8| SetupPacket {
            request_type: 0x80,
            request: 0x06,
            value: u16::from(kind) << 8,
            index: 0,
            length: 9,
        };
        let mut config = [9, 2, 25, 0, 1, 1, 0, 0xa0, 50];
        fix_descriptor(&get(2), &mut config);
        assert_eq!(config[7], 0x80);
        let mut other = [9, 7, 25, 0, 1, 1, 0, 0xe0, 50];
        fix_descriptor(&get(7), &mut other);
        assert_eq!(other[7], 0xc0);
        // A device descriptor's byte 7 is bMaxPacketSize0: untouched.
        let mut device = [18, 1, 0, 2, 0, 0, 0, 0x20, 0, 0];
        fix_descriptor(&get(1), &mut device);
        assert_eq!(device[7], 0x20);
        // A short read of the first 4 bytes has no bmAttributes.
        let mut short = [9, 2, 25, 0];
        fix_descriptor(&get(2), &mut short);
        assert_eq!(short, [9, 2, 25, 0]);
    }
}
