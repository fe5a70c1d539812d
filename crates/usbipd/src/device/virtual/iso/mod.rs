//! Isochronous endpoints for virtual functions.
//!
//! The server core passes isochronous URBs through like any other (`Urb::iso` in,
//! `UrbCompletion::iso` out); what makes an endpoint isochronous is only what a function does
//! with them. A function that declares an isochronous endpoint answers its URBs with the helpers
//! of [`packets`] (one result per packet, IN data compacted as the protocol wants it) and hands
//! the answer to an [`IsoPacer`], which completes it when a real bus would have moved its
//! packets: one packet per service interval, URBs back to back (`URB_ISO_ASAP`).

mod pacer;
pub mod packets;
#[cfg(test)]
mod tests;

use std::time::Duration;

use usbip_proto::Speed;

use super::descriptors::{parse_configuration, transfer_type, EndpointInfo};
pub use pacer::IsoPacer;

/// A high-speed microframe, the unit of high-speed intervals and frame numbers.
const MICROFRAME: Duration = Duration::from_micros(125);
/// A full-speed frame.
const FRAME: Duration = Duration::from_millis(1);

/// What the descriptors say about one isochronous endpoint, in the terms the pacer needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IsoEndpoint {
    /// bEndpointAddress (0x82 = EP2 IN).
    pub address: u8,
    /// Most bytes one packet may carry: wMaxPacketSize times the transactions per microframe.
    pub max_packet: usize,
    /// Time between two packets: the service interval, 2^(bInterval-1) (micro)frames.
    pub period: Duration,
    /// The unit of frame numbers (`start_frame`): a microframe at high speed and above, else a
    /// frame.
    pub frame: Duration,
    /// Frame numbers wrap like the bus's: 11 bits of frame, plus 3 of microframe at high speed.
    pub frame_mask: u32,
}

impl IsoEndpoint {
    /// The endpoint as described by `ep`, on a bus of `speed`. Not checked to be isochronous.
    pub fn new(speed: Speed, ep: &EndpointInfo) -> IsoEndpoint {
        let (frame, frame_mask) = match speed {
            Speed::High | Speed::Super | Speed::SuperPlus | Speed::Wireless => (MICROFRAME, 0x3fff),
            Speed::Low | Speed::Full | Speed::Unknown => (FRAME, 0x7ff),
        };
        // USB 2.0 9.6.6: isochronous bInterval is 1..=16, an exponent.
        let exponent = u32::from(ep.interval.clamp(1, 16)) - 1;
        IsoEndpoint {
            address: ep.address,
            max_packet: usize::from(ep.max_packet_size) * usize::from(ep.transactions),
            period: frame * (1u32 << exponent),
            frame,
            frame_mask,
        }
    }

    /// The isochronous endpoint `address` of alternate setting `alt` of interface `interface`
    /// in a whole configuration descriptor, if there is one.
    pub fn find(
        speed: Speed,
        configuration: &[u8],
        interface: u8,
        alt: u8,
        address: u8,
    ) -> Option<IsoEndpoint> {
        let (_, endpoints) = parse_configuration(configuration);
        endpoints
            .iter()
            .find(|e| {
                e.interface == interface
                    && e.alt == alt
                    && e.address == address
                    && e.attributes & 0x3 == transfer_type::ISOCHRONOUS
            })
            .map(|e| IsoEndpoint::new(speed, e))
    }
}
