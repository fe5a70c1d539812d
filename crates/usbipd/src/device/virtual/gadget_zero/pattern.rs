//! The data patterns of Gadget Zero's source and sink, served from one process-wide buffer.
//!
//! The source hands out slices of a shared static buffer, so an IN URB costs no allocation and
//! no copy unless it is longer than that buffer. Never build a pattern per URB on the fast path.

use std::sync::OnceLock;

use bytes::{Bytes, BytesMut};

/// The pattern restarts with every packet: the high-speed bulk wMaxPacketSize.
const PACKET: usize = 512;

/// The high-speed isochronous wMaxPacketSize of the source/sink's alternate setting 1.
pub const ISO_PACKET: usize = 1024;

/// Longest IN transfer served without allocating. A multiple of [`PACKET`], so that longer
/// transfers are whole copies of the buffer and keep the pattern in step.
pub const SHARED_LEN: usize = 1 << 20;

/// Lives in .bss: costs nothing until the source touches it, and is shared by all devices.
static ZEROS: [u8; SHARED_LEN] = [0; SHARED_LEN];
static MOD63: OnceLock<&'static [u8]> = OnceLock::new();
static MOD63_ISO: OnceLock<&'static [u8]> = OnceLock::new();

/// What the source sends and the sink expects, like g_zero's `pattern` module parameter.
///
/// Every URB starts the pattern afresh, as the kernel's usbtest does with each transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pattern {
    /// All zeroes; the sink checks for them (g_zero `pattern=0`, usbtest's default).
    #[default]
    Zeros,
    /// Byte `i` of a transfer is `(i % 512) % 63`; the sink checks it (g_zero `pattern=1`).
    Mod63,
    /// The source sends zeroes and the sink accepts anything (g_zero `pattern=2`).
    Unchecked,
}

impl Pattern {
    fn shared(self) -> &'static [u8] {
        self.shared_every(PACKET).unwrap_or(&ZEROS)
    }

    /// The shared buffer of the pattern restarting every `packet` bytes, if there is one.
    fn shared_every(self, packet: usize) -> Option<&'static [u8]> {
        // Built once per process and never freed, so that IN data can be 'static slices.
        let build = |packet: usize| -> &'static [u8] {
            let pattern: Vec<u8> = (0..SHARED_LEN).map(|i| (i % packet % 63) as u8).collect();
            Box::leak(pattern.into_boxed_slice())
        };
        match (self, packet) {
            (Pattern::Zeros | Pattern::Unchecked, _) => Some(&ZEROS),
            (Pattern::Mod63, PACKET) => Some(MOD63.get_or_init(|| build(PACKET))),
            (Pattern::Mod63, ISO_PACKET) => Some(MOD63_ISO.get_or_init(|| build(ISO_PACKET))),
            (Pattern::Mod63, _) => None,
        }
    }

    /// `len` bytes of the pattern restarting every `packet` bytes, as the source sends it on
    /// an endpoint of that wMaxPacketSize (g_zero's `reinit_write_data`): a slice of a shared
    /// buffer for the bulk and the isochronous packet sizes.
    pub fn source_every(self, len: usize, packet: usize) -> Bytes {
        match self.shared_every(packet) {
            Some(shared) if len <= shared.len() => Bytes::from_static(&shared[..len]),
            _ => (0..len)
                .map(|i| match self {
                    Pattern::Mod63 => (i % packet.max(1) % 63) as u8,
                    Pattern::Zeros | Pattern::Unchecked => 0,
                })
                .collect::<Vec<u8>>()
                .into(),
        }
    }

    /// `len` bytes of the pattern: a slice of the shared buffer whenever it is long enough.
    pub fn source(self, len: usize) -> Bytes {
        let shared = self.shared();
        if len <= shared.len() {
            return Bytes::from_static(&shared[..len]);
        }
        let mut data = BytesMut::with_capacity(len);
        while data.len() < len {
            let n = (len - data.len()).min(shared.len());
            data.extend_from_slice(&shared[..n]);
        }
        data.freeze()
    }

    /// Whether `data`, one OUT transfer, carries the pattern.
    pub fn check(self, data: &[u8]) -> bool {
        if self == Pattern::Unchecked {
            return true;
        }
        let shared = self.shared();
        data.chunks(shared.len())
            .all(|chunk| chunk == &shared[..chunk.len()])
    }

    /// Whether `data` lies inside the shared buffer (for tests of the no-allocation path).
    #[cfg(test)]
    pub fn is_shared(self, data: &[u8]) -> bool {
        let shared = self.shared().as_ptr_range();
        let data = data.as_ptr_range();
        shared.start <= data.start && data.end <= shared.end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mod63_restarts_every_packet() {
        let data = Pattern::Mod63.source(1100);
        assert_eq!(data[62], 62);
        assert_eq!(data[63], 0);
        assert_eq!(data[511], (511 % 63) as u8);
        assert_eq!(data[512], 0);
        assert_eq!(data[1099], ((1099 - 1024) % 63) as u8);
    }

    #[test]
    fn transfers_longer_than_the_shared_buffer_keep_the_pattern() {
        let len = SHARED_LEN + 700;
        let data = Pattern::Mod63.source(len);
        assert_eq!(data.len(), len);
        assert!(!Pattern::Mod63.is_shared(&data));
        assert_eq!(data[SHARED_LEN + 600], (600 % 512 % 63) as u8);
        assert!(Pattern::Mod63.check(&data));
    }

    #[test]
    fn source_every_restarts_at_each_packet_of_that_size() {
        let iso = Pattern::Mod63.source_every(2100, ISO_PACKET);
        assert!(Pattern::Mod63.is_shared(&iso) || iso.len() == 2100);
        assert_eq!(
            iso[600],
            (600 % 63) as u8,
            "no restart at 512 for 1024-byte packets"
        );
        assert_eq!(iso[1024], 0);
        assert_eq!((iso[2047], iso[2099]), ((1023 % 63) as u8, 51));
        let odd = Pattern::Mod63.source_every(300, 100);
        assert_eq!((odd[99], odd[100], odd[299]), (99 % 63, 0, 99 % 63));
        assert_eq!(
            Pattern::Mod63.source_every(700, PACKET),
            Pattern::Mod63.source(700)
        );
        assert!(Pattern::Zeros
            .source_every(5000, 100)
            .iter()
            .all(|&b| b == 0));
    }

    #[test]
    fn check_rejects_any_wrong_byte() {
        let mut data = Pattern::Mod63.source(3000).to_vec();
        assert!(Pattern::Mod63.check(&data));
        assert!(!Pattern::Zeros.check(&data));
        data[2999] ^= 1;
        assert!(!Pattern::Mod63.check(&data));
        assert!(Pattern::Unchecked.check(&data));
        assert!(Pattern::Zeros.check(&[0; 5000]));
        assert!(!Pattern::Zeros.check(&[0, 0, 7]));
    }
}
