//! Gadget Zero's loopback: what the host writes to bulk OUT comes back on bulk IN, in order.
//!
//! A bounded queue of OUT payloads. OUT URBs wait while it is full and IN URBs wait while it is
//! empty; every wait ends in another submit, a cancel or a reset, so nothing here spawns a task
//! or blocks. It must never complete a URB twice, nor one that was cancelled.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use usbip_proto::{errno, transfer_flags};

use crate::device::{Completer, Urb, UrbCompletion};

/// A packet shorter than this ends an IN transfer: the high-speed bulk wMaxPacketSize.
const PACKET: usize = 512;

/// At most this many OUT payloads wait in the queue, so that zero-length writes cannot grow it
/// without bound.
const MAX_CHUNKS: usize = 1024;

/// One OUT transfer's data, waiting for IN URBs.
struct Chunk {
    data: Bytes,
    /// The transfer ended with a short or zero-length packet, which also ends the IN transfer
    /// that reads it, as on the wire.
    ends_transfer: bool,
}

struct ParkedIn {
    seqnum: u32,
    length: usize,
}

struct ParkedOut {
    seqnum: u32,
    chunk: Chunk,
}

pub struct Loopback {
    capacity: usize,
    chunks: VecDeque<Chunk>,
    /// Bytes in `chunks`.
    buffered: usize,
    /// Waiting for data; only ever non-empty while `chunks` is empty.
    parked_in: VecDeque<ParkedIn>,
    /// Waiting for room, in submission order.
    parked_out: VecDeque<ParkedOut>,
}

impl Loopback {
    /// `capacity` bounds the bytes held; a single OUT transfer larger than that is still taken
    /// when the queue is empty, or it could never move.
    pub fn new(capacity: usize) -> Loopback {
        Loopback {
            capacity,
            chunks: VecDeque::new(),
            buffered: 0,
            parked_in: VecDeque::new(),
            parked_out: VecDeque::new(),
        }
    }

    pub fn submit_out(&mut self, urb: Urb, done: &Completer) {
        let len = urb.data.len();
        let zero_packet = urb.transfer_flags & transfer_flags::URB_ZERO_PACKET != 0;
        // Bytes in the last packet (0: it was full). Not is_multiple_of: the MSRV is 1.85.
        let last_packet = len % PACKET;
        let chunk = Chunk {
            ends_transfer: len == 0 || last_packet != 0 || zero_packet,
            data: urb.data,
        };
        let out = ParkedOut {
            seqnum: urb.seqnum,
            chunk,
        };
        if self.parked_out.is_empty() && self.fits(out.chunk.data.len()) {
            self.accept(out, done);
            self.pump(done);
        } else {
            self.parked_out.push_back(out);
        }
    }

    pub fn submit_in(&mut self, urb: Urb, done: &Completer) {
        let length = urb.transfer_length as usize;
        if length == 0 {
            return done.complete(UrbCompletion::data_in(urb.seqnum, Bytes::new()));
        }
        if self.parked_in.is_empty() && !self.chunks.is_empty() {
            let data = self.take(length);
            done.complete(UrbCompletion::data_in(urb.seqnum, data));
            self.pump(done);
        } else {
            self.parked_in.push_back(ParkedIn {
                seqnum: urb.seqnum,
                length,
            });
        }
    }

    /// Forgets a waiting URB. Returns whether it was here.
    pub fn cancel(&mut self, seqnum: u32, done: &Completer) -> bool {
        if let Some(i) = self.parked_in.iter().position(|p| p.seqnum == seqnum) {
            self.parked_in.remove(i);
            return true;
        }
        if let Some(i) = self.parked_out.iter().position(|p| p.seqnum == seqnum) {
            self.parked_out.remove(i);
            // A smaller OUT behind it may fit now.
            self.pump(done);
            return true;
        }
        false
    }

    /// Completes every waiting IN URB with `status` (the IN endpoint halted).
    pub fn fail_in(&mut self, status: i32, done: &Completer) {
        for p in self.parked_in.drain(..) {
            done.complete(UrbCompletion::error(p.seqnum, status));
        }
    }

    /// Completes every waiting OUT URB with `status` (the OUT endpoint halted).
    pub fn fail_out(&mut self, status: i32, done: &Completer) {
        for p in self.parked_out.drain(..) {
            done.complete(UrbCompletion::error(p.seqnum, status));
        }
    }

    /// Endpoints disabled (configuration or interface change): waiting URBs end and the data
    /// is dropped, as g_zero frees its requests.
    pub fn reset(&mut self, done: &Completer) {
        self.fail_in(errno::ESHUTDOWN, done);
        self.fail_out(errno::ESHUTDOWN, done);
        self.chunks.clear();
        self.buffered = 0;
    }

    fn fits(&self, len: usize) -> bool {
        self.chunks.len() < MAX_CHUNKS
            && (self.buffered == 0 || self.buffered + len <= self.capacity)
    }

    fn accept(&mut self, out: ParkedOut, done: &Completer) {
        let len = out.chunk.data.len();
        self.buffered += len;
        self.chunks.push_back(out.chunk);
        done.complete(UrbCompletion::done_out(out.seqnum, len as u32));
    }

    /// Serves waiting IN URBs from the queue and lets waiting OUT URBs in, until neither can
    /// move.
    fn pump(&mut self, done: &Completer) {
        loop {
            while !self.chunks.is_empty() {
                let Some(p) = self.parked_in.pop_front() else {
                    break;
                };
                let data = self.take(p.length);
                done.complete(UrbCompletion::data_in(p.seqnum, data));
            }
            let mut admitted = false;
            while let Some(out) = self.parked_out.front() {
                if !self.fits(out.chunk.data.len()) {
                    break;
                }
                if let Some(out) = self.parked_out.pop_front() {
                    self.accept(out, done);
                    admitted = true;
                }
            }
            if !admitted {
                return;
            }
        }
    }

    /// Up to `max` (> 0) bytes for one IN transfer from a non-empty queue. It ends where an OUT
    /// transfer ended with a short packet, when `max` is reached, or when the queue runs dry
    /// (a real device would keep the transfer open; answering at once keeps latency low).
    /// Without copying when one payload answers it, which is the common case.
    fn take(&mut self, max: usize) -> Bytes {
        let mut first = Bytes::new();
        let mut joined: Option<BytesMut> = None;
        let mut want = max;
        while let Some(front) = self.chunks.front_mut() {
            let n = want.min(front.data.len());
            let piece = front.data.split_to(n);
            want -= n;
            self.buffered -= n;
            let mut ends = false;
            if front.data.is_empty() {
                ends = front.ends_transfer;
                self.chunks.pop_front();
            }
            if let Some(joined) = joined.as_mut() {
                joined.extend_from_slice(&piece);
            } else if first.is_empty() {
                first = piece;
            } else {
                let mut buf = BytesMut::with_capacity(max);
                buf.extend_from_slice(&first);
                buf.extend_from_slice(&piece);
                joined = Some(buf);
            }
            if want == 0 || ends {
                break;
            }
        }
        joined.map_or(first, BytesMut::freeze)
    }
}
