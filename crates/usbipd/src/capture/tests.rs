//! A session's capture written to a real file and read back with pcap-file.

use bytes::Bytes;
use pcap_file::pcapng::{Block, PcapNgReader};
use pcap_file::DataLink;
use usbip_proto::Direction;

use super::*;

fn urb(seqnum: u32, endpoint: u8, direction: Direction, length: u32) -> Urb {
    Urb {
        seqnum,
        endpoint,
        direction,
        transfer_flags: 0,
        transfer_length: length,
        setup: [0; 8],
        data: Bytes::new(),
        interval: 0,
        start_frame: 0,
        iso: Vec::new(),
    }
}

fn done(seqnum: u32, actual_length: u32) -> RetSubmit {
    RetSubmit {
        seqnum,
        status: 0,
        actual_length,
        start_frame: 0,
        number_of_packets: 0,
        error_count: 0,
    }
}

/// Every record of the file: (the interface's link type, record bytes).
fn read_back(path: &Path) -> (Vec<DataLink>, Vec<Vec<u8>>) {
    let mut reader = PcapNgReader::new(std::fs::File::open(path).unwrap()).unwrap();
    let mut links = Vec::new();
    let mut records = Vec::new();
    while let Some(block) = reader.next_block() {
        match block.unwrap() {
            Block::InterfaceDescription(i) => links.push(i.linktype),
            Block::EnhancedPacket(p) => records.push(p.data.into_owned()),
            _ => {}
        }
    }
    (links, records)
}

/// A configuration descriptor with bulk IN 0x81 and interrupt IN 0x83 (interval 0 on the
/// wire for this test, so that only the descriptor can tell it is interrupt).
const CONFIG: [u8; 32] = [
    9, 2, 32, 0, 1, 1, 0, 0x80, 50, // configuration
    9, 4, 0, 0, 2, 0xff, 0, 0, 0, // interface
    7, 5, 0x81, 2, 0, 2, 0, // bulk IN
    7, 5, 0x83, 3, 8, 0, 4, // interrupt IN
];

#[test]
fn transfer_types_come_from_the_configuration_descriptor_the_client_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.pcapng");
    let (capture, writer) = Capture::open(&path, 16).unwrap();
    let mut session = capture.session(0, 4);
    // Before the descriptor: no interval means bulk.
    session.submit(&urb(1, 3, Direction::In, 8));
    let mut get_config = urb(2, 0, Direction::In, 255);
    get_config.setup = [0x80, 6, 0, 2, 0, 0, 255, 0];
    session.submit(&get_config);
    session.complete(&done(2, 32), &CONFIG, &[]);
    session.submit(&urb(3, 3, Direction::In, 8));
    session.submit(&urb(4, 1, Direction::In, 512));
    session.unlinked(4);
    // A second session numbers its URBs apart from the first one's.
    let mut other = capture.session(0, 4);
    other.submit(&urb(1, 1, Direction::In, 512));
    drop((session, other, capture));
    writer.close();

    let (links, records) = read_back(&path);
    assert_eq!(links, vec![DataLink::USB_LINUX_MMAPPED]);
    // Keystrokes and disk contents: for its owner only.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let summary: Vec<(u8, u8, u8)> = records.iter().map(|r| (r[8], r[9], r[10])).collect();
    assert_eq!(
        summary,
        vec![
            (b'S', 3, 0x83), // bulk, by the interval
            (b'S', 2, 0x80),
            (b'C', 2, 0x80),
            (b'S', 1, 0x83), // interrupt, learned
            (b'S', 3, 0x81),
            (b'C', 3, 0x81),
            (b'S', 3, 0x81),
        ]
    );
    // The descriptor's completion: 32 bytes long, 16 captured (the snap length).
    assert_eq!(&records[2][32..40], &[32, 0, 0, 0, 16, 0, 0, 0]);
    assert_eq!(&records[2][64..], &CONFIG[..16]);
    // The unlinked URB completes with -ECONNRESET and the submission's id.
    assert_eq!(&records[5][28..32], &(-104i32).to_le_bytes());
    assert_eq!(records[4][0..8], records[5][0..8]);
    assert_ne!(records[6][0..8], records[4][0..8]);
    assert_eq!(&records[6][0..4], &[1, 0, 0, 0]);
    // Device 4 on bus 0 everywhere.
    assert!(records.iter().all(|r| r[11] == 4 && r[12..14] == [0, 0]));
}

#[test]
fn a_completion_without_its_submission_is_not_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.pcapng");
    let (capture, writer) = Capture::open(&path, DEFAULT_SNAPLEN).unwrap();
    let mut session = capture.session(1, 2);
    session.complete(&done(9, 0), &[], &[]);
    let mut out = urb(10, 2, Direction::Out, 31);
    out.data = Bytes::from_static(&[0x55; 31]);
    session.refused(&out, -104);
    drop((session, capture));
    writer.close();
    let (_, records) = read_back(&path);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0][8], b'E');
    assert_eq!(records[0].len(), 64 + 31);
}

#[test]
fn a_file_that_cannot_be_created_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = Capture::open(&dir.path().join("no/such/dir/c.pcapng"), 100).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
}

/// A writer stuck on its file (a FIFO nobody reads yet) never holds up a session: records past
/// the queue are dropped and counted, and the session goes on.
#[test]
fn a_stuck_writer_drops_and_counts_records_instead_of_blocking() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fifo");
    nix::unistd::mkfifo(&path, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let (opened_tx, opened_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let reader_path = path.clone();
    let reader = std::thread::spawn(move || {
        let mut fifo = std::fs::File::open(&reader_path).unwrap();
        opened_tx.send(()).unwrap();
        go_rx.recv().unwrap();
        let mut all = Vec::new();
        fifo.read_to_end(&mut all).unwrap();
        all.len()
    });
    let (capture, writer) = Capture::open(&path, DEFAULT_SNAPLEN).unwrap();
    opened_rx.recv().unwrap();
    let mut session = capture.session(0, 1);
    let mut out = urb(0, 2, Direction::Out, 512);
    out.data = Bytes::from(vec![0xa5; 512]);
    // 20000 records of 576 bytes: far more than the pipe, the file buffer and the queue hold.
    for seqnum in 0..20_000 {
        out.seqnum = seqnum;
        session.refused(&out, -104);
    }
    let dropped = capture.dropped();
    assert!(dropped > 0, "nothing dropped");
    assert!(dropped < 20_000, "everything dropped");
    go_tx.send(()).unwrap();
    drop((session, capture));
    writer.close();
    let bytes = reader.join().unwrap();
    // What was not dropped was written whole: 576-byte records in 608-byte blocks.
    let written = 20_000 - dropped as usize;
    assert!(bytes > written * 608, "{bytes} bytes for {written} records");
}
