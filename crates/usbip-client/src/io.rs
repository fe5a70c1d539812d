//! The socket side of a connection: the reader task (decodes replies, hands each to whoever
//! waits for it) and the sending side.
//!
//! On TCP, a URB is written by the task that submits it, straight into the socket
//! (`try_write_vectored`, the OUT payload by reference, no copy), as long as nothing is queued;
//! only what the socket cannot take now goes to a backlog that a writer task finishes in order.
//! Any other stream (TLS) has a writer task fed by a channel, writing batches.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::{Arc, Mutex};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{mpsc, Notify};
use usbip_proto::{Command, IsoPacket, Limits, Reply, HEADER_LEN};

use crate::conn::{relock, Shared, Sink, Waiter};
use crate::{Completion, Error, UnlinkResult};

pub(crate) enum Sender {
    Tcp(Arc<TcpOut>),
    Task(mpsc::UnboundedSender<Command>),
}

impl Sender {
    pub(crate) fn tcp(half: OwnedWriteHalf) -> Sender {
        let out = Arc::new(TcpOut {
            half,
            state: Mutex::default(),
            wake: Notify::new(),
        });
        tokio::spawn(backlog_writer(out.clone()));
        Sender::Tcp(out)
    }

    pub(crate) fn task(write: impl AsyncWrite + Unpin + Send + 'static) -> Sender {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(write, rx));
        Sender::Task(tx)
    }

    pub(crate) fn send(&self, cmd: Command) -> Result<(), Error> {
        self.send_many(std::slice::from_ref(&cmd))
    }

    /// Sends commands in order, on TCP in one vectored write when the socket takes them.
    pub(crate) fn send_many(&self, cmds: &[Command]) -> Result<(), Error> {
        match self {
            Sender::Tcp(out) => out.send(cmds),
            Sender::Task(tx) => cmds
                .iter()
                .try_for_each(|c| tx.send(c.clone()).map_err(|_| Error::Closed)),
        }
    }

    /// No more commands: the writer finishes what is queued and closes our side.
    pub(crate) fn close(&self) {
        if let Sender::Tcp(out) = self {
            relock(&out.state).closed = true;
            out.wake.notify_one();
        }
    }
}

#[derive(Default)]
struct Backlog {
    queue: VecDeque<Bytes>,
    /// The writer task holds bytes taken from the queue: nobody may write around it.
    busy: bool,
    closed: bool,
    failed: bool,
}

pub(crate) struct TcpOut {
    half: OwnedWriteHalf,
    state: Mutex<Backlog>,
    wake: Notify,
}

/// A command's wire form in at most three pieces, the payload by reference.
pub(crate) fn pieces(cmd: &Command) -> ([u8; HEADER_LEN], Bytes, Vec<u8>) {
    let mut h = [0u8; HEADER_LEN];
    match cmd {
        Command::Submit { cmd, data, iso } => {
            cmd.encode(&mut h);
            let mut tail = Vec::new();
            IsoPacket::encode_all(iso, &mut tail);
            (h, data.clone(), tail)
        }
        Command::Unlink(u) => {
            u.encode(&mut h);
            (h, Bytes::new(), Vec::new())
        }
    }
}

impl TcpOut {
    fn send(&self, cmds: &[Command]) -> Result<(), Error> {
        let parts: Vec<_> = cmds.iter().map(pieces).collect();
        let mut st = relock(&self.state);
        if st.failed || st.closed {
            return Err(Error::Closed);
        }
        let mut written = 0;
        if st.queue.is_empty() && !st.busy {
            let mut slices = Vec::with_capacity(parts.len() * 3);
            for (h, data, tail) in &parts {
                slices.push(IoSlice::new(h));
                if !data.is_empty() {
                    slices.push(IoSlice::new(data));
                }
                if !tail.is_empty() {
                    slices.push(IoSlice::new(tail));
                }
            }
            match self.half.try_write_vectored(&slices) {
                Ok(n) => written = n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => {
                    st.failed = true;
                    return Err(Error::Closed);
                }
            }
        }
        let total: usize = parts
            .iter()
            .map(|(h, d, t)| h.len() + d.len() + t.len())
            .sum();
        if written == total {
            return Ok(());
        }
        // What the socket did not take, in order, for the writer task.
        let mut skip = written;
        for (h, data, tail) in parts {
            for piece in [Bytes::copy_from_slice(&h), data, Bytes::from(tail)] {
                if skip >= piece.len() {
                    skip -= piece.len();
                    continue;
                }
                st.queue.push_back(piece.slice(skip..));
                skip = 0;
            }
        }
        drop(st);
        self.wake.notify_one();
        Ok(())
    }
}

/// Writes the backlog in order whenever there is one; ends when the connection is dropped (or
/// the socket fails), which closes our side of the socket.
async fn backlog_writer(out: Arc<TcpOut>) {
    let mut batch: Vec<Bytes> = Vec::new();
    loop {
        {
            let mut st = relock(&out.state);
            if st.queue.is_empty() {
                st.busy = false;
                if st.closed || st.failed {
                    return;
                }
            } else {
                st.busy = true;
                let n = st.queue.len().min(256);
                batch.extend(st.queue.drain(..n));
            }
        }
        if batch.is_empty() {
            out.wake.notified().await;
            continue;
        }
        if write_all(&out.half, &mut batch).await.is_err() {
            let mut st = relock(&out.state);
            st.failed = true;
            st.queue.clear();
            st.busy = false;
            return;
        }
    }
}

async fn write_all(half: &OwnedWriteHalf, batch: &mut Vec<Bytes>) -> std::io::Result<()> {
    let mut first = 0;
    while first < batch.len() {
        half.as_ref().writable().await?;
        let slices: Vec<IoSlice<'_>> = batch[first..].iter().map(|b| IoSlice::new(b)).collect();
        let mut n = match half.try_write_vectored(&slices) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        while n > 0 {
            let b = &mut batch[first];
            let k = n.min(b.len());
            b.advance(k);
            n -= k;
            if b.is_empty() {
                first += 1;
            }
        }
        while first < batch.len() && batch[first].is_empty() {
            first += 1;
        }
    }
    batch.clear();
    Ok(())
}

/// The writer of a non-TCP stream: batches of commands, one write each.
async fn write_loop(
    mut socket: impl AsyncWrite + Unpin,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let mut out = Vec::with_capacity(64 * 1024);
    let mut batch = Vec::with_capacity(64);
    while commands.recv_many(&mut batch, 64).await > 0 {
        out.clear();
        for cmd in batch.drain(..) {
            cmd.encode(&mut out);
        }
        if socket.write_all(&out).await.is_err() || socket.flush().await.is_err() {
            return;
        }
    }
}

/// Decodes replies and delivers them, one lock per read; marks the connection closed at the
/// end, which fails everything still waiting.
pub(crate) async fn read_loop(
    mut socket: impl AsyncRead + Unpin,
    mut buf: BytesMut,
    shared: Arc<Mutex<Shared>>,
) {
    let limits = Limits::default();
    'read: loop {
        {
            let mut guard = relock(&shared);
            loop {
                let g = &mut *guard;
                let decoded = Reply::decode(&mut buf, &limits, |seq| match g.waiters.get(&seq) {
                    Some(Waiter::Submit(dir, _)) => Some(*dir),
                    // An unexpected RET_SUBMIT: parse it as OUT to stay in sync; it is recorded.
                    _ => Some(usbip_proto::Direction::Out),
                });
                match decoded {
                    Ok(Some(reply)) => deliver(g, reply),
                    Ok(None) => break,
                    Err(_) => break 'read,
                }
            }
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(READ_BUFFER);
        }
        match socket.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    let mut g = relock(&shared);
    g.closed = true;
    for (_, w) in g.waiters.drain() {
        if let Waiter::Submit(_, Sink::Mailbox(m)) = w {
            m.notify.notify_one();
        }
    }
}

/// Free space the read buffer is topped up to: several 64 KiB replies per read. (Reading a
/// large IN payload into a buffer of its own size instead measured slower: one read per reply.)
pub(crate) const READ_BUFFER: usize = 256 * 1024;

fn complete(sink: Sink, seqnum: u32, c: Completion) {
    match sink {
        Sink::Once(tx) => {
            let _ = tx.send(c);
        }
        Sink::Mailbox(m) => m.push(seqnum, c),
    }
}

fn deliver(shared: &mut Shared, reply: Reply) {
    match reply {
        Reply::Submit { ret, data, iso } => match shared.waiters.remove(&ret.seqnum) {
            Some(Waiter::Submit(_, sink)) => complete(
                sink,
                ret.seqnum,
                Completion {
                    status: ret.status,
                    actual_length: ret.actual_length,
                    data,
                    iso,
                },
            ),
            _ => shared.unexpected.push(ret.seqnum),
        },
        Reply::Unlink(u) => {
            if let Some(Waiter::Unlink(victim, tx)) = shared.waiters.remove(&u.seqnum) {
                let victim_waiting = shared.waiters.contains_key(&victim);
                if u.status != 0 {
                    // Cancelled: a RET_SUBMIT for the victim must never follow. A pipeline
                    // gets the cancellation as the victim's completion.
                    if let Some(Waiter::Submit(_, Sink::Mailbox(m))) =
                        shared.waiters.remove(&victim)
                    {
                        m.push(
                            victim,
                            Completion {
                                status: u.status,
                                actual_length: 0,
                                data: Bytes::new(),
                                iso: Vec::new(),
                            },
                        );
                    }
                } else if victim_waiting {
                    // "Too late to cancel" promises that the RET_SUBMIT came first.
                    shared.unexpected.push(victim);
                }
                let _ = tx.send(UnlinkResult { status: u.status });
            } else {
                shared.unexpected.push(u.seqnum);
            }
        }
    }
}
