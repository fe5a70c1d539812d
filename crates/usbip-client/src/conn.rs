//! The URB phase of an imported device: [`Connection`] (submit from any number of tasks, unlink),
//! [`Pending`] (one URB on its way) and [`Pipeline`] (many URBs in flight from one task, their
//! completions delivered in batches through one mailbox instead of one channel per URB).
//!
//! The in-flight table (seqnum -> who waits) is shared with the reader task in `io`; the
//! sending side is `io::Sender`, which on TCP writes from the submitting task itself when the
//! socket has room, so a URB costs no task hand-off on the way out.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio::sync::{oneshot, Notify};
use usbip_proto::{CmdUnlink, Command, DeviceRecord, Direction, UrbHeader};

use crate::io::{self, Sender};
use crate::{import_on, Completion, Error, Submit, UnlinkResult};

/// Where a completion goes.
pub(crate) enum Sink {
    /// One waiting [`Pending`].
    Once(oneshot::Sender<Completion>),
    /// A [`Pipeline`]'s mailbox.
    Mailbox(Arc<Mailbox>),
}

pub(crate) enum Waiter {
    Submit(Direction, Sink),
    /// The victim's seqnum, and who waits for the RET_UNLINK.
    Unlink(u32, oneshot::Sender<UnlinkResult>),
}

/// Completions of one pipeline, filled by the reader task, drained by the pipeline's owner.
#[derive(Default)]
pub(crate) struct Mailbox {
    pub(crate) done: Mutex<VecDeque<(u32, Completion)>>,
    pub(crate) notify: Notify,
}

impl Mailbox {
    pub(crate) fn push(&self, seqnum: u32, c: Completion) {
        relock(&self.done).push_back((seqnum, c));
        self.notify.notify_one();
    }
}

#[derive(Default)]
pub(crate) struct Shared {
    pub(crate) waiters: HashMap<u32, Waiter>,
    /// Replies nobody waited for (after an unlink raced a completion), kept for inspection.
    pub(crate) unexpected: Vec<u32>,
    pub(crate) closed: bool,
}

/// Locks, ignoring poisoning: the tables stay consistent between statements.
pub(crate) fn relock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A URB on its way: its seqnum (to unlink it) and its completion.
pub struct Pending {
    pub seqnum: u32,
    rx: oneshot::Receiver<Completion>,
}

impl Pending {
    /// Waits for the RET_SUBMIT. `Err(Closed)` if the connection ended or the URB was unlinked.
    pub async fn wait(self) -> Result<Completion, Error> {
        self.rx.await.map_err(|_| Error::Closed)
    }
}

struct Inner {
    shared: Arc<Mutex<Shared>>,
    out: Sender,
    next_seqnum: AtomicU32,
    record: DeviceRecord,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The last handle is gone: the writer ends, which closes our side of the socket.
        self.out.close();
    }
}

/// An imported device: submit URBs concurrently from any number of tasks.
#[derive(Clone)]
pub struct Connection {
    inner: Arc<Inner>,
}

impl Connection {
    /// Imports `busid` from the server at `addr`.
    pub async fn import(addr: impl ToSocketAddrs, busid: &str) -> Result<Connection, Error> {
        let mut stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (record, leftover) = import_on(&mut stream, busid).await?;
        let (read, write) = stream.into_split();
        let shared = Arc::new(Mutex::new(Shared::default()));
        tokio::spawn(io::read_loop(read, leftover, shared.clone()));
        Ok(Connection::new(shared, Sender::tcp(write), record))
    }

    /// Imports `busid` over a connected stream (TCP, or TLS around it), and runs the URB
    /// phase on it.
    pub async fn import_over<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
        mut stream: S,
        busid: &str,
    ) -> Result<Connection, Error> {
        let (record, leftover): (DeviceRecord, BytesMut) = import_on(&mut stream, busid).await?;
        let (read, write) = tokio::io::split(stream);
        let shared = Arc::new(Mutex::new(Shared::default()));
        tokio::spawn(io::read_loop(read, leftover, shared.clone()));
        Ok(Connection::new(shared, Sender::task(write), record))
    }

    fn new(shared: Arc<Mutex<Shared>>, out: Sender, record: DeviceRecord) -> Connection {
        Connection {
            inner: Arc::new(Inner {
                shared,
                out,
                next_seqnum: AtomicU32::new(1),
                record,
            }),
        }
    }

    /// The device record the import reply carried.
    pub fn record(&self) -> &DeviceRecord {
        &self.inner.record
    }

    fn seqnum(&self) -> u32 {
        self.inner.next_seqnum.fetch_add(1, Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        relock(&self.inner.shared)
    }

    /// Records who waits for `submit` and sends it; returns its seqnum.
    fn send_submit(&self, submit: Submit, sink: Sink) -> Result<u32, Error> {
        let (seqnum, cmd) = self.register(submit, sink)?;
        if let Err(e) = self.inner.out.send(cmd) {
            self.lock().waiters.remove(&seqnum);
            return Err(e);
        }
        Ok(seqnum)
    }

    /// Records who waits for `submit`; returns its seqnum and the command to send.
    fn register(&self, submit: Submit, sink: Sink) -> Result<(u32, Command), Error> {
        let seqnum = self.seqnum();
        {
            let mut shared = self.lock();
            if shared.closed {
                return Err(Error::Closed);
            }
            shared
                .waiters
                .insert(seqnum, Waiter::Submit(submit.direction, sink));
        }
        let cmd = crate::command(seqnum, self.inner.record.devid(), submit);
        Ok((seqnum, cmd))
    }

    /// Sends a URB without waiting for it.
    pub fn start(&self, submit: Submit) -> Result<Pending, Error> {
        let (tx, rx) = oneshot::channel();
        let seqnum = self.send_submit(submit, Sink::Once(tx))?;
        Ok(Pending { seqnum, rx })
    }

    /// Sends a URB and waits for its completion.
    pub async fn submit(&self, submit: Submit) -> Result<Completion, Error> {
        self.start(submit)?.wait().await
    }

    /// A pipeline on this connection: keep many URBs in flight from one task and take their
    /// completions as they come, without a channel per URB.
    pub fn pipeline(&self) -> Pipeline {
        Pipeline {
            conn: self.clone(),
            mailbox: Arc::default(),
            in_flight: 0,
            ready: VecDeque::new(),
            batch: Vec::new(),
            batch_seqnums: Vec::new(),
        }
    }

    /// Unlinks a URB; returns what RET_UNLINK said (-ECONNRESET: cancelled; 0: too late).
    pub async fn unlink(&self, victim: u32) -> Result<UnlinkResult, Error> {
        let seqnum = self.seqnum();
        let (tx, rx) = oneshot::channel();
        self.lock()
            .waiters
            .insert(seqnum, Waiter::Unlink(victim, tx));
        let cmd = Command::Unlink(CmdUnlink {
            header: UrbHeader {
                seqnum,
                devid: self.inner.record.devid(),
                direction: Direction::Out,
                ep: 0,
            },
            unlink_seqnum: victim,
        });
        self.inner.out.send(cmd)?;
        rx.await.map_err(|_| Error::Closed)
    }

    /// Seqnums of protocol-order violations seen: a reply nobody waited for (e.g. a RET_SUBMIT
    /// after its RET_UNLINK said cancelled), or a RET_UNLINK saying "too late" before the
    /// victim's RET_SUBMIT arrived. A correct server produces none.
    pub fn unexpected_replies(&self) -> Vec<u32> {
        self.lock().unexpected.clone()
    }

    /// Sends raw bytes on the connection, for tests of malformed traffic.
    pub fn send_raw(&self, cmd: Command) -> Result<(), Error> {
        self.inner.out.send(cmd)
    }

    /// Whether the server has closed the connection.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }
}

/// Many URBs in flight from one task: [`Pipeline::start`] queues a URB, [`Pipeline::next`]
/// sends what is queued (one write for all of it) and returns completions in the order they
/// arrive. The reader task appends them to one mailbox and wakes the owner once per batch, so
/// a deep pipeline costs one wake-up and one write per batch, not per URB.
/// Queued URBs are sent by `next`, `flush`, when 64 are queued, or when the pipeline is dropped.
/// An unlinked URB that the server cancelled completes with the RET_UNLINK's status.
pub struct Pipeline {
    conn: Connection,
    mailbox: Arc<Mailbox>,
    in_flight: usize,
    ready: VecDeque<(u32, Completion)>,
    batch: Vec<Command>,
    batch_seqnums: Vec<u32>,
}

/// Queued URBs beyond which `start` sends at once.
const BATCH: usize = 64;

impl Pipeline {
    /// Queues a URB; returns its seqnum (to unlink it once sent).
    pub fn start(&mut self, submit: Submit) -> Result<u32, Error> {
        let (seqnum, cmd) = self
            .conn
            .register(submit, Sink::Mailbox(self.mailbox.clone()))?;
        self.batch.push(cmd);
        self.batch_seqnums.push(seqnum);
        self.in_flight += 1;
        if self.batch.len() >= BATCH {
            self.flush()?;
        }
        Ok(seqnum)
    }

    /// Sends the queued URBs.
    pub fn flush(&mut self) -> Result<(), Error> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let sent = self.conn.inner.out.send_many(&self.batch);
        self.batch.clear();
        if sent.is_err() {
            let mut shared = self.conn.lock();
            for s in &self.batch_seqnums {
                shared.waiters.remove(s);
            }
            self.in_flight = self.in_flight.saturating_sub(self.batch_seqnums.len());
        }
        self.batch_seqnums.clear();
        sent
    }

    /// URBs started and not yet returned by [`Pipeline::next`].
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Sends what is queued, then returns the next completion (seqnum, completion); `None`
    /// when nothing is in flight, `Some(Err(Closed))` (once) when the connection ended with
    /// URBs in flight.
    pub async fn next(&mut self) -> Option<Result<(u32, Completion), Error>> {
        if let Err(e) = self.flush() {
            return Some(Err(e));
        }
        loop {
            if let Some(done) = self.ready.pop_front() {
                self.in_flight = self.in_flight.saturating_sub(1);
                return Some(Ok(done));
            }
            if self.in_flight == 0 {
                return None;
            }
            std::mem::swap(&mut self.ready, &mut relock(&self.mailbox.done));
            if !self.ready.is_empty() {
                continue;
            }
            if self.conn.is_closed() {
                self.in_flight = 0;
                return Some(Err(Error::Closed));
            }
            self.mailbox.notify.notified().await;
        }
    }

    /// The connection this pipeline sends on.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}
