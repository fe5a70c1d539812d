//! Per-packet answers to isochronous URBs, laid out as RET_SUBMIT carries them.
//!
//! An isochronous URB has no single outcome: each packet has its own status and actual length,
//! the URB's `actual_length` is their sum and `error_count` the number of failed packets, and
//! the URB itself succeeds (status 0) even when some packets fail, as Linux host controllers
//! report it. IN data travels compacted: each packet's `actual_length` bytes back to back, with
//! the descriptors keeping the client's offsets (vhci-hcd moves the data back into place and
//! drops the connection when the actual lengths do not add up to `actual_length`).

use bytes::{Bytes, BytesMut};
use usbip_proto::{errno, IsoPacket};

use super::IsoEndpoint;
use crate::device::{Urb, UrbCompletion};

/// Whether `urb` can run on `endpoint` at all: at least one packet, none longer than the
/// endpoint carries in one interval, each inside the buffer (the codec checks that already for
/// URBs from the wire). The error is the URB's status, as a host controller's submit would give.
pub fn check(urb: &Urb, endpoint: &IsoEndpoint) -> Result<(), i32> {
    if urb.iso.is_empty() {
        return Err(errno::EINVAL);
    }
    for p in &urb.iso {
        if p.length as usize > endpoint.max_packet {
            return Err(errno::EMSGSIZE);
        }
        if u64::from(p.offset) + u64::from(p.length) > u64::from(urb.transfer_length) {
            return Err(errno::EINVAL);
        }
    }
    Ok(())
}

/// Answers an IN URB from `stream`: packet by packet, each takes the next bytes of the stream
/// up to its length; once the stream runs dry the rest are short (or empty). The packets' data
/// back to back is then a prefix of the stream, which is sent without a copy.
pub fn answer_in(urb: &Urb, stream: Bytes) -> UrbCompletion {
    let mut left = stream.len();
    let iso: Vec<IsoPacket> = urb
        .iso
        .iter()
        .map(|p| {
            let actual = (p.length as usize).min(left);
            left -= actual;
            IsoPacket {
                offset: p.offset,
                length: p.length,
                actual_length: actual as u32,
                status: 0,
            }
        })
        .collect();
    let data = stream.slice(..stream.len() - left);
    UrbCompletion {
        seqnum: urb.seqnum,
        actual_length: data.len() as u32,
        data,
        iso,
        ..Default::default()
    }
}

/// Answers an IN URB packet by packet: `packet(length)` gives at most `length` bytes for one
/// packet (fewer is a short packet). Copies the packets together; prefer [`answer_in`] when
/// the function has one stream.
pub fn answer_in_each(urb: &Urb, mut packet: impl FnMut(usize) -> Bytes) -> UrbCompletion {
    let total: usize = urb.iso.iter().map(|p| p.length as usize).sum();
    let mut data = BytesMut::with_capacity(total);
    let iso = urb
        .iso
        .iter()
        .map(|p| {
            let mut bytes = packet(p.length as usize);
            bytes.truncate(p.length as usize);
            data.extend_from_slice(&bytes);
            IsoPacket {
                offset: p.offset,
                length: p.length,
                actual_length: bytes.len() as u32,
                status: 0,
            }
        })
        .collect();
    UrbCompletion {
        seqnum: urb.seqnum,
        actual_length: data.len() as u32,
        data: data.freeze(),
        iso,
        ..Default::default()
    }
}

/// Answers an OUT URB: `sink` takes each packet's bytes; a packet it refuses gets that status
/// and an actual length of 0, and counts in `error_count`.
pub fn answer_out(urb: &Urb, mut sink: impl FnMut(&[u8]) -> Result<(), i32>) -> UrbCompletion {
    let mut errors = 0;
    let mut moved = 0u32;
    let iso = urb
        .iso
        .iter()
        .map(|p| {
            let start = p.offset as usize;
            let bytes = urb.data.get(start..start + p.length as usize);
            let result = bytes.ok_or(errno::EINVAL).and_then(&mut sink);
            let (actual_length, status) = match result {
                Ok(()) => (p.length, 0),
                Err(status) => {
                    errors += 1;
                    (0, status)
                }
            };
            moved += actual_length;
            IsoPacket {
                offset: p.offset,
                length: p.length,
                actual_length,
                status,
            }
        })
        .collect();
    UrbCompletion {
        seqnum: urb.seqnum,
        actual_length: moved,
        error_count: errors,
        iso,
        ..Default::default()
    }
}
