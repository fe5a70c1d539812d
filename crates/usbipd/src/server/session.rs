//! The URB phase of one imported device: decode commands, start URBs, match completions,
//! write replies, all in one task.
//!
//! The decisions are the in-flight table's ([`super::inflight`]): a completion for a seqnum no
//! longer in it was unlinked and is dropped, so the client never sees a RET_SUBMIT after a
//! RET_UNLINK(-ECONNRESET). This shell does the I/O. A reply goes into the [`Outbox`], in the
//! order it was made, and the same task writes it out: a URB the device completes inside
//! `submit()` is answered without waking any other task, and one completed elsewhere (a host
//! device's transfer) costs one wake-up, of this task. It never blocks on a slow client: the
//! socket is written only when it is ready, while reading goes on; replies queue without bound
//! in count, and `max_buffered_bytes` closes a client that lets them pile up (or that piles up
//! OUT data a device holds without completing it).

use std::fmt;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::task::Poll;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};
use usbip_proto::{errno, Command, ProtoError, Reply, RetUnlink};

use super::inflight::{InFlight, Pending, Refused, Submit, Unlink};
use super::read_window::ReadWindow;
use super::stream::Conn;
use super::writer::Outbox;
use super::ServerConfig;
use crate::capture::SessionCapture;
use crate::device::{DeviceSession, InlineCompletions, Urb, UrbCompletion};

/// Everything a session needs from a successful import.
pub(super) struct Attached<'a> {
    pub peer: SocketAddr,
    pub busid: &'a str,
    pub devid: u32,
    /// Bus and device number of the device record, for the capture.
    pub busnum: u32,
    pub devnum: u32,
    pub device: Box<dyn DeviceSession>,
    /// Where the device's completions given inside `submit()` are taken.
    pub inline: InlineCompletions,
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
            End::Revoked => write!(f, "device unplugged, unbound or detached by the server"),
            End::DeviceGone => write!(f, "the device went away"),
        }
    }
}

/// In a batch of commands read at once, replies go out after every this many (see
/// `Session::write_early`).
const EARLY_WRITE_EVERY: usize = 8;

struct Session<'a> {
    peer: SocketAddr,
    busid: &'a str,
    devid: u32,
    device: Box<dyn DeviceSession>,
    table: InFlight,
    /// Where the device's completions given inside `submit()` are collected (kept for its
    /// capacity).
    inline: InlineCompletions,
    inline_done: Vec<UrbCompletion>,
    outbox: Outbox,
    /// Bytes received and not yet decoded.
    read_buffered: usize,
    read_window: ReadWindow,
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
    let (read_half, mut write_half) = stream.split();
    let Attached {
        peer,
        busid,
        devid,
        busnum,
        devnum,
        device,
        inline,
        mut completions,
        mut revoked,
    } = attached;
    let mut session = Session {
        peer,
        busid,
        devid,
        device,
        table: InFlight::new(config.max_in_flight),
        inline,
        inline_done: Vec::new(),
        outbox: Outbox::new(config.total_buffered.clone()),
        read_buffered: 0,
        read_window: ReadWindow::default(),
        capture: config.capture.as_ref().map(|c| c.session(busnum, devnum)),
        config,
    };
    let end = session
        .run(
            read_half,
            &mut write_half,
            leftover,
            &mut completions,
            &mut revoked,
        )
        .await;
    if session.table.len() > 0 {
        debug!(%peer, busid, count = session.table.len(), "cancelling URBs in flight");
    }
    let Session {
        device,
        table,
        read_buffered,
        mut outbox,
        ..
    } = session;
    drop(device);
    config.total_buffered.sub(read_buffered + table.held_out());
    // Flush what is queued, but never wait on a client that stopped reading.
    let flush = async {
        if poll_fn(|cx| outbox.poll_write(cx, &mut write_half))
            .await
            .is_ok()
        {
            let _ = write_half.shutdown().await;
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), flush).await;
    outbox.discard();
    end
}

impl Session<'_> {
    async fn run(
        &mut self,
        mut reader: impl AsyncRead + Unpin,
        writer: &mut (impl AsyncWrite + Unpin),
        mut buf: BytesMut,
        completions: &mut mpsc::UnboundedReceiver<UrbCompletion>,
        revoked: &mut watch::Receiver<bool>,
    ) -> End {
        // One future for the whole session: it registers with the watch once, not per turn.
        let revoked = until_revoked(revoked);
        tokio::pin!(revoked);
        loop {
            // Decode everything that has arrived before reading more; in a long batch, the
            // first replies go out while the rest are handled.
            let mut handled = 0;
            loop {
                match Command::decode(&mut buf, &self.config.limits) {
                    Ok(Some(cmd)) => {
                        if let Err(end) = self.handle(cmd, completions) {
                            return end;
                        }
                        handled += 1;
                        if handled % EARLY_WRITE_EVERY == 0 && !self.outbox.is_idle() {
                            if let Err(end) = self.write_early(writer).await {
                                return end;
                            }
                        }
                    }
                    Ok(None) => break,
                    Err(e) => return End::Protocol(e),
                }
            }
            self.set_read_buffered(buf.len());
            let room = self.read_window.room(&mut buf);
            let writing = !self.outbox.is_idle();
            let outbox = &mut self.outbox;
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
                _ = &mut revoked => return End::Revoked,
                // Replies go out before more is read: at one URB in flight this is the answer
                // the client waits for.
                written = poll_fn(|cx| outbox.poll_write(cx, writer)), if writing => {
                    if let Err(end) = written.map_err(write_end) {
                        return end;
                    }
                }
                read = reader.read_buf(&mut buf) => match read {
                    Ok(0) => return End::ClientClosed,
                    Ok(n) => {
                        self.read_window.took(n, room);
                        self.set_read_buffered(buf.len());
                        if let Err(end) = self.check_buffered(self.outbox.backlog()) {
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

    /// Writes what the socket takes now, without waiting for it: at many URBs in flight the
    /// client (on another CPU) starts on these replies while this task handles the rest of
    /// the batch, instead of waiting for the whole batch. What it does not take is written by
    /// the main loop.
    async fn write_early(&mut self, writer: &mut (impl AsyncWrite + Unpin)) -> Result<(), End> {
        let outbox = &mut self.outbox;
        match poll_fn(|cx| Poll::Ready(outbox.poll_write(cx, writer))).await {
            Poll::Ready(Err(e)) => Err(write_end(e)),
            Poll::Ready(Ok(())) | Poll::Pending => Ok(()),
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
                let held = urb.data.len();
                let pending = Pending {
                    direction: h.direction,
                    length: cmd.transfer_buffer_length,
                    held,
                };
                match self.table.submit(h.seqnum, pending) {
                    Err(Refused::TooMany(max)) => {
                        return Err(End::Violation(format!(
                            "max_in_flight ({max}) URBs exceeded"
                        )))
                    }
                    Err(Refused::Duplicate(seqnum)) => {
                        return Err(End::Violation(format!(
                            "seqnum {seqnum} is already in flight"
                        )))
                    }
                    Ok(Submit::Drop) => {
                        if let Some(capture) = &mut self.capture {
                            capture.refused(&urb, errno::ECONNRESET);
                        }
                        debug!(peer = %self.peer, busid = self.busid, seqnum = h.seqnum, "dropping a URB unlinked before it arrived");
                        return Ok(());
                    }
                    Ok(Submit::Start) => {}
                }
                self.config.total_buffered.add(held);
                self.check_buffered(self.outbox.backlog())?;
                if let Some(capture) = &mut self.capture {
                    capture.submit(&urb);
                }
                let device = &mut self.device;
                self.inline
                    .collect(&mut self.inline_done, || device.submit(urb));
                // What the device finished inside submit() is answered now, in its order.
                let mut done = std::mem::take(&mut self.inline_done);
                for completion in done.drain(..) {
                    self.complete(completion)?;
                }
                self.inline_done = done;
                Ok(())
            }
            Command::Unlink(unlink) => {
                // Anything that completed before this unlink goes out first, as the stub does.
                while let Ok(done) = completions.try_recv() {
                    self.complete(done)?;
                }
                let victim = unlink.unlink_seqnum;
                let outcome = self.table.unlink(victim);
                if let Unlink::Cancel { held } = outcome {
                    self.config.total_buffered.sub(held);
                    self.device.cancel(victim);
                    if let Some(capture) = &mut self.capture {
                        capture.unlinked(victim);
                    }
                }
                let status = outcome.status();
                info!(peer = %self.peer, busid = self.busid, seqnum = victim, status, "unlink");
                self.send(Reply::Unlink(RetUnlink {
                    seqnum: unlink.header.seqnum,
                    status,
                }))
            }
        }
    }

    fn complete(&mut self, done: UrbCompletion) -> Result<(), End> {
        let seqnum = done.seqnum;
        let Some(completed) = self.table.complete(done) else {
            return Ok(()); // unlinked meanwhile: the client was told already
        };
        self.config.total_buffered.sub(completed.held);
        if completed.overflowed {
            warn!(peer = %self.peer, busid = self.busid, seqnum, "device returned more data than requested");
        }
        if let (Some(capture), Reply::Submit { ret, data, iso }) =
            (&mut self.capture, &completed.reply)
        {
            capture.complete(ret, data, iso);
        }
        self.send(completed.reply)
    }

    fn send(&mut self, reply: Reply) -> Result<(), End> {
        let queued = self.outbox.push(reply);
        self.check_buffered(queued)
    }

    fn set_read_buffered(&mut self, now: usize) {
        if now >= self.read_buffered {
            self.config.total_buffered.add(now - self.read_buffered);
        } else {
            self.config.total_buffered.sub(self.read_buffered - now);
        }
        self.read_buffered = now;
    }

    /// Enforces `max_buffered_bytes` on `queued` reply bytes plus the undecoded input plus the
    /// OUT payload held by URBs in flight.
    fn check_buffered(&self, queued: usize) -> Result<(), End> {
        let held_out = self.table.held_out();
        let total = queued + self.read_buffered + held_out;
        let limit = self.config.max_buffered_bytes;
        if total > limit {
            return Err(End::Violation(format!(
                "max_buffered_bytes ({limit}) exceeded: {total} bytes buffered ({queued} of replies the client has not read, {held_out} of OUT data the device holds)"
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

/// How a failed write ends the session.
fn write_end(e: std::io::Error) -> End {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        // The client closed while replies were on their way: it has left.
        End::ClientClosed
    } else {
        End::Io(e)
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
