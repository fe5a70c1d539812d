//! The SCSI block commands of one logical unit, as Linux's sd and usb-storage send them.
//!
//! Pure: it decodes CDBs, builds replies and keeps the sense data. It never touches USB or files;
//! reads, writes and cache flushes come back to the caller as [`Action`]s to carry out.

/// Logical block size, in bytes.
pub const BLOCK_SIZE: u32 = 512;

/// The largest READ or WRITE accepted (64 Ki blocks, above Linux's usb-storage max_sectors), so
/// that a host cannot make the device buffer gigabytes.
pub const MAX_TRANSFER: u32 = 65536 * BLOCK_SIZE;

/// Operation codes (SPC-4, SBC-3).
mod op {
    pub const TEST_UNIT_READY: u8 = 0x00;
    pub const REQUEST_SENSE: u8 = 0x03;
    pub const READ_6: u8 = 0x08;
    pub const WRITE_6: u8 = 0x0a;
    pub const INQUIRY: u8 = 0x12;
    pub const MODE_SENSE_6: u8 = 0x1a;
    pub const START_STOP_UNIT: u8 = 0x1b;
    pub const PREVENT_ALLOW_MEDIUM_REMOVAL: u8 = 0x1e;
    pub const READ_FORMAT_CAPACITIES: u8 = 0x23;
    pub const READ_CAPACITY_10: u8 = 0x25;
    pub const READ_10: u8 = 0x28;
    pub const WRITE_10: u8 = 0x2a;
    pub const VERIFY_10: u8 = 0x2f;
    pub const SYNCHRONIZE_CACHE_10: u8 = 0x35;
    pub const MODE_SENSE_10: u8 = 0x5a;
    pub const READ_16: u8 = 0x88;
    pub const WRITE_16: u8 = 0x8a;
    pub const VERIFY_16: u8 = 0x8f;
    pub const SYNCHRONIZE_CACHE_16: u8 = 0x91;
    pub const SERVICE_ACTION_IN_16: u8 = 0x9e;
    pub const REPORT_LUNS: u8 = 0xa0;
    pub const READ_12: u8 = 0xa8;
    pub const WRITE_12: u8 = 0xaa;
    /// Service action of SERVICE ACTION IN(16).
    pub const SA_READ_CAPACITY_16: u8 = 0x10;
}

/// Sense keys.
pub mod key {
    pub const NO_SENSE: u8 = 0x00;
    pub const MEDIUM_ERROR: u8 = 0x03;
    pub const ILLEGAL_REQUEST: u8 = 0x05;
    pub const DATA_PROTECT: u8 = 0x07;
}

/// What went wrong with the last command: sense key, additional sense code and qualifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sense {
    pub key: u8,
    pub asc: u8,
    pub ascq: u8,
}

impl Sense {
    pub const NONE: Sense = Sense::new(key::NO_SENSE, 0x00, 0x00);
    pub const UNRECOVERED_READ_ERROR: Sense = Sense::new(key::MEDIUM_ERROR, 0x11, 0x00);
    pub const WRITE_ERROR: Sense = Sense::new(key::MEDIUM_ERROR, 0x0c, 0x00);
    pub const INVALID_OPCODE: Sense = Sense::new(key::ILLEGAL_REQUEST, 0x20, 0x00);
    pub const LBA_OUT_OF_RANGE: Sense = Sense::new(key::ILLEGAL_REQUEST, 0x21, 0x00);
    pub const INVALID_FIELD_IN_CDB: Sense = Sense::new(key::ILLEGAL_REQUEST, 0x24, 0x00);
    pub const LUN_NOT_SUPPORTED: Sense = Sense::new(key::ILLEGAL_REQUEST, 0x25, 0x00);
    pub const SAVING_NOT_SUPPORTED: Sense = Sense::new(key::ILLEGAL_REQUEST, 0x39, 0x00);
    pub const WRITE_PROTECTED: Sense = Sense::new(key::DATA_PROTECT, 0x27, 0x00);

    pub const fn new(key: u8, asc: u8, ascq: u8) -> Sense {
        Sense { key, asc, ascq }
    }

    /// Fixed-format sense data (SPC-4 4.5.3), response code 0x70 (current error).
    pub fn fixed(&self) -> [u8; 18] {
        let mut s = [0u8; 18];
        s[0] = 0x70;
        s[2] = self.key;
        s[7] = 10; // additional sense length: bytes 8..18
        s[12] = self.asc;
        s[13] = self.ascq;
        s
    }
}

/// What the unit tells INQUIRY and the VPD pages about itself.
#[derive(Debug, Clone)]
pub struct Identity {
    /// At most 8 ASCII characters.
    pub vendor: String,
    /// At most 16 ASCII characters.
    pub product: String,
    /// At most 4 ASCII characters.
    pub revision: String,
    /// The unit serial number (VPD page 0x80), ASCII.
    pub serial: String,
}

/// What a command asks of the device once decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Done, good status, no data.
    Good,
    /// CHECK CONDITION; the sense data is recorded for REQUEST SENSE.
    Fail,
    /// Good status with these bytes for the host (already cut to the allocation length).
    DataIn(Vec<u8>),
    /// Read `len` bytes of the image at `offset`, then good status.
    Read { offset: u64, len: u32 },
    /// Take `len` bytes from the host and write them at `offset`, then good status.
    Write { offset: u64, len: u32 },
    /// Flush the image to stable storage, then good status.
    Sync,
}

/// One logical unit: its geometry, write protection and the sense data of the last command.
#[derive(Debug, Clone)]
pub struct Lun {
    blocks: u64,
    read_only: bool,
    identity: Identity,
    sense: Sense,
}

impl Lun {
    pub fn new(blocks: u64, read_only: bool, identity: Identity) -> Lun {
        Lun {
            blocks,
            read_only,
            identity,
            sense: Sense::NONE,
        }
    }

    /// The sense data REQUEST SENSE would return now.
    #[cfg(test)]
    pub fn sense(&self) -> Sense {
        self.sense
    }

    /// Ends the current command with CHECK CONDITION and `sense`.
    pub fn fail(&mut self, sense: Sense) -> Action {
        self.sense = sense;
        Action::Fail
    }

    /// Decodes and carries out one command block.
    pub fn execute(&mut self, cdb: &[u8]) -> Action {
        let Some(&opcode) = cdb.first() else {
            return self.fail(Sense::INVALID_OPCODE);
        };
        // Sense data describes the previous command only; REQUEST SENSE is what reads it.
        if opcode != op::REQUEST_SENSE {
            self.sense = Sense::NONE;
        }
        if cdb.len() < cdb_length(opcode) {
            return self.fail(Sense::INVALID_FIELD_IN_CDB);
        }
        match opcode {
            op::TEST_UNIT_READY | op::PREVENT_ALLOW_MEDIUM_REMOVAL | op::START_STOP_UNIT => {
                Action::Good
            }
            op::REQUEST_SENSE => self.request_sense(cdb),
            op::INQUIRY => self.inquiry(cdb),
            op::MODE_SENSE_6 => {
                let (alloc, dbd) = (usize::from(cdb[4]), cdb[1] & 0x08 != 0);
                self.mode_sense(cdb, dbd, alloc, false)
            }
            op::MODE_SENSE_10 => {
                let (alloc, dbd) = (be16(&cdb[7..]) as usize, cdb[1] & 0x08 != 0);
                self.mode_sense(cdb, dbd, alloc, true)
            }
            op::READ_CAPACITY_10 => {
                let last = u32::try_from(self.blocks.saturating_sub(1)).unwrap_or(u32::MAX);
                let mut r = last.to_be_bytes().to_vec();
                r.extend_from_slice(&BLOCK_SIZE.to_be_bytes());
                Action::DataIn(r)
            }
            op::SERVICE_ACTION_IN_16 if cdb[1] & 0x1f == op::SA_READ_CAPACITY_16 => {
                let mut r = vec![0u8; 32];
                r[0..8].copy_from_slice(&self.blocks.saturating_sub(1).to_be_bytes());
                r[8..12].copy_from_slice(&BLOCK_SIZE.to_be_bytes());
                data_in(r, be32(&cdb[10..]) as usize)
            }
            op::SERVICE_ACTION_IN_16 => self.fail(Sense::INVALID_FIELD_IN_CDB),
            op::READ_FORMAT_CAPACITIES => {
                let mut r = vec![0, 0, 0, 8];
                r.extend_from_slice(&self.blocks_u32().to_be_bytes());
                r.push(0x02); // formatted media
                r.extend_from_slice(&BLOCK_SIZE.to_be_bytes()[1..]);
                data_in(r, usize::from(be16(&cdb[7..])))
            }
            op::REPORT_LUNS => {
                let mut r = vec![0u8; 16];
                r[3] = 8; // one 8-byte LUN entry: LUN 0
                data_in(r, be32(&cdb[6..]) as usize)
            }
            op::READ_6 | op::WRITE_6 => {
                let lba = u64::from(be32(cdb) & 0x001f_ffff);
                // A transfer length of 0 means 256 blocks in the 6-byte commands.
                let blocks = if cdb[4] == 0 { 256 } else { u32::from(cdb[4]) };
                self.transfer(lba, blocks, opcode == op::WRITE_6)
            }
            op::READ_10 | op::WRITE_10 => {
                let (lba, blocks) = (u64::from(be32(&cdb[2..])), u32::from(be16(&cdb[7..])));
                self.transfer(lba, blocks, opcode == op::WRITE_10)
            }
            op::READ_12 | op::WRITE_12 => {
                let (lba, blocks) = (u64::from(be32(&cdb[2..])), be32(&cdb[6..]));
                self.transfer(lba, blocks, opcode == op::WRITE_12)
            }
            op::READ_16 | op::WRITE_16 => {
                let (lba, blocks) = (be64(&cdb[2..]), be32(&cdb[10..]));
                self.transfer(lba, blocks, opcode == op::WRITE_16)
            }
            op::VERIFY_10 | op::VERIFY_16 => {
                // BYTCHK asks to compare against data sent by the host: not supported.
                if cdb[1] & 0x06 != 0 {
                    return self.fail(Sense::INVALID_FIELD_IN_CDB);
                }
                let (lba, blocks) = if opcode == op::VERIFY_10 {
                    (u64::from(be32(&cdb[2..])), u32::from(be16(&cdb[7..])))
                } else {
                    (be64(&cdb[2..]), be32(&cdb[10..]))
                };
                match self.check_range(lba, blocks) {
                    Ok(()) => Action::Good,
                    Err(sense) => self.fail(sense),
                }
            }
            op::SYNCHRONIZE_CACHE_10 | op::SYNCHRONIZE_CACHE_16 => {
                let (lba, blocks) = if opcode == op::SYNCHRONIZE_CACHE_10 {
                    (u64::from(be32(&cdb[2..])), u32::from(be16(&cdb[7..])))
                } else {
                    (be64(&cdb[2..]), be32(&cdb[10..]))
                };
                match self.check_range(lba, blocks) {
                    Err(sense) => self.fail(sense),
                    // Nothing can be dirty in a read-only image.
                    Ok(()) if self.read_only => Action::Good,
                    Ok(()) => Action::Sync,
                }
            }
            _ => self.fail(Sense::INVALID_OPCODE),
        }
    }

    fn blocks_u32(&self) -> u32 {
        u32::try_from(self.blocks).unwrap_or(u32::MAX)
    }

    /// LBA range check shared by READ, WRITE, VERIFY and SYNCHRONIZE CACHE.
    fn check_range(&self, lba: u64, blocks: u32) -> Result<(), Sense> {
        // Even a zero-length command may not name an LBA past the end.
        match lba.checked_add(u64::from(blocks.max(1))) {
            Some(end) if end <= self.blocks => Ok(()),
            _ => Err(Sense::LBA_OUT_OF_RANGE),
        }
    }

    fn transfer(&mut self, lba: u64, blocks: u32, write: bool) -> Action {
        if write && self.read_only {
            return self.fail(Sense::WRITE_PROTECTED);
        }
        if let Err(sense) = self.check_range(lba, blocks) {
            return self.fail(sense);
        }
        let Some(len) = blocks
            .checked_mul(BLOCK_SIZE)
            .filter(|&len| len <= MAX_TRANSFER)
        else {
            return self.fail(Sense::INVALID_FIELD_IN_CDB);
        };
        let offset = lba * u64::from(BLOCK_SIZE);
        match (blocks, write) {
            (0, _) => Action::Good,
            (_, false) => Action::Read { offset, len },
            (_, true) => Action::Write { offset, len },
        }
    }

    fn request_sense(&mut self, cdb: &[u8]) -> Action {
        // DESC asks for descriptor-format sense, which this unit does not implement.
        if cdb[1] & 0x01 != 0 {
            return self.fail(Sense::INVALID_FIELD_IN_CDB);
        }
        let reply = self.sense.fixed().to_vec();
        self.sense = Sense::NONE;
        data_in(reply, usize::from(cdb[4]))
    }

    fn inquiry(&mut self, cdb: &[u8]) -> Action {
        let (evpd, page, alloc) = (cdb[1] & 0x01 != 0, cdb[2], usize::from(be16(&cdb[3..])));
        let reply = match (evpd, page) {
            (false, 0) => self.standard_inquiry(),
            (true, 0x00) => vpd(0x00, &[0x00, 0x80, 0x83]),
            (true, 0x80) => vpd(0x80, self.identity.serial.as_bytes()),
            (true, 0x83) => {
                // One designator: T10 vendor ID based (type 1), ASCII, naming the unit.
                let mut id = ascii_field(&self.identity.vendor, 8);
                id.extend_from_slice(self.identity.serial.as_bytes());
                let mut d = vec![0x02, 0x01, 0x00, id.len() as u8];
                d.extend_from_slice(&id);
                vpd(0x83, &d)
            }
            _ => return self.fail(Sense::INVALID_FIELD_IN_CDB),
        };
        data_in(reply, alloc)
    }

    fn standard_inquiry(&self) -> Vec<u8> {
        let mut r = vec![
            0x00, // connected direct-access block device
            0x00, // not removable: the image stays for the whole session
            0x05, // SPC-3
            0x02, // response data format 2
            31,   // additional length: 36 bytes in all
            0x00, 0x00, 0x00,
        ];
        r.extend_from_slice(&ascii_field(&self.identity.vendor, 8));
        r.extend_from_slice(&ascii_field(&self.identity.product, 16));
        r.extend_from_slice(&ascii_field(&self.identity.revision, 4));
        r
    }

    fn mode_sense(&mut self, cdb: &[u8], dbd: bool, alloc: usize, ten: bool) -> Action {
        let (control, page, subpage) = (cdb[2] >> 6, cdb[2] & 0x3f, cdb[3]);
        // Page control 3 asks for saved values, which this unit does not keep.
        if control == 3 {
            return self.fail(Sense::SAVING_NOT_SUPPORTED);
        }
        let pages = match (page, subpage) {
            (0x08, 0x00) | (0x3f, 0x00) | (0x3f, 0xff) => self.caching_page(control == 1),
            _ => return self.fail(Sense::INVALID_FIELD_IN_CDB),
        };
        let descriptor = if dbd {
            Vec::new()
        } else {
            let mut d = self.blocks_u32().to_be_bytes().to_vec();
            d.push(0);
            d.extend_from_slice(&BLOCK_SIZE.to_be_bytes()[1..]);
            d
        };
        // Device-specific parameter: bit 7 is WP (write protected).
        let device_specific = if self.read_only { 0x80 } else { 0x00 };
        let mut r = if ten {
            let mut h = vec![0, 0, 0x00, device_specific, 0, 0];
            h.extend_from_slice(&(descriptor.len() as u16).to_be_bytes());
            h
        } else {
            vec![0, 0x00, device_specific, descriptor.len() as u8]
        };
        r.extend_from_slice(&descriptor);
        r.extend_from_slice(&pages);
        // The mode data length does not count itself.
        if ten {
            let len = (r.len() - 2) as u16;
            r[0..2].copy_from_slice(&len.to_be_bytes());
        } else {
            r[0] = (r.len() - 1) as u8;
        }
        data_in(r, alloc)
    }

    /// The caching mode page (SBC-3 6.4.5). WCE is set on a writable image: writes land in the
    /// host's page cache and only SYNCHRONIZE CACHE makes them durable, which is what sd must know.
    fn caching_page(&self, changeable: bool) -> Vec<u8> {
        let mut p = vec![0u8; 20];
        p[0] = 0x08;
        p[1] = 18;
        if !changeable && !self.read_only {
            p[2] = 0x04; // WCE
        }
        p
    }
}

/// The CDB length the operation code's group implies.
fn cdb_length(opcode: u8) -> usize {
    match opcode >> 5 {
        0 => 6,
        1 | 2 => 10,
        4 => 16,
        5 => 12,
        _ => 1,
    }
}

fn data_in(mut reply: Vec<u8>, alloc: usize) -> Action {
    reply.truncate(alloc);
    Action::DataIn(reply)
}

/// A VPD page: header then payload.
fn vpd(page: u8, payload: &[u8]) -> Vec<u8> {
    let mut r = vec![0x00, page];
    r.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    r.extend_from_slice(payload);
    r
}

/// A space-padded, printable-ASCII field of exactly `len` bytes.
fn ascii_field(s: &str, len: usize) -> Vec<u8> {
    let mut f: Vec<u8> = s
        .bytes()
        .map(|b| if (0x20..0x7f).contains(&b) { b } else { b'?' })
        .take(len)
        .collect();
    f.resize(len, b' ');
    f
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn be64(b: &[u8]) -> u64 {
    u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lun(read_only: bool) -> Lun {
        Lun::new(
            2048,
            read_only,
            Identity {
                vendor: "usbipd".into(),
                product: "Virtual Disk".into(),
                revision: "0100".into(),
                serial: "0123456789ABCDEF".into(),
            },
        )
    }

    fn data(a: Action) -> Vec<u8> {
        match a {
            Action::DataIn(d) => d,
            other => panic!("expected data, got {other:?}"),
        }
    }

    #[test]
    fn inquiry_is_36_bytes_with_padded_identity() {
        let r = data(lun(false).execute(&[0x12, 0, 0, 0, 36, 0]));
        assert_eq!(r.len(), 36);
        assert_eq!(r[4], 31);
        assert_eq!(&r[8..16], b"usbipd  ");
        assert_eq!(&r[16..32], b"Virtual Disk    ");
        let short = data(lun(false).execute(&[0x12, 0, 0, 0, 5, 0]));
        assert_eq!(short, r[..5]);
    }

    #[test]
    fn vpd_pages_and_bad_page() {
        let mut l = lun(false);
        assert_eq!(
            data(l.execute(&[0x12, 1, 0x00, 0, 255, 0])),
            vec![0, 0, 0, 3, 0, 0x80, 0x83]
        );
        let serial = data(l.execute(&[0x12, 1, 0x80, 0, 255, 0]));
        assert_eq!(&serial[4..], b"0123456789ABCDEF");
        let id = data(l.execute(&[0x12, 1, 0x83, 0, 255, 0]));
        assert_eq!(&id[4..8], &[0x02, 0x01, 0x00, 24]);
        assert_eq!(l.execute(&[0x12, 1, 0xb0, 0, 255, 0]), Action::Fail);
        assert_eq!(l.sense(), Sense::INVALID_FIELD_IN_CDB);
        // A page code without EVPD is invalid too.
        assert_eq!(l.execute(&[0x12, 0, 0x80, 0, 255, 0]), Action::Fail);
    }

    #[test]
    fn read_capacity_reports_last_lba() {
        let mut l = lun(false);
        assert_eq!(
            data(l.execute(&[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0])),
            vec![0, 0, 0x07, 0xff, 0, 0, 2, 0]
        );
        let mut rc16 = [0u8; 16];
        rc16[0] = 0x9e;
        rc16[1] = 0x10;
        rc16[13] = 32;
        let r = data(l.execute(&rc16));
        assert_eq!(r.len(), 32);
        assert_eq!(&r[..12], &[0, 0, 0, 0, 0, 0, 0x07, 0xff, 0, 0, 2, 0]);
    }

    #[test]
    fn mode_sense_reports_write_protect_and_cache() {
        let rw = data(lun(false).execute(&[0x1a, 0, 0x3f, 0, 192, 0]));
        assert_eq!(rw.len(), 4 + 8 + 20);
        assert_eq!(rw[0] as usize, rw.len() - 1);
        assert_eq!(rw[2], 0x00);
        assert_eq!(rw[3], 8);
        assert_eq!(&rw[12..15], &[0x08, 18, 0x04]);
        let ro = data(lun(true).execute(&[0x1a, 0x08, 0x08, 0, 192, 0]));
        assert_eq!(ro.len(), 4 + 20, "DBD leaves out the block descriptor");
        assert_eq!((ro[2], ro[3], ro[6]), (0x80, 0, 0x00));
        let ten = data(lun(true).execute(&[0x5a, 0, 0x08, 0, 0, 0, 0, 0, 255, 0]));
        assert_eq!(ten.len(), 8 + 8 + 20);
        assert_eq!(u16::from_be_bytes([ten[0], ten[1]]) as usize, ten.len() - 2);
        assert_eq!((ten[3], ten[7]), (0x80, 8));
        let mut l = lun(false);
        assert_eq!(l.execute(&[0x1a, 0, 0x1c, 0, 192, 0]), Action::Fail);
        assert_eq!(l.execute(&[0x1a, 0, 0xc8, 0, 192, 0]), Action::Fail);
        assert_eq!(l.sense(), Sense::SAVING_NOT_SUPPORTED);
    }

    #[test]
    fn reads_and_writes_are_range_checked() {
        let mut l = lun(false);
        assert_eq!(
            l.execute(&[0x28, 0, 0, 0, 0, 1, 0, 0, 2, 0]),
            Action::Read {
                offset: 512,
                len: 1024
            }
        );
        assert_eq!(
            l.execute(&[0x2a, 0, 0, 0, 0x07, 0xff, 0, 0, 1, 0]),
            Action::Write {
                offset: 2047 * 512,
                len: 512
            }
        );
        assert_eq!(
            l.execute(&[0x28, 0, 0, 0, 0x07, 0xff, 0, 0, 2, 0]),
            Action::Fail
        );
        assert_eq!(l.sense(), Sense::LBA_OUT_OF_RANGE);
        let mut r16 = [0u8; 16];
        r16[0] = 0x88;
        r16[2] = 0xff; // LBA overflowing u64 arithmetic must not wrap
        r16[13] = 1;
        assert_eq!(l.execute(&r16), Action::Fail);
        assert_eq!(
            l.execute(&[0x08, 0, 0, 4, 0, 0]),
            Action::Read {
                offset: 4 * 512,
                len: 256 * 512
            }
        );
        assert_eq!(l.execute(&[0x28, 0, 0, 0, 0, 0, 0, 0, 0, 0]), Action::Good);
    }

    #[test]
    fn read_only_rejects_writes_with_data_protect() {
        let mut l = lun(true);
        assert_eq!(l.execute(&[0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0]), Action::Fail);
        assert_eq!(l.sense(), Sense::WRITE_PROTECTED);
        let s = data(l.execute(&[0x03, 0, 0, 0, 18, 0]));
        assert_eq!((s[0], s[2], s[7], s[12], s[13]), (0x70, 0x07, 10, 0x27, 0));
        assert_eq!(l.sense(), Sense::NONE, "REQUEST SENSE consumes the sense");
    }

    #[test]
    fn unknown_and_truncated_commands_fail() {
        let mut l = lun(false);
        assert_eq!(
            l.execute(&[0xa1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            Action::Fail
        );
        assert_eq!(l.sense(), Sense::INVALID_OPCODE);
        assert_eq!(l.execute(&[0x28, 0, 0]), Action::Fail);
        assert_eq!(l.sense(), Sense::INVALID_FIELD_IN_CDB);
        assert_eq!(l.execute(&[0x00, 0, 0, 0, 0, 0]), Action::Good);
        assert_eq!(l.sense(), Sense::NONE, "a new command clears old sense");
    }

    #[test]
    fn synchronize_cache_and_verify() {
        let mut l = lun(false);
        assert_eq!(l.execute(&[0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0]), Action::Sync);
        assert_eq!(
            lun(true).execute(&[0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            Action::Good
        );
        assert_eq!(
            l.execute(&[0x35, 0, 0, 0, 0x08, 0, 0, 0, 0, 0]),
            Action::Fail
        );
        assert_eq!(l.execute(&[0x2f, 0, 0, 0, 0, 0, 0, 0, 8, 0]), Action::Good);
        assert_eq!(
            l.execute(&[0x2f, 0x02, 0, 0, 0, 0, 0, 0, 8, 0]),
            Action::Fail
        );
    }
}
