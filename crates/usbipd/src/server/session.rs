//! The URB phase of one imported device: decode commands, start URBs, match completions.
//!
//! This task owns the in-flight table, so it alone decides whether a URB completed or was
//! unlinked: a completion for a seqnum no longer in the table was unlinked and is dropped, so
//! the client never sees a RET_SUBMIT after a RET_UNLINK(-ECONNRESET). It never writes to the
//! socket itself; the writer task does. It never blocks on a slow client either: replies queue
//! without bound in count, and `max_buffered_bytes` closes a client that lets them pile up
//! (or that piles up OUT data a device holds without completing it).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};
use usbip_proto::{errno, Command, Direction, ProtoError, Reply, RetSubmit, RetUnlink};

use super::stream::Conn;
use super::writer::{self, Backlog};
use super::ServerConfig;
use crate::capture::SessionCapture;
use crate::device::{DeviceSession, Urb, UrbCompletion};

/// Everything a session needs from a successful import.
pub(super) struct Attached<'a> {
    pub peer: SocketAddr,
    pub busid: &'a str,
    pub devid: u32,
    /// Bus and device number of the device record, for the capture.
    pub busnum: u32,
    pub devnum: u32,
    pub device: Box<dyn DeviceSession>,
    pub completions: mpsc::UnboundedReceiver<UrbCompletion>,
    /// True once the device is no longer exported: the session ends, as on unplug.
    pub revoked: watch::Receiver<bool>,
}

/// Why a session ended; logged once.
#[derive(Debug)]
pub(super) enum End {
    ClientClosed,
    Io(std::io::Error),
    Protocol(ProtoError),
    Violation(String),
    WriterGone,
    Revoked,
    /// The device session dropped its completer: the device went away.
    DeviceGone,
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            End::ClientClosed => write!(f, "client closed the connection"),
            End::Io(e) => write!(f, "I/O error: {e}"),
            End::Protocol(e) => write!(f, "malformed packet: {e}"),
            End::Violation(why) => write!(f, "{why}"),
            End::WriterGone => write!(f, "could not write to client"),
            End::Revoked => write!(f, "device unplugged, unbound or detached by the server"),
            End::DeviceGone => write!(f, "the device went away"),
        }
    }
}

/// What the session remembers of a URB until it completes.
struct InFlight {
    direction: Direction,
    length: u32,
    /// OUT payload bytes the device holds until the URB completes or is cancelled.
    held: usize,
}

/// How many unlinks of not-yet-submitted seqnums a session remembers.
const MAX_EARLY_UNLINKS: usize = 256;

struct Session<'a> {
    peer: SocketAddr,
    busid: &'a str,
    devid: u32,
    device: Box<dyn DeviceSession>,
    in_flight: HashMap<u32, InFlight>,
    /// The newest seqnum submitted so far (seqnums grow, wrapping, per connection).
    newest_submit: Option<u32>,
    /// Seqnums unlinked before their CMD_SUBMIT arrived: vhci-hcd can put a CMD_UNLINK on the
    /// wire ahead of the CMD_SUBMIT it cancels. The client was told -ECONNRESET, so when the
    /// submit comes it is dropped without a RET_SUBMIT.
    early_unlinks: VecDeque<u32>,
    replies: mpsc::UnboundedSender<Reply>,
    /// Bytes of replies not yet written to the client.
    backlog: Backlog,
    /// Bytes received and not yet decoded.
    read_buffered: usize,
    /// OUT payload bytes of the URBs in flight: a device may hold them indefinitely (gadget
    /// zero's loopback, a serial pipe nobody drains), so they count against the limit too.
    held_out: usize,
    /// `Some` only with `--capture`: checked once per URB, nothing else when off.
    capture: Option<SessionCapture>,
    config: &'a ServerConfig,
}

/// Runs the URB phase until the client leaves or breaks the protocol. Everything in flight is
/// cancelled on the way out (by dropping the device session).
pub(super) async fn run<S: Conn>(
    stream: S,
    leftover: BytesMut,
    attached: Attached<'_>,
    config: &ServerConfig,
) -> End {
    let (read_half, write_half) = stream.split();
    let (replies, reply_rx) = mpsc::unbounded_channel();
    let backlog = Backlog::new(config.total_buffered.clone());
    let writer = tokio::spawn(writer::run(write_half, reply_rx, backlog.clone()));
    let Attached {
        peer,
        busid,
        devid,
        busnum,
        devnum,
        device,
        mut completions,
        mut revoked,
    } = attached;
    let mut session = Session {
        peer,
        busid,
        devid,
        device,
        in_flight: HashMap::new(),
        newest_submit: None,
        early_unlinks: VecDeque::new(),
        replies,
        backlog,
        read_buffered: 0,
        held_out: 0,
        capture: config.capture.as_ref().map(|c| c.session(busnum, devnum)),
        config,
    };
    let end = session
        .run(read_half, leftover, &mut completions, &mut revoked)
        .await;
    if !session.in_flight.is_empty() {
        debug!(%peer, busid, count = session.in_flight.len(), "cancelling URBs in flight");
    }
    let Session {
        device,
        replies,
        read_buffered,
        held_out,
        backlog,
        ..
    } = session;
    drop(device);
    drop(replies);
    config.total_buffered.sub(read_buffered + held_out);
    // Let the writer flush what is queued, but never wait on a client that stopped reading.
    let mut writer = writer;
    if tokio::time::timeout(std::time::Duration::from_secs(1), &mut writer)
        .await
        .is_err()
    {
        writer.abort();
        let _ = writer.await; // finished or cancelled: it counts nothing more
    }
    backlog.discard();
    end
}

impl Session<'_> {
    async fn run(
        &mut self,
        mut reader: impl AsyncRead + Unpin,
        mut buf: BytesMut,
        completions: &mut mpsc::UnboundedReceiver<UrbCompletion>,
        revoked: &mut watch::Receiver<bool>,
    ) -> End {
        buf.reserve(64 * 1024);
        loop {
            // Decode everything that has arrived before reading more.
            loop {
                match Command::decode(&mut buf, &self.config.limits) {
                    Ok(Some(cmd)) => {
                        if let Err(end) = self.handle(cmd, completions) {
                            return end;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => return End::Protocol(e),
                }
            }
            self.set_read_buffered(buf.len());
            if buf.capacity() - buf.len() < 4096 {
                buf.reserve(64 * 1024);
            }
            tokio::select! {
                // Completions first: a URB that finished before an unlink arrived must be
                // reported as finished.
                biased;
                done = completions.recv() => {
                    let Some(done) = done else {
                        return End::DeviceGone;
                    };
                    if let Err(end) = self.complete(done) {
                        return end;
                    }
                }
                _ = until_revoked(revoked) => return End::Revoked,
                read = reader.read_buf(&mut buf) => match read {
                    Ok(0) => return End::ClientClosed,
                    Ok(_) => {
                        self.set_read_buffered(buf.len());
                        if let Err(end) = self.check_buffered(self.backlog.get()) {
                            return end;
                        }
                    }
                    // A TLS peer that closes without close_notify (vhci-hcd with kernel TLS
                    // just closes the socket) has left, as a TCP peer sending FIN has.
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return End::ClientClosed,
                    Err(e) => return End::Io(e),
                },
            }
        }
    }

    fn handle(
        &mut self,
        cmd: Command,
        completions: &mut mpsc::UnboundedReceiver<UrbCompletion>,
    ) -> Result<(), End> {
        // The kernel's stub checks devid on every command, CMD_UNLINK included.
        let devid = match &cmd {
            Command::Submit { cmd, .. } => cmd.header.devid,
            Command::Unlink(unlink) => unlink.header.devid,
        };
        if devid != self.devid {
            return Err(End::Violation(format!(
                "devid {:#x} does not match the imported device {:#x}",
                devid, self.devid
            )));
        }
        match cmd {
            Command::Submit { cmd, data, iso } => {
                let h = cmd.header;
                let urb = Urb {
                    seqnum: h.seqnum,
                    endpoint: h.ep as u8,
                    direction: h.direction,
                    transfer_flags: cmd.transfer_flags,
                    transfer_length: cmd.transfer_buffer_length,
                    setup: cmd.setup,
                    data,
                    interval: cmd.interval,
                    start_frame: cmd.start_frame,
                    iso,
                };
                if self.in_flight.len() >= self.config.max_in_flight {
                    return Err(End::Violation(format!(
                        "max_in_flight ({}) URBs exceeded",
                        self.config.max_in_flight
                    )));
                }
                if let Some(i) = self.early_unlinks.iter().position(|&s| s == h.seqnum) {
                    self.early_unlinks.remove(i);
                    if let Some(capture) = &mut self.capture {
                        capture.refused(&urb, errno::ECONNRESET);
                    }
                    debug!(peer = %self.peer, busid = self.busid, seqnum = h.seqnum, "dropping a URB unlinked before it arrived");
                    return Ok(());
                }
                if self.in_flight.contains_key(&h.seqnum) {
                    return Err(End::Violation(format!(
                        "seqnum {} is already in flight",
                        h.seqnum
                    )));
                }
                if self.is_newer(h.seqnum) {
                    self.newest_submit = Some(h.seqnum);
                }
                let held = urb.data.len();
                self.in_flight.insert(
                    h.seqnum,
                    InFlight {
                        direction: h.direction,
                        length: cmd.transfer_buffer_length,
                        held,
                    },
                );
                self.held_out += held;
                self.config.total_buffered.add(held);
                self.check_buffered(self.backlog.get())?;
                if let Some(capture) = &mut self.capture {
                    capture.submit(&urb);
                }
                self.device.submit(urb);
                Ok(())
            }
            Command::Unlink(unlink) => {
                // Anything that completed before this unlink goes out first, as the stub does.
                while let Ok(done) = completions.try_recv() {
                    self.complete(done)?;
                }
                let victim = unlink.unlink_seqnum;
                let status = if let Some(urb) = self.in_flight.remove(&victim) {
                    self.release_held(urb.held);
                    self.device.cancel(victim);
                    if let Some(capture) = &mut self.capture {
                        capture.unlinked(victim);
                    }
                    errno::ECONNRESET
                } else if self.is_newer(victim) {
                    // Its CMD_SUBMIT is still on the way (see `early_unlinks`).
                    if self.early_unlinks.len() == MAX_EARLY_UNLINKS {
                        self.early_unlinks.pop_front();
                    }
                    self.early_unlinks.push_back(victim);
                    errno::ECONNRESET
                } else {
                    0 // completed already: its RET_SUBMIT went out first
                };
                info!(peer = %self.peer, busid = self.busid, seqnum = victim, status, "unlink");
                self.send(Reply::Unlink(RetUnlink {
                    seqnum: unlink.header.seqnum,
                    status,
                }))
            }
        }
    }

    fn complete(&mut self, done: UrbCompletion) -> Result<(), End> {
        let Some(urb) = self.in_flight.remove(&done.seqnum) else {
            return Ok(()); // unlinked meanwhile: the client was told already
        };
        self.release_held(urb.held);
        let mut ret = RetSubmit {
            seqnum: done.seqnum,
            status: done.status,
            actual_length: done.actual_length,
            start_frame: done.start_frame,
            number_of_packets: done.iso.len() as u32,
            error_count: done.error_count,
        };
        let mut data = done.data;
        match urb.direction {
            Direction::In if data.len() > urb.length as usize => {
                // A device must never return more than asked; the client would overrun.
                warn!(peer = %self.peer, busid = self.busid, seqnum = done.seqnum, "device returned more data than requested");
                data.truncate(urb.length as usize);
                ret.actual_length = urb.length;
                ret.status = errno::EOVERFLOW;
            }
            Direction::In if done.iso.is_empty() => ret.actual_length = data.len() as u32,
            Direction::Out => {
                data = Bytes::new();
                ret.actual_length = ret.actual_length.min(urb.length);
            }
            _ => {}
        }
        if let Some(capture) = &mut self.capture {
            capture.complete(&ret, &data, &done.iso);
        }
        self.send(Reply::Submit {
            ret,
            data,
            iso: done.iso,
        })
    }

    /// Whether `seqnum` is newer than every seqnum submitted so far, in wrapping order.
    fn is_newer(&self, seqnum: u32) -> bool {
        match self.newest_submit {
            None => true,
            Some(newest) => (seqnum.wrapping_sub(newest) as i32) > 0,
        }
    }

    fn send(&mut self, reply: Reply) -> Result<(), End> {
        let queued = self.backlog.add(writer::wire_len(&reply));
        self.check_buffered(queued)?;
        self.replies.send(reply).map_err(|_| End::WriterGone)
    }

    fn set_read_buffered(&mut self, now: usize) {
        if now >= self.read_buffered {
            self.config.total_buffered.add(now - self.read_buffered);
        } else {
            self.config.total_buffered.sub(self.read_buffered - now);
        }
        self.read_buffered = now;
    }

    fn release_held(&mut self, held: usize) {
        self.held_out -= held;
        self.config.total_buffered.sub(held);
    }

    /// Enforces `max_buffered_bytes` on `queued` reply bytes plus the undecoded input plus the
    /// OUT payload held by URBs in flight.
    fn check_buffered(&self, queued: usize) -> Result<(), End> {
        let total = queued + self.read_buffered + self.held_out;
        let limit = self.config.max_buffered_bytes;
        if total > limit {
            return Err(End::Violation(format!(
                "max_buffered_bytes ({limit}) exceeded: {total} bytes buffered ({queued} of replies the client has not read, {} of OUT data the device holds)",
                self.held_out
            )));
        }
        let all = self.config.total_buffered.get();
        let limit = self.config.max_total_buffered_bytes;
        if all > limit {
            return Err(End::Violation(format!(
                "max_total_buffered_bytes ({limit}) exceeded: {all} bytes buffered for all clients, {total} of them for this one"
            )));
        }
        Ok(())
    }
}

/// Resolves once the device stops being exported (or its registry entry is gone).
async fn until_revoked(revoked: &mut watch::Receiver<bool>) {
    loop {
        if *revoked.borrow_and_update() {
            return;
        }
        if revoked.changed().await.is_err() {
            return;
        }
    }
}
