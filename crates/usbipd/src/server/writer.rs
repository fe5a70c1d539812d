//! The only writer of a session's socket: batches whatever replies are queued and sends each
//! batch with one vectored write (headers from one scratch buffer, payloads where they are).
//! It keeps the [`Backlog`] count of what waits to be written; it never decides to close.

use std::io::IoSlice;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
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

/// Bytes of replies queued for the writer and not yet written: the session adds, the writer
/// subtracts once a batch is on the wire. Both also count in the server-wide total.
#[derive(Debug, Clone)]
pub(super) struct Backlog(Arc<AtomicUsize>, TotalBuffered);

impl Backlog {
    pub(super) fn new(total: TotalBuffered) -> Backlog {
        Backlog(Arc::default(), total)
    }

    /// Counts `n` more bytes queued; returns the new total.
    pub(super) fn add(&self, n: usize) -> usize {
        self.1.add(n);
        self.0.fetch_add(n, Ordering::Relaxed) + n
    }

    fn written(&self, n: usize) {
        self.0.fetch_sub(n, Ordering::Relaxed);
        self.1.sub(n);
    }

    /// Gives back whatever was never written (the writer is gone).
    pub(super) fn discard(&self) {
        let left = self.0.swap(0, Ordering::Relaxed);
        self.1.sub(left);
    }

    pub(super) fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// Bytes `reply` takes on the wire.
pub(super) fn wire_len(reply: &Reply) -> usize {
    match reply {
        Reply::Submit { data, iso, .. } => HEADER_LEN + data.len() + iso.len() * ISO_PACKET_LEN,
        Reply::Unlink(_) => HEADER_LEN,
    }
}

pub(super) async fn run<W: AsyncWrite + Unpin>(
    mut socket: W,
    mut replies: mpsc::UnboundedReceiver<Reply>,
    backlog: Backlog,
) {
    let mut batch: Vec<Reply> = Vec::with_capacity(MAX_BATCH);
    let mut scratch: Vec<u8> = Vec::with_capacity(MAX_BATCH * HEADER_LEN);
    let mut pieces: Vec<Piece> = Vec::with_capacity(MAX_PIECES);
    while replies.recv_many(&mut batch, MAX_BATCH).await > 0 {
        scratch.clear();
        pieces.clear();
        let mut bytes = 0;
        for reply in batch.drain(..) {
            bytes += wire_len(&reply);
            encode(reply, &mut scratch, &mut pieces);
        }
        // The flush matters for TLS, which may keep the end of a batch in its buffer; on a TCP
        // socket it does nothing.
        if write_pieces(&mut socket, &scratch, &pieces).await.is_err()
            || socket.flush().await.is_err()
        {
            return; // the session notices the closed connection on its read side
        }
        backlog.written(bytes);
    }
    let _ = socket.shutdown().await;
}

fn encode(reply: Reply, scratch: &mut Vec<u8>, pieces: &mut Vec<Piece>) {
    let start = scratch.len();
    let mut header = [0u8; HEADER_LEN];
    match reply {
        Reply::Submit { ret, data, iso } => {
            ret.encode(&mut header);
            scratch.extend_from_slice(&header);
            if data.is_empty() {
                IsoPacket::encode_all(&iso, scratch);
                pieces.push(Piece::Scratch(start, scratch.len()));
            } else {
                pieces.push(Piece::Scratch(start, scratch.len()));
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
            pieces.push(Piece::Scratch(start, scratch.len()));
        }
    }
}

async fn write_pieces<W: AsyncWrite + Unpin>(
    socket: &mut W,
    scratch: &[u8],
    pieces: &[Piece],
) -> std::io::Result<()> {
    // On the stack: no allocation per write. A batch has at most three pieces per reply.
    let mut slices = [IoSlice::new(&[]); MAX_PIECES];
    for (slot, p) in slices.iter_mut().zip(pieces) {
        *slot = match p {
            Piece::Scratch(a, b) => IoSlice::new(&scratch[*a..*b]),
            Piece::Payload(d) => IoSlice::new(d),
        };
    }
    let mut remaining: &mut [IoSlice<'_>] = &mut slices[..pieces.len().min(MAX_PIECES)];
    while !remaining.is_empty() {
        let n = socket.write_vectored(remaining).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut remaining, n);
    }
    Ok(())
}
