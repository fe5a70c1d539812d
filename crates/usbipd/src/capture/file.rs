//! The capture file's writer: one thread that owns the pcapng file and writes the records the
//! sessions queue for it.
//!
//! Why a thread and a bounded queue: a session must never wait on a disk. Sessions hand finished
//! records to a `sync_channel` with `try_send`; when the thread falls behind and the queue is
//! full, the record is dropped and counted (the count is logged when the capture closes), so a
//! slow disk costs records, never URB latency. The queue holds at most `QUEUE_RECORDS` records
//! of at most 64 bytes + snap length each, which bounds the memory a capture can hold.
//!
//! The file is flushed whenever the queue runs empty, so what was captured up to a quiet moment
//! is on disk even if the server is killed.

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::{DataLink, Endianness};
use tracing::{info, warn};

/// Records the queue holds before new ones are dropped.
pub const QUEUE_RECORDS: usize = 4096;

/// One finished record: when it happened, the bytes of the usbmon record, and how long it would
/// have been without the snap length.
pub(super) struct Record {
    pub timestamp: Duration,
    pub bytes: Vec<u8>,
    pub original_len: u32,
}

pub(super) enum Message {
    Record(Record),
    /// Flush and stop (the server is shutting down).
    Close,
}

/// What the sessions share: the queue's sending side and the count of dropped records.
#[derive(Debug)]
pub(super) struct Queue {
    tx: SyncSender<Message>,
    pub dropped: Arc<AtomicU64>,
}

impl Queue {
    /// Queues `record` without waiting; a full queue (or a writer that stopped) drops it.
    pub fn push(&self, record: Record) {
        if self.tx.try_send(Message::Record(record)).is_err()
            && self.dropped.fetch_add(1, Ordering::Relaxed) == 0
        {
            warn!("capture: the file writer falls behind; dropping records (counted, logged at the end)");
        }
    }
}

/// The writer thread of an open capture file; [`Writer::close`] ends it.
#[derive(Debug)]
pub struct Writer {
    tx: SyncSender<Message>,
    thread: JoinHandle<()>,
}

impl Writer {
    /// Writes whatever is queued, closes the file and logs what was written and dropped.
    pub fn close(self) {
        // Blocking is fine here: the server is stopping, and the thread empties the queue.
        let _ = self.tx.send(Message::Close);
        let _ = self.thread.join();
    }
}

/// Creates (or truncates) `path`, writes the pcapng section and interface, and starts the
/// writer thread. A new file is private (0600): it holds everything typed on a keyboard and
/// read from a disk, which is why Linux keeps `/dev/usbmon*` to root.
pub(super) fn open(path: &Path) -> std::io::Result<(Queue, Writer)> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = File::options()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    let file = BufWriter::with_capacity(256 * 1024, file);
    let mut pcap = PcapNgWriter::with_endianness(file, Endianness::Little).map_err(io_error)?;
    let interface = InterfaceDescriptionBlock {
        linktype: DataLink::USB_LINUX_MMAPPED,
        // No limit on the record: our snap length cuts the URB's data only, while the usbmon
        // header and isochronous descriptors always stay whole (pcapng's SnapLen would count
        // them, and a record must not be longer than it).
        snaplen: 0,
        // pcap-file writes timestamps in nanoseconds: say so (the default is microseconds).
        options: vec![InterfaceDescriptionOption::IfTsResol(9)],
    };
    pcap.write_pcapng_block(interface).map_err(io_error)?;
    pcap.get_mut().flush()?;
    let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE_RECORDS);
    let dropped = Arc::new(AtomicU64::new(0));
    let state = WriterState {
        pcap,
        path: path.to_owned(),
        written: 0,
        dropped: dropped.clone(),
    };
    let thread = std::thread::Builder::new()
        .name("usbipd-capture".into())
        .spawn(move || state.run(rx))?;
    Ok((
        Queue {
            tx: tx.clone(),
            dropped,
        },
        Writer { tx, thread },
    ))
}

fn io_error(e: pcap_file::PcapError) -> std::io::Error {
    match e {
        pcap_file::PcapError::IoError(e) => e,
        other => std::io::Error::other(other.to_string()),
    }
}

struct WriterState {
    pcap: PcapNgWriter<BufWriter<File>>,
    path: PathBuf,
    written: u64,
    dropped: Arc<AtomicU64>,
}

impl WriterState {
    fn run(mut self, rx: Receiver<Message>) {
        let failed = self.write_all(&rx).err();
        // Later records find the queue closed and count as dropped.
        drop(rx);
        let dropped = self.dropped.load(Ordering::Relaxed);
        let path = self.path.display();
        match failed {
            Some(e) => {
                warn!(path = %path, written = self.written, error = %e, "capture stopped: cannot write the file")
            }
            None if dropped > 0 => warn!(
                path = %path,
                written = self.written,
                dropped,
                "capture closed; records were dropped because the file writer fell behind"
            ),
            None => info!(path = %path, written = self.written, "capture closed"),
        }
    }

    /// Writes records until `Close` or until every sender is gone, flushing whenever the queue
    /// runs empty.
    fn write_all(&mut self, rx: &Receiver<Message>) -> std::io::Result<()> {
        while let Ok(mut message) = rx.recv() {
            loop {
                match message {
                    Message::Record(record) => self.write(record)?,
                    Message::Close => return self.pcap.get_mut().flush(),
                }
                message = match rx.try_recv() {
                    Ok(next) => next,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return self.pcap.get_mut().flush(),
                };
            }
            self.pcap.get_mut().flush()?;
        }
        self.pcap.get_mut().flush()
    }

    fn write(&mut self, record: Record) -> std::io::Result<()> {
        let block = EnhancedPacketBlock {
            interface_id: 0,
            timestamp: record.timestamp,
            original_len: record.original_len,
            data: Cow::Owned(record.bytes),
            options: vec![],
        };
        self.pcap.write_pcapng_block(block).map_err(io_error)?;
        self.written += 1;
        Ok(())
    }
}
