//! Whole BOT conversations with the virtual disk, driven through TestHost as usb-storage would.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;

use tempfile::NamedTempFile;
use usbip_proto::{errno, transfer_flags};

use super::*;
use crate::device::setup::descriptor_type;
use crate::device::testing::TestHost;
use crate::device::{Device, SetupPacket, UrbCompletion};

const SIZE: u64 = 1 << 20; // 2048 blocks

struct Disk {
    host: TestHost,
    file: NamedTempFile,
    next_tag: u32,
}

fn disk(read_only: bool) -> Disk {
    let file = temporary_image(SIZE).unwrap();
    let device = new(file.path(), read_only, BusPosition::virtual_port(1)).unwrap();
    attach(&device, file)
}

fn attach(device: &dyn Device, file: NamedTempFile) -> Disk {
    Disk {
        host: TestHost::open(device).unwrap(),
        file,
        next_tag: 0x100,
    }
}

fn cbw(tag: u32, len: u32, data_in: bool, cdb: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; 31];
    b[0..4].copy_from_slice(b"USBC");
    b[4..8].copy_from_slice(&tag.to_le_bytes());
    b[8..12].copy_from_slice(&len.to_le_bytes());
    b[12] = if data_in { 0x80 } else { 0 };
    b[14] = cdb.len() as u8;
    b[15..15 + cdb.len()].copy_from_slice(cdb);
    b
}

fn read10(lba: u32, blocks: u16) -> Vec<u8> {
    let mut c = vec![0x28, 0];
    c.extend_from_slice(&lba.to_be_bytes());
    c.push(0);
    c.extend_from_slice(&blocks.to_be_bytes());
    c.push(0);
    c
}

fn write10(lba: u32, blocks: u16) -> Vec<u8> {
    let mut c = read10(lba, blocks);
    c[0] = 0x2a;
    c
}

/// A CSW's residue and status, after checking its signature and tag.
#[derive(Debug, PartialEq, Eq)]
struct Csw {
    residue: u32,
    status: u8,
}

const PASSED: u8 = 0;
const FAILED: u8 = 1;
const PHASE_ERROR: u8 = 2;

impl Disk {
    fn tag(&mut self) -> u32 {
        self.next_tag += 1;
        self.next_tag
    }

    async fn done(&mut self, seqnum: u32) -> UrbCompletion {
        let c = self.host.next().await.expect("a completion");
        assert_eq!(c.seqnum, seqnum, "completions in submission order");
        c
    }

    async fn send(&mut self, data: &[u8]) {
        let urb = self.host.urb(EP_OUT, 0, data);
        let seq = self.host.submit(urb);
        let c = self.done(seq).await;
        assert_eq!((c.status, c.actual_length), (0, data.len() as u32));
    }

    async fn receive(&mut self, len: u32) -> UrbCompletion {
        let urb = self.host.urb(EP_IN, len, &[]);
        let seq = self.host.submit(urb);
        self.done(seq).await
    }

    async fn csw(&mut self, tag: u32) -> Csw {
        let c = self.receive(13).await;
        assert_eq!(c.status, 0, "CSW read failed");
        let b = &c.data[..];
        assert_eq!(b.len(), 13);
        assert_eq!(&b[0..4], b"USBS");
        assert_eq!(u32::from_le_bytes(b[4..8].try_into().unwrap()), tag);
        Csw {
            residue: u32::from_le_bytes(b[8..12].try_into().unwrap()),
            status: b[12],
        }
    }

    /// A command with a data-in phase read in one URB.
    async fn command_in(&mut self, cdb: &[u8], len: u32) -> (Vec<u8>, Csw) {
        let tag = self.tag();
        self.send(&cbw(tag, len, true, cdb)).await;
        let data = self.receive(len).await;
        assert_eq!(data.status, 0);
        let csw = self.csw(tag).await;
        (data.data.to_vec(), csw)
    }

    /// A command with a data-out phase sent in one URB.
    async fn command_out(&mut self, cdb: &[u8], data: &[u8]) -> Csw {
        let tag = self.tag();
        self.send(&cbw(tag, data.len() as u32, false, cdb)).await;
        self.send(data).await;
        self.csw(tag).await
    }

    async fn command(&mut self, cdb: &[u8]) -> Csw {
        let tag = self.tag();
        self.send(&cbw(tag, 0, false, cdb)).await;
        self.csw(tag).await
    }

    /// REQUEST SENSE: (key, asc, ascq).
    async fn sense(&mut self) -> (u8, u8, u8) {
        let (s, csw) = self.command_in(&[0x03, 0, 0, 0, 18, 0], 18).await;
        assert_eq!(
            csw,
            Csw {
                residue: 0,
                status: PASSED
            }
        );
        assert_eq!(s[0], 0x70);
        (s[2], s[12], s[13])
    }

    async fn class_request(&mut self, request_type: u8, request: u8, length: u16) -> UrbCompletion {
        let setup = SetupPacket {
            request_type,
            request,
            value: 0,
            index: 0,
            length,
        };
        self.host
            .control(setup, &[])
            .await
            .expect("control completion")
    }

    async fn endpoint_request(&mut self, request: u8, endpoint: u8) -> UrbCompletion {
        let setup = SetupPacket {
            request_type: if request == 0 { 0x82 } else { 0x02 },
            request,
            value: 0,
            index: u16::from(endpoint),
            length: if request == 0 { 2 } else { 0 },
        };
        self.host
            .control(setup, &[])
            .await
            .expect("control completion")
    }

    async fn is_halted(&mut self, endpoint: u8) -> bool {
        let c = self.endpoint_request(0x00, endpoint).await;
        assert_eq!(c.status, 0);
        c.data[0] & 1 != 0
    }

    async fn reset_recovery(&mut self) {
        assert_eq!(self.class_request(0x21, 0xff, 0).await.status, 0);
        assert_eq!(self.endpoint_request(0x01, EP_IN).await.status, 0);
        assert_eq!(self.endpoint_request(0x01, EP_OUT).await.status, 0);
    }

    fn file_bytes(&self, offset: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; len];
        self.file.as_file().read_exact_at(&mut buf, offset).unwrap();
        buf
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

#[tokio::test]
async fn descriptors_say_high_speed_bulk_only_scsi() {
    let mut d = disk(false);
    let dev = d
        .host
        .get_descriptor(descriptor_type::DEVICE, 0, 18)
        .await
        .unwrap();
    assert_eq!(&dev.data[8..12], &[0x09, 0x12, 0x03, 0x00]);
    let cfg = d
        .host
        .get_descriptor(descriptor_type::CONFIGURATION, 0, 255)
        .await
        .unwrap();
    let (ifs, eps) = super::super::parse_configuration(&cfg.data);
    assert_eq!(ifs.len(), 1);
    assert_eq!(
        (ifs[0].class, ifs[0].subclass, ifs[0].protocol),
        (8, 6, 0x50)
    );
    let eps: Vec<_> = eps
        .iter()
        .map(|e| (e.address, e.attributes, e.max_packet_size))
        .collect();
    assert_eq!(eps, vec![(0x81, 2, 512), (0x02, 2, 512)]);
    let serial = d
        .host
        .get_descriptor(descriptor_type::STRING, 3, 255)
        .await
        .unwrap();
    let units: Vec<u16> = serial.data[2..]
        .chunks(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    let serial = String::from_utf16(&units).unwrap();
    assert!(serial.len() >= 12 && serial.chars().all(|c| c.is_ascii_hexdigit()));

    let other = temporary_image(SIZE).unwrap();
    let device = new(other.path(), false, BusPosition::virtual_port(3)).unwrap();
    let record = device.describe();
    assert_eq!(record.record.speed, Speed::High);
    assert_eq!(
        (record.record.id_vendor, record.record.id_product),
        (0x1209, 0x0003)
    );
}

#[tokio::test]
async fn get_max_lun_says_one_lun() {
    let mut d = disk(false);
    let c = d.class_request(0xa1, 0xfe, 1).await;
    assert_eq!((c.status, &c.data[..]), (0, &[0u8][..]));
    // Unknown class requests stall.
    assert_eq!(d.class_request(0xa1, 0xfc, 1).await.status, errno::EPIPE);
}

#[tokio::test]
async fn inquiry_and_read_capacity() {
    let mut d = disk(false);
    let (inq, csw) = d.command_in(&[0x12, 0, 0, 0, 36, 0], 36).await;
    assert_eq!(
        csw,
        Csw {
            residue: 0,
            status: PASSED
        }
    );
    assert_eq!(inq.len(), 36);
    assert_eq!((inq[0], inq[4]), (0x00, 31));
    assert_eq!(&inq[8..16], b"usbipd  ");

    let (cap, csw) = d.command_in(&[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], 8).await;
    assert_eq!(
        csw,
        Csw {
            residue: 0,
            status: PASSED
        }
    );
    assert_eq!(cap, vec![0, 0, 0x07, 0xff, 0, 0, 0x02, 0x00]);

    let mut rc16 = [0u8; 16];
    rc16[0] = 0x9e;
    rc16[1] = 0x10;
    rc16[13] = 32;
    let (cap, csw) = d.command_in(&rc16, 32).await;
    assert_eq!(csw.status, PASSED);
    assert_eq!(u64::from_be_bytes(cap[0..8].try_into().unwrap()), 2047);

    // The serial number VPD page matches the USB serial string.
    let (vpd, _) = d.command_in(&[0x12, 1, 0x80, 0, 255, 0], 255).await;
    assert_eq!(vpd[1], 0x80);
    assert_eq!(vpd.len(), 4 + 16);
}

#[tokio::test]
async fn host_expecting_more_gets_short_data_and_residue() {
    let mut d = disk(false);
    let (inq, csw) = d.command_in(&[0x12, 0, 0, 0, 96, 0], 96).await;
    assert_eq!(inq.len(), 36);
    assert_eq!(
        csw,
        Csw {
            residue: 60,
            status: PASSED
        }
    );
}

#[tokio::test]
async fn write_then_read_round_trips_through_the_file() {
    let mut d = disk(false);
    let data = pattern(4 * 512, 0x5a);
    let csw = d.command_out(&write10(10, 4), &data).await;
    assert_eq!(
        csw,
        Csw {
            residue: 0,
            status: PASSED
        }
    );
    assert_eq!(d.file_bytes(10 * 512, data.len()), data);

    let (back, csw) = d.command_in(&read10(10, 4), 2048).await;
    assert_eq!(
        csw,
        Csw {
            residue: 0,
            status: PASSED
        }
    );
    assert_eq!(back, data);

    let csw = d.command(&[0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0]).await;
    assert_eq!(
        csw,
        Csw {
            residue: 0,
            status: PASSED
        },
        "SYNCHRONIZE CACHE"
    );
}

#[tokio::test]
async fn data_phase_split_across_urbs_submitted_before_the_data_exists() {
    let mut d = disk(false);
    let data = pattern(8 * 512, 0x33);
    d.file.as_file().write_all_at(&data, 100 * 512).unwrap();
    let tag = d.tag();
    d.send(&cbw(tag, 4096, true, &read10(100, 8))).await;
    // Queue the whole data phase and the CSW read at once, while the read is in flight.
    let mut seqs = Vec::new();
    for len in [1024, 512, 2048, 512, 13] {
        let urb = d.host.urb(EP_IN, len, &[]);
        seqs.push(d.host.submit(urb));
    }
    let mut got = Vec::new();
    for &seq in &seqs[..4] {
        let c = d.done(seq).await;
        assert_eq!(c.status, 0);
        got.extend_from_slice(&c.data);
    }
    assert_eq!(got, data);
    let c = d.done(seqs[4]).await;
    assert_eq!(&c.data[0..4], b"USBS");
    assert_eq!(c.data[12], PASSED);
}

#[tokio::test]
async fn write_larger_than_one_urb() {
    let mut d = disk(false);
    let data = pattern(64 * 1024, 0xc3);
    let tag = d.tag();
    d.send(&cbw(tag, data.len() as u32, false, &write10(300, 128)))
        .await;
    for chunk in data.chunks(16 * 1024) {
        d.send(chunk).await;
    }
    assert_eq!(
        d.csw(tag).await,
        Csw {
            residue: 0,
            status: PASSED
        }
    );
    assert_eq!(d.file_bytes(300 * 512, data.len()), data);
    let (back, _) = d.command_in(&read10(300, 128), data.len() as u32).await;
    assert_eq!(back, data);
}

#[tokio::test]
async fn read_only_disk_rejects_writes_with_data_protect() {
    let mut d = disk(true);
    let csw = d.command_out(&write10(0, 1), &[0xee; 512]).await;
    assert_eq!(
        csw,
        Csw {
            residue: 512,
            status: FAILED
        }
    );
    assert_eq!(d.sense().await, (0x07, 0x27, 0x00));
    assert_eq!(d.file_bytes(0, 512), vec![0u8; 512]);
    // MODE SENSE(6) shows the write-protect bit.
    let (ms, csw) = d.command_in(&[0x1a, 0, 0x3f, 0, 192, 0], 192).await;
    assert_eq!(csw.status, PASSED);
    assert_eq!(ms[2] & 0x80, 0x80);
    assert_eq!(csw.residue as usize, 192 - ms.len());
}

#[tokio::test]
async fn unknown_opcode_fails_and_request_sense_explains() {
    let mut d = disk(false);
    let csw = d.command(&[0xc7, 0, 0, 0, 0, 0]).await;
    assert_eq!(
        csw,
        Csw {
            residue: 0,
            status: FAILED
        }
    );
    assert_eq!(d.sense().await, (0x05, 0x20, 0x00));
    // The sense was consumed; the next one is clean.
    assert_eq!(d.sense().await, (0x00, 0x00, 0x00));
}

#[tokio::test]
async fn read_past_the_end_is_lba_out_of_range() {
    let mut d = disk(false);
    let (data, csw) = d.command_in(&read10(2047, 2), 1024).await;
    assert!(data.is_empty(), "no data, just a zero-length packet");
    assert_eq!(
        csw,
        Csw {
            residue: 1024,
            status: FAILED
        }
    );
    assert_eq!(d.sense().await, (0x05, 0x21, 0x00));
}

#[tokio::test]
async fn invalid_cbw_stalls_until_reset_recovery() {
    let mut d = disk(false);
    let mut bad = cbw(1, 0, false, &[0, 0, 0, 0, 0, 0]);
    bad[0] = b'X';
    d.send(&bad).await;
    assert_eq!(d.receive(13).await.status, errno::EPIPE);
    let out = d.host.urb(EP_OUT, 0, &cbw(2, 0, false, &[0; 6]));
    let seq = d.host.submit(out);
    assert_eq!(d.done(seq).await.status, errno::EPIPE);
    assert!(d.is_halted(EP_IN).await && d.is_halted(EP_OUT).await);
    // CLEAR_FEATURE alone does not end the stall.
    assert_eq!(d.endpoint_request(0x01, EP_IN).await.status, 0);
    assert!(d.is_halted(EP_IN).await);

    d.reset_recovery().await;
    assert!(!d.is_halted(EP_IN).await && !d.is_halted(EP_OUT).await);
    let (inq, csw) = d.command_in(&[0x12, 0, 0, 0, 36, 0], 36).await;
    assert_eq!((inq.len(), csw.status), (36, PASSED));
}

#[tokio::test]
async fn zero_length_packet_ends_data_on_a_packet_boundary() {
    let mut d = disk(false);
    let tag = d.tag();
    // Host expects 1024 bytes, the device has 512 (case 5).
    d.send(&cbw(tag, 1024, true, &read10(0, 1))).await;
    let first = d.receive(512).await;
    assert_eq!(first.data.len(), 512);
    let zlp = d.receive(512).await;
    assert_eq!((zlp.status, zlp.data.len()), (0, 0));
    assert_eq!(
        d.csw(tag).await,
        Csw {
            residue: 512,
            status: PASSED
        }
    );
}

#[tokio::test]
async fn short_data_with_short_not_ok_is_remote_io_error() {
    let mut d = disk(false);
    let tag = d.tag();
    d.send(&cbw(tag, 64, true, &[0x12, 0, 0, 0, 64, 0])).await;
    let mut urb = d.host.urb(EP_IN, 64, &[]);
    urb.transfer_flags |= transfer_flags::URB_SHORT_NOT_OK;
    let seq = d.host.submit(urb);
    let c = d.done(seq).await;
    assert_eq!((c.status, c.data.len()), (errno::EREMOTEIO, 36));
    assert_eq!(
        d.csw(tag).await,
        Csw {
            residue: 28,
            status: PASSED
        }
    );
}

#[tokio::test]
async fn length_disagreements() {
    let mut d = disk(false);
    // Host sends more than the command needs (case 11): the extra is ignored.
    let data = pattern(1024, 0x11);
    let csw = d.command_out(&write10(5, 1), &data).await;
    assert_eq!(
        csw,
        Csw {
            residue: 512,
            status: PASSED
        }
    );
    assert_eq!(
        d.file_bytes(5 * 512, 1024),
        [&data[..512], &[0u8; 512][..]].concat()
    );

    // Host sends less than the command needs (case 13): phase error, nothing written.
    let csw = d.command_out(&write10(20, 2), &data[..512]).await;
    assert_eq!(csw.status, PHASE_ERROR);
    assert_eq!(d.file_bytes(20 * 512, 512), vec![0u8; 512]);

    // Host expects less than a READ returns (case 7): phase error.
    let (got, csw) = d.command_in(&read10(5, 2), 512).await;
    assert!(got.is_empty());
    assert_eq!(csw.status, PHASE_ERROR);

    // Host expects no data for a READ (case 2), or data in for a WRITE (case 8).
    assert_eq!(d.command(&read10(5, 1)).await.status, PHASE_ERROR);
    let (_, csw) = d.command_in(&write10(5, 1), 512).await;
    assert_eq!(csw.status, PHASE_ERROR);

    // Still in step afterwards.
    let (back, csw) = d.command_in(&read10(5, 1), 512).await;
    assert_eq!((csw.status, &back[..]), (PASSED, &data[..512]));
}

#[tokio::test]
async fn io_errors_become_medium_errors() {
    // Writable as far as the device knows, but the descriptor only reads: writes fail (EBADF).
    let file = temporary_image(SIZE).unwrap();
    let ro = OpenOptions::new().read(true).open(file.path()).unwrap();
    let device = MassStorage::from_file(ro, false)
        .unwrap()
        .into_device(BusPosition::virtual_port(2));
    let mut d = attach(&device, file);
    let csw = d.command_out(&write10(0, 1), &[1; 512]).await;
    assert_eq!(
        csw,
        Csw {
            residue: 512,
            status: FAILED
        }
    );
    assert_eq!(d.sense().await, (0x03, 0x0c, 0x00));

    // The image shrinks under the device: reading past the new end fails.
    d.file.as_file().set_len(512).unwrap();
    let (data, csw) = d.command_in(&read10(8, 1), 512).await;
    assert!(data.is_empty());
    assert_eq!(
        csw,
        Csw {
            residue: 512,
            status: FAILED
        }
    );
    assert_eq!(d.sense().await, (0x03, 0x11, 0x00));
}

#[tokio::test]
async fn cancelled_urbs_never_complete_and_reset_recovers() {
    let mut d = disk(false);
    // A parked IN URB cancelled before any command: the next one gets the data.
    let parked = d.host.urb(EP_IN, 36, &[]);
    let parked = d.host.submit(parked);
    d.host.session.cancel(parked);
    let (inq, csw) = d.command_in(&[0x12, 0, 0, 0, 36, 0], 36).await;
    assert_eq!((inq.len(), csw.status), (36, PASSED));

    // Cancel the data URB of a large read while the read may be in flight, then recover.
    let tag = d.tag();
    d.send(&cbw(tag, 65536, true, &read10(0, 128))).await;
    let urb = d.host.urb(EP_IN, 65536, &[]);
    let seq = d.host.submit(urb);
    d.host.session.cancel(seq);
    // The read may have beaten the cancel (then its data was already on the way, which the
    // server discards); nothing else may complete.
    while let Ok(Some(c)) = tokio::time::timeout(
        std::time::Duration::from_millis(100),
        d.host.completions.recv(),
    )
    .await
    {
        assert_eq!(c.seqnum, seq);
    }
    d.reset_recovery().await;
    let data = pattern(512, 0x77);
    assert_eq!(d.command_out(&write10(1, 1), &data).await.status, PASSED);
    let (back, csw) = d.command_in(&read10(1, 1), 512).await;
    assert_eq!((csw.status, back), (PASSED, data));
}

#[tokio::test]
async fn short_csw_urb_overflows() {
    let mut d = disk(false);
    let tag = d.tag();
    d.send(&cbw(tag, 0, false, &[0, 0, 0, 0, 0, 0])).await;
    assert_eq!(d.receive(12).await.status, errno::EOVERFLOW);
}

#[tokio::test]
async fn reset_abandons_a_pending_csw() {
    let mut d = disk(false);
    let tag = d.tag();
    d.send(&cbw(tag, 0, false, &[0, 0, 0, 0, 0, 0])).await;
    d.reset_recovery().await;
    // The abandoned CSW is gone: the next IN URB waits for a new command.
    let urb = d.host.urb(EP_IN, 13, &[]);
    let seq = d.host.submit(urb);
    assert!(d.host.idle_for(100).await);
    let tag = d.tag();
    d.send(&cbw(tag, 0, false, &[0, 0, 0, 0, 0, 0])).await;
    let c = d.done(seq).await;
    assert_eq!(u32::from_le_bytes(c.data[4..8].try_into().unwrap()), tag);
}

#[tokio::test]
async fn set_feature_halt_stalls_parked_urbs_until_cleared() {
    let mut d = disk(false);
    let parked = d.host.urb(EP_IN, 13, &[]);
    let parked = d.host.submit(parked);
    let set_halt = SetupPacket {
        request_type: 0x02,
        request: 0x03,
        value: 0,
        index: u16::from(EP_IN),
        length: 0,
    };
    // The parked URB sees the stall before the control transfer completes.
    let mut urb = d.host.urb(0, 0, &[]);
    urb.setup = set_halt.to_bytes();
    let control = d.host.submit(urb);
    let first = d.host.next().await.unwrap();
    assert_eq!((first.seqnum, first.status), (parked, errno::EPIPE));
    let second = d.host.next().await.unwrap();
    assert_eq!((second.seqnum, second.status), (control, 0));
    assert!(d.is_halted(EP_IN).await);
    assert_eq!(d.receive(13).await.status, errno::EPIPE);
    assert_eq!(d.endpoint_request(0x01, EP_IN).await.status, 0);
    let (inq, csw) = d.command_in(&[0x12, 0, 0, 0, 36, 0], 36).await;
    assert_eq!((inq.len(), csw.status), (36, PASSED));
}

/// An acknowledged write without SYNCHRONIZE CACHE is flushed once the client detaches, so that
/// a host crash after the client is gone cannot lose it.
#[tokio::test]
async fn an_acknowledged_write_is_flushed_when_the_client_detaches() {
    let file = temporary_image(SIZE).unwrap();
    let device = new(file.path(), false, BusPosition::virtual_port(1)).unwrap();
    let image = device.function().image.clone();
    let mut d = attach(&device, file);
    let csw = d.command_out(&write10(3, 1), &[7; 512]).await;
    assert_eq!(csw.status, PASSED);
    assert_eq!(image.syncs(), 0, "nothing asked for a flush yet");
    drop(d.host); // the client detaches
    for _ in 0..400 {
        if image.syncs() > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(
        image.syncs(),
        1,
        "the image is flushed once after the detach"
    );

    // A client that only reads leaves nothing to flush.
    let mut d = attach(&device, d.file);
    let (_, csw) = d.command_in(&read10(3, 1), 512).await;
    assert_eq!(csw.status, PASSED);
    drop(d.host);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(image.syncs(), 1);
}

/// One image, one virtual disk: a second configuration of the same file (read-write or
/// read-only) is refused with an error naming it, until the first lets go.
#[test]
fn a_second_configuration_of_the_same_image_is_refused_naming_it() {
    let file = temporary_image(SIZE).unwrap();
    let first = new(file.path(), false, BusPosition::virtual_port(1)).unwrap();
    for read_only in [false, true] {
        let Err(e) = new(file.path(), read_only, BusPosition::virtual_port(2)) else {
            panic!("a second open of the image (read_only {read_only}) was allowed");
        };
        assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock);
        let message = e.to_string();
        assert!(
            message.contains(&file.path().display().to_string()) && message.contains("in use"),
            "{message}"
        );
    }
    drop(first);
    new(file.path(), true, BusPosition::virtual_port(2)).unwrap();
}
