//! Packet capture for Wireshark: every URB a session submits, and its completion or unlink,
//! written to a pcapng file as Linux's usbmon records them (`usbipd server --capture FILE`).
//!
//! `usbmon` lays out one record, `file` owns the file on its own thread. A server with capture
//! on holds a [`Capture`] in its `ServerConfig`; each session makes its own [`SessionCapture`],
//! which remembers what it needs of each URB in flight (endpoint, transfer type, setup) until
//! its completion. A server without capture has `None` there, and a session checks that `Option`
//! once per URB and does nothing else: no allocation, no clock, no copy.
//!
//! USB/IP does not say an endpoint's transfer type, which usbmon records: endpoint 0 is control,
//! a URB with isochronous packets is isochronous, and other endpoints take their type from the
//! configuration descriptors the client read through this session (as Wireshark itself learns
//! them); before that, a URB with an interval is taken as interrupt, one without as bulk
//! (Linux's client sends interval 0 for bulk).

mod file;
pub mod usbmon;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use usbip_proto::{errno, IsoPacket, RetSubmit};

pub use file::{Writer, QUEUE_RECORDS};
use usbmon::{Event, EventType, TransferType};

use crate::device::Urb;

/// The default snap length: data beyond it is not captured (its length still is).
pub const DEFAULT_SNAPLEN: u32 = 65535;

/// An open capture file, shared by every session of a server.
#[derive(Debug, Clone)]
pub struct Capture(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    queue: file::Queue,
    snaplen: u32,
    /// Sessions started so far: the high half of every record's URB id.
    sessions: AtomicU64,
}

impl Capture {
    /// Creates `path` and starts writing to it. Close the returned [`Writer`] at shutdown to
    /// have everything written and the drop count logged.
    pub fn open(path: &Path, snaplen: u32) -> std::io::Result<(Capture, Writer)> {
        let (queue, writer) = file::open(path)?;
        let shared = Shared {
            queue,
            snaplen,
            sessions: AtomicU64::new(0),
        };
        Ok((Capture(Arc::new(shared)), writer))
    }

    /// Records dropped so far because the writer fell behind.
    pub fn dropped(&self) -> u64 {
        self.0.dropped_count()
    }

    /// The capture of one session with the device at `busnum`/`devnum` (the device record's).
    pub fn session(&self, busnum: u32, devnum: u32) -> SessionCapture {
        let number = self.0.sessions.fetch_add(1, Ordering::Relaxed) + 1;
        SessionCapture {
            shared: self.0.clone(),
            id_base: (number & 0xffff_ffff) << 32,
            busnum: busnum as u16,
            devnum: devnum as u8,
            pending: HashMap::new(),
            learned: [None; 32],
        }
    }
}

impl Shared {
    fn dropped_count(&self) -> u64 {
        self.queue.dropped.load(Ordering::Relaxed)
    }
}

/// What a completion record repeats from its submission.
struct Pending {
    endpoint: u8,
    transfer: TransferType,
    setup: [u8; 8],
    interval: u32,
    xfer_flags: u32,
}

/// One session's view of the capture.
pub struct SessionCapture {
    shared: Arc<Shared>,
    id_base: u64,
    busnum: u16,
    devnum: u8,
    pending: HashMap<u32, Pending>,
    /// Transfer types learned from configuration descriptors, by [`slot`] of endpoint address.
    learned: [Option<TransferType>; 32],
}

impl SessionCapture {
    /// The client submitted `urb` and it goes to the device.
    pub fn submit(&mut self, urb: &Urb) {
        let pending = self.pending_of(urb);
        self.record(
            &pending,
            urb.seqnum,
            EventType::Submit,
            errno::EINPROGRESS,
            urb,
        );
        self.pending.insert(urb.seqnum, pending);
    }

    /// The client submitted `urb` but it never reached the device (it was unlinked before it
    /// arrived): an `'E'` record with `status`.
    pub fn refused(&mut self, urb: &Urb, status: i32) {
        let pending = self.pending_of(urb);
        self.record(&pending, urb.seqnum, EventType::Error, status, urb);
    }

    /// The URB was unlinked while in flight: it completes with -ECONNRESET, as on Linux.
    pub fn unlinked(&mut self, seqnum: u32) {
        let ret = RetSubmit {
            seqnum,
            status: errno::ECONNRESET,
            actual_length: 0,
            start_frame: 0,
            number_of_packets: 0,
            error_count: 0,
        };
        self.complete(&ret, &[], &[]);
    }

    /// The completion as it goes to the client.
    pub fn complete(&mut self, ret: &RetSubmit, data: &[u8], iso: &[IsoPacket]) {
        let Some(p) = self.pending.remove(&ret.seqnum) else {
            return;
        };
        if p.transfer == TransferType::Control && is_config_descriptor_request(&p.setup) {
            self.learn(data);
        }
        let event = Event {
            id: self.id_base | u64::from(ret.seqnum),
            kind: EventType::Complete,
            transfer: p.transfer,
            endpoint: p.endpoint,
            devnum: self.devnum,
            busnum: self.busnum,
            setup: None,
            ts_sec: 0,
            ts_usec: 0,
            status: ret.status,
            urb_len: ret.actual_length,
            data,
            iso,
            error_count: ret.error_count,
            interval: p.interval,
            start_frame: ret.start_frame,
            xfer_flags: p.xfer_flags,
        };
        self.push(event);
    }

    fn pending_of(&self, urb: &Urb) -> Pending {
        let endpoint = urb.endpoint_address();
        let transfer = if urb.endpoint == 0 {
            TransferType::Control
        } else if !urb.iso.is_empty() {
            TransferType::Isochronous
        } else if let Some(t) = self.learned[slot(endpoint)] {
            t
        } else if urb.interval != 0 {
            TransferType::Interrupt
        } else {
            TransferType::Bulk
        };
        Pending {
            endpoint,
            transfer,
            setup: urb.setup,
            interval: urb.interval,
            xfer_flags: urb.transfer_flags,
        }
    }

    fn record(&self, p: &Pending, seqnum: u32, kind: EventType, status: i32, urb: &Urb) {
        let event = Event {
            id: self.id_base | u64::from(seqnum),
            kind,
            transfer: p.transfer,
            endpoint: p.endpoint,
            devnum: self.devnum,
            busnum: self.busnum,
            setup: (p.transfer == TransferType::Control).then_some(p.setup),
            ts_sec: 0,
            ts_usec: 0,
            status,
            urb_len: urb.transfer_length,
            data: &urb.data,
            iso: &urb.iso,
            error_count: 0,
            interval: p.interval,
            start_frame: urb.start_frame,
            xfer_flags: p.xfer_flags,
        };
        self.push(event);
    }

    /// Stamps `event` with the time, encodes it and queues it for the writer.
    fn push(&self, mut event: Event<'_>) {
        let timestamp = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        event.ts_sec = timestamp.as_secs() as i64;
        event.ts_usec = timestamp.subsec_micros() as i32;
        let snaplen = self.shared.snaplen as usize;
        let mut bytes = Vec::new();
        event.encode(snaplen, &mut bytes);
        let original_len = bytes.len() + (event.data.len() - event.data.len().min(snaplen));
        self.shared.queue.push(file::Record {
            timestamp,
            bytes,
            original_len: original_len as u32,
        });
    }

    /// Notes the transfer type of every endpoint descriptor in a configuration descriptor set.
    fn learn(&mut self, descriptors: &[u8]) {
        let mut rest = descriptors;
        while let [len, kind, ..] = *rest {
            let len = usize::from(len);
            if len < 2 || len > rest.len() {
                break;
            }
            if kind == 5 && len >= 7 {
                let transfer = match rest[3] & 3 {
                    0 => TransferType::Control,
                    1 => TransferType::Isochronous,
                    2 => TransferType::Bulk,
                    _ => TransferType::Interrupt,
                };
                self.learned[slot(rest[2])] = Some(transfer);
            }
            rest = &rest[len..];
        }
    }
}

/// GET_DESCRIPTOR(CONFIGURATION), device to host.
fn is_config_descriptor_request(setup: &[u8; 8]) -> bool {
    setup[0] == 0x80 && setup[1] == 6 && setup[3] == 2
}

/// Index of an endpoint address in a 32-entry table: number plus 16 for IN.
fn slot(endpoint: u8) -> usize {
    usize::from(endpoint & 0x0f) | (usize::from(endpoint >> 7) << 4)
}

#[cfg(test)]
mod tests;
