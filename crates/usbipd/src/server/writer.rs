//! The session's outgoing side: replies wait here, in order, until the socket takes them. Each
//! batch of queued replies goes out with one vectored write (headers from one scratch buffer,
//! payloads where they are) and one flush. It is polled by the session task itself, so a reply
//! a device gives inside `submit()` is written without waking another task.
//! It keeps the count of what waits to be written (the backlog); it never decides to close.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use usbip_proto::{IsoPacket, Reply, HEADER_LEN, ISO_PACKET_LEN};

/// Replies gathered into one write at most; bounded so one write stays a sensible size.
const MAX_BATCH: usize = 64;
/// Header, payload and iso descriptors: at most three pieces per reply.
const MAX_PIECES: usize = MAX_BATCH * 3;

/// One piece of a batch: a range of the scratch buffer, or a payload.
enum Piece {
    Scratch(usize, usize),
    Payload(Bytes),
}

/// Bytes held for all connections of a server (see `ServerConfig::max_total_buffered_bytes`).
#[derive(Debug, Clone, Default)]
pub struct TotalBuffered(Arc<AtomicUsize>);

impl TotalBuffered {
    pub(super) fn add(&self, n: usize) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub(super) fn sub(&self, n: usize) {
        self.0.fetch_sub(n, Ordering::Relaxed);
    }

    /// Bytes held now, across all connections.
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    /// Whether `other` is the same count (a clone), not another one.
    pub fn same_count(&self, other: &TotalBuffered) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// Bytes `reply` takes on the wire.
fn wire_len(reply: &Reply) -> usize {
    match reply {
        Reply::Submit { data, iso, .. } => HEADER_LEN + data.len() + iso.len() * ISO_PACKET_LEN,
        Reply::Unlink(_) => HEADER_LEN,
    }
}

/// Replies not yet on the wire, in the order they were queued. Every byte of them also counts
/// in the server-wide total until it is written or [`Outbox::discard`]ed.
pub(super) struct Outbox {
    queued: VecDeque<Reply>,
    /// The batch being written: its headers, its pieces, and how far the socket took them.
    scratch: Vec<u8>,
    pieces: Vec<Piece>,
    next_piece: usize,
    offset: usize,
    batch_bytes: usize,
    /// The batch is written and its flush has not completed yet.
    flushing: bool,
    /// Bytes queued or in the batch, not yet written.
    backlog: usize,
    total: TotalBuffered,
}

impl Outbox {
    pub fn new(total: TotalBuffered) -> Outbox {
        Outbox {
            queued: VecDeque::new(),
            scratch: Vec::with_capacity(MAX_BATCH * HEADER_LEN),
            pieces: Vec::with_capacity(MAX_PIECES),
            next_piece: 0,
            offset: 0,
            batch_bytes: 0,
            flushing: false,
            backlog: 0,
            total,
        }
    }

    /// Queues `reply` after everything queued before; returns the bytes now waiting.
    pub fn push(&mut self, reply: Reply) -> usize {
        let n = wire_len(&reply);
        self.total.add(n);
        self.backlog += n;
        self.queued.push_back(reply);
        self.backlog
    }

    /// Bytes queued and not yet written.
    pub fn backlog(&self) -> usize {
        self.backlog
    }

    /// Whether there is nothing to write or flush.
    pub fn is_idle(&self) -> bool {
        self.queued.is_empty() && self.next_piece == self.pieces.len() && !self.flushing
    }

    /// Writes until everything queued is on the wire and flushed (`Ready(Ok)`), the socket
    /// fails, or it would block (`Pending`, woken when it can take more). Cancel-safe: the
    /// progress is kept here, so it can be polled from a `select!` that another branch wins.
    pub fn poll_write<W: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        socket: &mut W,
    ) -> Poll<std::io::Result<()>> {
        loop {
            if self.next_piece == self.pieces.len() {
                if self.flushing {
                    // The flush matters for TLS, which may keep the end of a batch in its
                    // buffer; on a TCP socket it does nothing.
                    ready!(Pin::new(&mut *socket).poll_flush(cx))?;
                    self.flushing = false;
                    self.backlog -= self.batch_bytes;
                    self.total.sub(self.batch_bytes);
                }
                if self.queued.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                self.encode_batch();
            }
            let mut slices = [IoSlice::new(&[]); MAX_PIECES];
            let mut count = 0;
            for (slot, piece) in slices.iter_mut().zip(&self.pieces[self.next_piece..]) {
                let bytes: &[u8] = match piece {
                    Piece::Scratch(a, b) => &self.scratch[*a..*b],
                    Piece::Payload(d) => d,
                };
                // The first piece may be partly written already.
                let skip = if count == 0 { self.offset } else { 0 };
                *slot = IoSlice::new(&bytes[skip..]);
                count += 1;
            }
            let n = ready!(Pin::new(&mut *socket).poll_write_vectored(cx, &slices[..count]))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.advance(n);
        }
    }

    /// Gives back to the server-wide count whatever was never written (the session is over).
    pub fn discard(&mut self) {
        self.total.sub(self.backlog);
        self.backlog = 0;
        self.queued.clear();
        self.pieces.clear();
        self.next_piece = 0;
    }

    /// Moves up to [`MAX_BATCH`] queued replies into a new batch.
    fn encode_batch(&mut self) {
        self.scratch.clear();
        self.pieces.clear();
        self.next_piece = 0;
        self.offset = 0;
        self.batch_bytes = 0;
        let n = self.queued.len().min(MAX_BATCH);
        for reply in self.queued.drain(..n) {
            self.batch_bytes += wire_len(&reply);
            encode(reply, &mut self.scratch, &mut self.pieces);
        }
    }

    /// The socket took `n` more bytes of the batch.
    fn advance(&mut self, mut n: usize) {
        while n > 0 {
            let len = match &self.pieces[self.next_piece] {
                Piece::Scratch(a, b) => b - a,
                Piece::Payload(d) => d.len(),
            } - self.offset;
            if n < len {
                self.offset += n;
                return;
            }
            n -= len;
            self.offset = 0;
            // Let go of the payload now: its buffer may go back to the device's pool.
            self.pieces[self.next_piece] = Piece::Scratch(0, 0);
            self.next_piece += 1;
        }
        if self.next_piece == self.pieces.len() {
            self.flushing = true;
        }
    }
}

/// Payloads up to this size are copied next to their header: a batch of small replies (control
/// transfers, interrupt reports) then goes out as one contiguous slice instead of two per
/// reply, which the kernel walks one by one.
const COPY_AT_MOST: usize = 512;

fn encode(reply: Reply, scratch: &mut Vec<u8>, pieces: &mut Vec<Piece>) {
    let start = scratch.len();
    let mut header = [0u8; HEADER_LEN];
    match reply {
        Reply::Submit { ret, data, iso } => {
            ret.encode(&mut header);
            scratch.extend_from_slice(&header);
            if data.len() <= COPY_AT_MOST {
                scratch.extend_from_slice(&data);
                IsoPacket::encode_all(&iso, scratch);
                push_scratch(pieces, start, scratch.len());
            } else {
                push_scratch(pieces, start, scratch.len());
                pieces.push(Piece::Payload(data));
                if !iso.is_empty() {
                    let iso_start = scratch.len();
                    scratch.reserve(iso.len() * ISO_PACKET_LEN);
                    IsoPacket::encode_all(&iso, scratch);
                    pieces.push(Piece::Scratch(iso_start, scratch.len()));
                }
            }
        }
        Reply::Unlink(u) => {
            u.encode(&mut header);
            scratch.extend_from_slice(&header);
            push_scratch(pieces, start, scratch.len());
        }
    }
}

/// Adds scratch bytes `a..b` to the batch, as part of the last piece when that one ends at `a`.
fn push_scratch(pieces: &mut Vec<Piece>, a: usize, b: usize) {
    if let Some(Piece::Scratch(_, end)) = pieces.last_mut() {
        if *end == a {
            *end = b;
            return;
        }
    }
    pieces.push(Piece::Scratch(a, b));
}

#[cfg(test)]
mod tests;
