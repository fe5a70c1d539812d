//! Bulk-Only Transport framing: the CBW the host sends, the CSW the device answers, and how a
//! command's data phase is settled when host and device disagree on its length (the thirteen
//! cases of BOT 1.0 section 6.7). Pure: no URBs, no I/O.

/// Length of a Command Block Wrapper.
pub const CBW_LEN: usize = 31;
/// Length of a Command Status Wrapper.
pub const CSW_LEN: usize = 13;

const CBW_SIGNATURE: u32 = 0x4342_5355;
const CSW_SIGNATURE: u32 = 0x5342_5355;

/// Class-specific requests on the interface.
pub mod request {
    pub const GET_MAX_LUN: u8 = 0xfe;
    pub const BULK_ONLY_RESET: u8 = 0xff;
}

/// A data phase as one side sees it: none, device-to-host or host-to-device, with its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transfer {
    None,
    In(u32),
    Out(u32),
}

impl Transfer {
    /// Zero-length transfers are no transfer (Hn, Dn), whatever direction they name.
    pub fn new(data_in: bool, len: u32) -> Transfer {
        match (len, data_in) {
            (0, _) => Transfer::None,
            (_, true) => Transfer::In(len),
            (_, false) => Transfer::Out(len),
        }
    }

    pub fn len(self) -> u32 {
        match self {
            Transfer::None => 0,
            Transfer::In(n) | Transfer::Out(n) => n,
        }
    }
}

/// A valid and meaningful CBW.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cbw {
    pub tag: u32,
    /// What the host expects of the data phase (dCBWDataTransferLength and the direction bit).
    pub host: Transfer,
    pub lun: u8,
    cdb: [u8; 16],
    cdb_len: usize,
}

impl Cbw {
    /// Parses a CBW; `None` if it is not valid (size, signature) or not meaningful (CDB length).
    pub fn parse(b: &[u8]) -> Option<Cbw> {
        if b.len() != CBW_LEN || le32(&b[0..4]) != CBW_SIGNATURE {
            return None;
        }
        let cdb_len = usize::from(b[14] & 0x1f);
        if !(1..=16).contains(&cdb_len) {
            return None;
        }
        let mut cdb = [0u8; 16];
        cdb.copy_from_slice(&b[15..31]);
        Some(Cbw {
            tag: le32(&b[4..8]),
            host: Transfer::new(b[12] & 0x80 != 0, le32(&b[8..12])),
            lun: b[13] & 0x0f,
            cdb,
            cdb_len,
        })
    }

    pub fn cdb(&self) -> &[u8] {
        &self.cdb[..self.cdb_len]
    }
}

/// bCSWStatus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Passed = 0,
    Failed = 1,
    PhaseError = 2,
}

/// Builds a CSW.
pub fn csw(tag: u32, residue: u32, status: Status) -> [u8; CSW_LEN] {
    let mut c = [0u8; CSW_LEN];
    c[0..4].copy_from_slice(&CSW_SIGNATURE.to_le_bytes());
    c[4..8].copy_from_slice(&tag.to_le_bytes());
    c[8..12].copy_from_slice(&residue.to_le_bytes());
    c[12] = status as u8;
    c
}

/// How a command's data phase goes, given what both sides expect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// Carry out the command, moving `length` bytes; the CSW reports `residue`.
    Proceed { length: u32, residue: u32 },
    /// The two sides cannot be reconciled: skip the command and answer phase error. The
    /// host's data phase still runs (the device sends nothing / swallows what comes).
    PhaseError,
}

/// Settles the thirteen cases. `may_truncate` marks device data that is only an upper bound
/// (replies cut to an allocation length, e.g. INQUIRY): sending less of it is no error, so
/// Hi < Di truncates instead of being a phase error, as most real devices do.
pub fn settle(host: Transfer, device: Transfer, may_truncate: bool) -> Settlement {
    use Transfer::{In, None, Out};
    let proceed = |length: u32, host_len: u32| Settlement::Proceed {
        length,
        residue: host_len - length,
    };
    match (host, device) {
        // Cases 1, 4, 9: nothing from the device; the residue is all the host expected.
        (h, None) => proceed(0, h.len()),
        // Cases 5, 6; and 7 when the reply may be cut.
        (In(h), In(d)) if d <= h => proceed(d, h),
        (In(h), In(_)) if may_truncate => proceed(h, h),
        // Cases 11, 12.
        (Out(h), Out(d)) if d <= h => proceed(d, h),
        // Cases 2, 3, 7, 8, 10, 13.
        _ => Settlement::PhaseError,
    }
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw_cbw(tag: u32, len: u32, flags: u8, lun: u8, cdb: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; CBW_LEN];
        b[0..4].copy_from_slice(&CBW_SIGNATURE.to_le_bytes());
        b[4..8].copy_from_slice(&tag.to_le_bytes());
        b[8..12].copy_from_slice(&len.to_le_bytes());
        b[12] = flags;
        b[13] = lun;
        b[14] = cdb.len() as u8;
        b[15..15 + cdb.len()].copy_from_slice(cdb);
        b
    }

    #[test]
    fn parses_valid_cbw() {
        let c = Cbw::parse(&raw_cbw(7, 36, 0x80, 0, &[0x12, 0, 0, 0, 36, 0])).unwrap();
        assert_eq!((c.tag, c.host, c.lun), (7, Transfer::In(36), 0));
        assert_eq!(c.cdb(), &[0x12, 0, 0, 0, 36, 0]);
        let c = Cbw::parse(&raw_cbw(8, 0, 0x80, 0, &[0; 6])).unwrap();
        assert_eq!(c.host, Transfer::None);
    }

    #[test]
    fn rejects_invalid_cbw() {
        let good = raw_cbw(1, 0, 0, 0, &[0; 6]);
        assert!(Cbw::parse(&good[..30]).is_none());
        let mut long = good.clone();
        long.push(0);
        assert!(Cbw::parse(&long).is_none());
        let mut sig = good.clone();
        sig[0] = 0;
        assert!(Cbw::parse(&sig).is_none());
        let mut no_cdb = good.clone();
        no_cdb[14] = 0;
        assert!(Cbw::parse(&no_cdb).is_none());
        let mut big_cdb = good;
        big_cdb[14] = 17;
        assert!(Cbw::parse(&big_cdb).is_none());
    }

    #[test]
    fn csw_layout() {
        assert_eq!(
            csw(0x0102_0304, 5, Status::Failed),
            [0x55, 0x53, 0x42, 0x53, 4, 3, 2, 1, 5, 0, 0, 0, 1]
        );
    }

    #[test]
    fn thirteen_cases() {
        use Settlement::{PhaseError, Proceed};
        use Transfer::{In, None, Out};
        let p = |length, residue| Proceed { length, residue };
        assert_eq!(settle(None, None, false), p(0, 0)); // 1
        assert_eq!(settle(None, In(8), false), PhaseError); // 2
        assert_eq!(settle(None, Out(8), false), PhaseError); // 3
        assert_eq!(settle(In(8), None, false), p(0, 8)); // 4
        assert_eq!(settle(In(8), In(4), false), p(4, 4)); // 5
        assert_eq!(settle(In(8), In(8), false), p(8, 0)); // 6
        assert_eq!(settle(In(4), In(8), false), PhaseError); // 7
        assert_eq!(settle(In(4), In(8), true), p(4, 0)); // 7, reply cut
        assert_eq!(settle(In(8), Out(8), false), PhaseError); // 8
        assert_eq!(settle(Out(8), None, false), p(0, 8)); // 9
        assert_eq!(settle(Out(8), In(8), true), PhaseError); // 10
        assert_eq!(settle(Out(8), Out(4), false), p(4, 4)); // 11
        assert_eq!(settle(Out(8), Out(8), false), p(8, 0)); // 12
        assert_eq!(settle(Out(4), Out(8), false), PhaseError); // 13
    }
}
