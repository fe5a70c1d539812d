//! The data patterns of Gadget Zero's source and sink, served from one process-wide buffer.
//!
//! The source hands out slices of a shared static buffer, so an IN URB costs no allocation and
//! no copy unless it is longer than that buffer. Never build a pattern per URB on the fast path.

use std::sync::OnceLock;

use bytes::{Bytes, BytesMut};

/// The pattern restarts with every packet: the high-speed bulk wMaxPacketSize.
const PACKET: usize = 512;

/// Longest IN transfer served without allocating. A multiple of [`PACKET`], so that longer
/// transfers are whole copies of the buffer and keep the pattern in step.
pub const SHARED_LEN: usize = 1 << 20;

/// Lives in .bss: costs nothing until the source touches it, and is shared by all devices.
static ZEROS: [u8; SHARED_LEN] = [0; SHARED_LEN];
static MOD63: OnceLock<&'static [u8]> = OnceLock::new();

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
        match self {
            Pattern::Zeros | Pattern::Unchecked => &ZEROS,
            Pattern::Mod63 => MOD63.get_or_init(|| {
                let pattern: Vec<u8> = (0..SHARED_LEN).map(|i| (i % PACKET % 63) as u8).collect();
                // Built once per process and never freed, so that IN data can be 'static slices.
                Box::leak(pattern.into_boxed_slice())
            }),
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
