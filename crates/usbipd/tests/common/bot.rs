//! A minimal Bulk-Only Transport host over the project's client: CBW out, data, CSW in, and
//! the SCSI commands the fault tests need. Written from the BOT 1.0 and SBC specs.

use bytes::Bytes;
use usbip_client::{Connection, Submit};

const EP_IN: u8 = 1;
const EP_OUT: u8 = 2;
const CBW_SIGNATURE: u32 = 0x4342_5355;
const CSW_SIGNATURE: u32 = 0x5342_5355;
pub const BLOCK: usize = 512;

/// bCSWStatus values.
pub const PASSED: u8 = 0;
pub const FAILED: u8 = 1;

/// What a command's data phase is.
pub enum Data<'a> {
    None,
    In(u32),
    Out(&'a [u8]),
}

/// The outcome of one command: CSW status and residue, and the IN data.
#[derive(Debug)]
pub struct Outcome {
    pub status: u8,
    pub residue: u32,
    pub data: Bytes,
}

/// A Command Block Wrapper for LUN 0.
pub fn cbw(tag: u32, len: u32, data_in: bool, cdb: &[u8]) -> Vec<u8> {
    let mut cbw = Vec::with_capacity(31);
    cbw.extend_from_slice(&CBW_SIGNATURE.to_le_bytes());
    cbw.extend_from_slice(&tag.to_le_bytes());
    cbw.extend_from_slice(&len.to_le_bytes());
    cbw.push(if data_in { 0x80 } else { 0 });
    cbw.push(0); // LUN
    cbw.push(cdb.len() as u8);
    let mut block = [0u8; 16];
    block[..cdb.len()].copy_from_slice(cdb);
    cbw.extend_from_slice(&block);
    cbw
}

pub struct Bot {
    pub conn: Connection,
    tag: u32,
}

impl Bot {
    /// Selects configuration 1, as the kernel does after enumeration.
    pub async fn configure(conn: Connection) -> Bot {
        let c = conn
            .submit(Submit::control([0, 9, 1, 0, 0, 0, 0, 0], Bytes::new()))
            .await
            .expect("SET_CONFIGURATION");
        assert_eq!(c.status, 0, "SET_CONFIGURATION failed");
        Bot { conn, tag: 0 }
    }

    /// Runs one command through the three BOT phases. Panics on a transport failure (a URB
    /// error or a malformed CSW): the tests here are about SCSI status.
    pub async fn command(&mut self, cdb: &[u8], data: Data<'_>) -> Outcome {
        self.tag += 1;
        let (len, data_in) = match data {
            Data::None => (0, false),
            Data::In(n) => (n, true),
            Data::Out(d) => (d.len() as u32, false),
        };
        let c = self.bulk_out(cbw(self.tag, len, data_in, cdb)).await;
        assert_eq!(c, 0, "CBW not taken");
        let mut got = Bytes::new();
        match data {
            Data::None => {}
            Data::In(n) => {
                let c = self
                    .conn
                    .submit(Submit::bulk_in(EP_IN, n))
                    .await
                    .expect("data in");
                assert_eq!(c.status, 0, "data-in URB failed");
                got = c.data;
            }
            Data::Out(d) => {
                let c = self.bulk_out(d.to_vec()).await;
                assert_eq!(c, 0, "data-out URB failed");
            }
        }
        let csw = self
            .conn
            .submit(Submit::bulk_in(EP_IN, 13))
            .await
            .expect("CSW");
        assert_eq!(csw.status, 0, "CSW URB failed");
        let b = &csw.data;
        assert_eq!(b.len(), 13, "CSW length");
        assert_eq!(u32::from_le_bytes([b[0], b[1], b[2], b[3]]), CSW_SIGNATURE);
        assert_eq!(u32::from_le_bytes([b[4], b[5], b[6], b[7]]), self.tag);
        Outcome {
            status: b[12],
            residue: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
            data: got,
        }
    }

    async fn bulk_out(&self, data: Vec<u8>) -> i32 {
        self.conn
            .submit(Submit::bulk_out(EP_OUT, data))
            .await
            .expect("bulk out")
            .status
    }

    pub async fn write10(&mut self, lba: u32, data: &[u8]) -> Outcome {
        assert_eq!(data.len() % BLOCK, 0);
        let blocks = (data.len() / BLOCK) as u16;
        let mut cdb = [0u8; 10];
        cdb[0] = 0x2a;
        cdb[2..6].copy_from_slice(&lba.to_be_bytes());
        cdb[7..9].copy_from_slice(&blocks.to_be_bytes());
        self.command(&cdb, Data::Out(data)).await
    }

    pub async fn read10(&mut self, lba: u32, blocks: u16) -> Outcome {
        let mut cdb = [0u8; 10];
        cdb[0] = 0x28;
        cdb[2..6].copy_from_slice(&lba.to_be_bytes());
        cdb[7..9].copy_from_slice(&blocks.to_be_bytes());
        self.command(&cdb, Data::In(u32::from(blocks) * BLOCK as u32))
            .await
    }

    /// SYNCHRONIZE CACHE(10) of the whole disk.
    pub async fn sync(&mut self) -> Outcome {
        self.command(&[0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0], Data::None)
            .await
    }

    /// REQUEST SENSE: (sense key, ASC, ASCQ) of fixed-format sense data.
    pub async fn request_sense(&mut self) -> (u8, u8, u8) {
        let o = self.command(&[0x03, 0, 0, 0, 18, 0], Data::In(18)).await;
        assert_eq!(o.status, PASSED, "REQUEST SENSE itself failed");
        assert!(o.data.len() >= 14, "short sense data");
        (o.data[2] & 0x0f, o.data[12], o.data[13])
    }
}
