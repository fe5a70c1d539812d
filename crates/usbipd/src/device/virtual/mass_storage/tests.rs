//! Whole BOT conversations with the virtual disk, driven through TestHost as usb-storage would:
//! the shared helpers and the disk's lifecycle here, the commands (`conversations`) and the
//! transport's failures and recovery (`faults`) beside it.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;

use tempfile::NamedTempFile;
use usbip_proto::{errno, transfer_flags};

use super::*;
use crate::device::setup::descriptor_type;
use crate::device::testing::TestHost;
use crate::device::{Device, SetupPacket, UrbCompletion};

mod conversations;
mod faults;

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
    // The client detaches; the flush is a real fdatasync on a blocking thread (a slow disk
    // gets 30 s).
    drop(d.host);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while image.syncs() == 0 && std::time::Instant::now() < deadline {
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
