//! One client's session with the virtual disk: the Bulk-Only Transport state machine over the two
//! bulk endpoints, with parked URBs, endpoint halts and reset recovery.
//!
//! File I/O runs on the blocking pool and completes URBs from there; nothing here does I/O on the
//! caller's thread, and the state lock is held for bookkeeping only, never across I/O.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use usbip_proto::{errno, transfer_flags};

use super::bot::{self, Cbw, Settlement, Status, Transfer};
use super::image::Image;
use super::scsi::{Action, Lun, Sense};
use super::{EP_IN, EP_OUT, INTERFACE, MAX_PACKET};
use crate::device::r#virtual::{ControlResult, FunctionSession};
use crate::device::setup::{request, Recipient, RequestKind, SetupPacket, ENDPOINT_HALT};
use crate::device::{Completer, Urb, UrbCompletion};

pub(super) struct Session {
    state: Arc<Mutex<State>>,
    image: Arc<Image>,
}

impl Session {
    pub(super) fn new(image: Arc<Image>, lun: Lun, completer: Completer) -> Session {
        Session {
            state: Arc::new(Mutex::new(State {
                completer,
                lun,
                phase: Phase::Idle,
                in_queue: VecDeque::new(),
                out_queue: VecDeque::new(),
                in_halted: false,
                out_halted: false,
                needs_reset: false,
                epoch: 0,
                io_running: false,
                closed: false,
            })),
            image,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Moves the state machine on and starts the file I/O it asks for, if any.
    fn pump(&self) {
        pump(&self.state, &self.image);
    }
}

// A panic while holding this I/O-free lock cannot leave the queues half-updated in a way that
// matters more than losing the session; carry on with what is there.
fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

fn pump(state: &Arc<Mutex<State>>, image: &Arc<Image>) {
    let (job, epoch) = {
        let mut st = lock(state);
        (st.pump(), st.epoch)
    };
    if let Some(job) = job {
        spawn_io(state.clone(), image.clone(), job, epoch);
    }
}

/// Runs `job` off the async threads, then feeds its outcome back into the state machine. The
/// last I/O of a session that ended meanwhile flushes the image (see `Session::drop`).
fn spawn_io(state: Arc<Mutex<State>>, image: Arc<Image>, job: Job, epoch: u64) {
    run_blocking(move || {
        let outcome = job.run(&image);
        let closed = {
            let mut st = lock(&state);
            st.io_done(epoch, outcome);
            st.closed
        };
        if closed {
            flush(&image);
        } else {
            pump(&state, &image);
        }
    });
}

/// Makes what the ended session wrote durable: the client saw its writes acknowledged and may
/// be gone for good before the next sync. Blocks.
fn flush(image: &Image) {
    match image.flush() {
        Ok(true) => {
            tracing::debug!(image = %image.name(), "disk image flushed after the client detached")
        }
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(image = %image.name(), error = %e, "disk image flush failed after the client detached")
        }
    }
}

/// Runs blocking `work` on the runtime's blocking pool, or on a thread of its own outside one.
fn run_blocking(work: impl FnOnce() + Send + 'static) {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn_blocking(work);
        }
        // Outside a runtime (a synchronous caller) a plain thread does the same job.
        Err(_) => {
            std::thread::spawn(work);
        }
    }
}

impl FunctionSession for Session {
    fn control(&mut self, setup: &SetupPacket, _data: &[u8]) -> ControlResult {
        if setup.kind() == RequestKind::Standard
            && setup.recipient() == Recipient::Endpoint
            && setup.request == request::SET_FEATURE
            && setup.value == ENDPOINT_HALT
        {
            let mut st = self.lock();
            match (setup.index & 0xff) as u8 {
                EP_IN => st.halt_in(),
                EP_OUT => st.halt_out(),
                _ => return Err(errno::EPIPE),
            }
            return Ok(Bytes::new());
        }
        if setup.kind() != RequestKind::Class
            || setup.recipient() != Recipient::Interface
            || setup.index != u16::from(INTERFACE)
        {
            return Err(errno::EPIPE);
        }
        match (setup.request, setup.is_in()) {
            (bot::request::GET_MAX_LUN, true) if setup.value == 0 && setup.length >= 1 => {
                // One logical unit: the highest LUN is 0.
                Ok(Bytes::from_static(&[0]))
            }
            (bot::request::BULK_ONLY_RESET, false) if setup.value == 0 && setup.length == 0 => {
                self.lock().reset();
                self.pump();
                Ok(Bytes::new())
            }
            _ => Err(errno::EPIPE),
        }
    }

    fn set_configuration(&mut self, _value: u8) {
        self.lock().restart();
    }

    fn set_interface(&mut self, interface: u8, alt: u8) -> Result<(), i32> {
        if interface != INTERFACE || alt != 0 {
            return Err(errno::EPIPE);
        }
        self.lock().restart();
        Ok(())
    }

    fn clear_halt(&mut self, endpoint_address: u8) {
        {
            let mut st = self.lock();
            // After an invalid CBW the halts outlast CLEAR_FEATURE until a Bulk-Only Mass Storage
            // Reset (BOT 6.6.1): the host must do the whole reset recovery.
            if st.needs_reset {
                return;
            }
            match endpoint_address {
                EP_IN => st.in_halted = false,
                EP_OUT => st.out_halted = false,
                _ => {}
            }
        }
        self.pump();
    }

    fn is_halted(&self, endpoint_address: u8) -> bool {
        let st = self.lock();
        match endpoint_address {
            EP_IN => st.in_halted,
            EP_OUT => st.out_halted,
            _ => false,
        }
    }

    fn submit(&mut self, urb: Urb) {
        {
            let mut st = self.lock();
            let halted = match urb.endpoint_address() {
                EP_IN => st.in_halted,
                EP_OUT => st.out_halted,
                _ => true, // no such endpoint: the host sees a stall
            };
            if halted {
                st.completer
                    .complete(UrbCompletion::error(urb.seqnum, errno::EPIPE));
                return;
            }
            if urb.endpoint_address() == EP_IN {
                st.in_queue.push_back(urb);
            } else {
                st.out_queue.push_back(urb);
            }
        }
        self.pump();
    }

    fn cancel(&mut self, seqnum: u32) {
        // Only parked URBs can be cancelled; file I/O belongs to the command, not to a URB, and
        // the reset recovery that follows a cancel abandons it (see `State::reset`).
        let mut st = self.lock();
        st.in_queue.retain(|u| u.seqnum != seqnum);
        st.out_queue.retain(|u| u.seqnum != seqnum);
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let io_running = {
            let mut st = self.lock();
            st.closed = true;
            st.in_queue.clear();
            st.out_queue.clear();
            st.io_running
        };
        // I/O still running flushes when it ends (`spawn_io`), after its write.
        if !io_running {
            let image = self.image.clone();
            run_blocking(move || flush(&image));
        }
    }
}

/// Where the current command is.
enum Phase {
    /// Waiting for a CBW on bulk OUT.
    Idle,
    /// Taking `remaining` more bytes from the host; the first `keep` of them are kept in `buf`.
    DataOut {
        cmd: Command,
        remaining: u32,
        keep: usize,
        buf: Vec<u8>,
    },
    /// Waiting for file I/O of the command.
    Io { cmd: Command },
    /// Sending `data` to the host, then the CSW.
    DataIn {
        data: Bytes,
        sent: usize,
        host_len: u32,
        csw: [u8; bot::CSW_LEN],
    },
    /// The CSW waits for a bulk IN URB.
    Status { csw: [u8; bot::CSW_LEN] },
}

/// A settled command: what the host expects and what is left to do.
struct Command {
    tag: u32,
    host: Transfer,
    /// Bytes to move in the data phase.
    length: u32,
    /// dCSWDataResidue if the command succeeds.
    residue: u32,
    exec: Exec,
}

enum Exec {
    /// Nothing left to do but report this status.
    Finish(Status),
    /// Send this reply (cut to the command's length).
    Send(Vec<u8>),
    Read {
        offset: u64,
    },
    Write {
        offset: u64,
    },
    Sync,
}

/// File I/O for the blocking pool.
enum Job {
    Read { offset: u64, len: usize },
    Write { offset: u64, data: Vec<u8> },
    Sync,
}

enum Outcome {
    Read(io::Result<Vec<u8>>),
    Write(io::Result<()>),
}

impl Job {
    fn run(self, image: &Image) -> Outcome {
        match self {
            Job::Read { offset, len } => Outcome::Read(image.read(offset, len)),
            Job::Write { offset, data } => Outcome::Write(image.write(offset, &data)),
            Job::Sync => Outcome::Write(image.sync()),
        }
    }
}

struct State {
    completer: Completer,
    lun: Lun,
    phase: Phase,
    /// Parked URBs of each bulk endpoint, in submission order.
    in_queue: VecDeque<Urb>,
    out_queue: VecDeque<Urb>,
    in_halted: bool,
    out_halted: bool,
    /// An invalid CBW was seen: the halts stay until a Bulk-Only Mass Storage Reset.
    needs_reset: bool,
    /// Bumped by every reset; I/O started in an older epoch has its outcome dropped.
    epoch: u64,
    /// File I/O is running, perhaps for a command a reset abandoned. No CBW is taken until it
    /// ends, so that writes reach the file in command order.
    io_running: bool,
    /// The session is gone: finish running I/O quietly and start nothing new.
    closed: bool,
}

impl State {
    /// Serves parked URBs while the state machine can move; returns file I/O to start.
    fn pump(&mut self) -> Option<Job> {
        if self.closed {
            return None;
        }
        loop {
            let served_in = self.serve_in();
            match self.serve_out() {
                Step::Io(job) => return Some(job),
                Step::Progress => {}
                Step::Stuck if served_in => {}
                Step::Stuck => return None,
            }
        }
    }

    /// Gives the front bulk IN URB data or the CSW, if the phase has any.
    fn serve_in(&mut self) -> bool {
        let Some(want) = self.in_queue.front().map(|u| u.transfer_length as usize) else {
            return false;
        };
        match &mut self.phase {
            Phase::DataIn {
                data,
                sent,
                host_len,
                csw,
            } => {
                let n = want.min(data.len() - *sent);
                let chunk = data.slice(*sent..*sent + n);
                *sent += n;
                let short = n < want;
                // The data phase is over once all data is out and the host knows it: the data
                // filled what it expected, or the last packet was short. Data that ends on a
                // packet boundary before the host's length still owes it a zero-length packet,
                // which the next IN URB receives.
                let ended = *sent == data.len()
                    && (short || data.len() == *host_len as usize || data.len() % MAX_PACKET != 0);
                if ended {
                    let csw = *csw;
                    self.phase = Phase::Status { csw };
                }
                self.complete_in(chunk, short);
            }
            Phase::Status { csw } => {
                let csw = Bytes::copy_from_slice(csw);
                self.phase = Phase::Idle;
                if want < bot::CSW_LEN {
                    // The CSW does not fit: the host controller would see babble.
                    self.fail_front_in(errno::EOVERFLOW);
                } else {
                    self.complete_in(csw, false);
                }
            }
            _ => return false,
        }
        true
    }

    /// Completes the front IN URB with `data`, as a host controller would report it.
    fn complete_in(&mut self, data: Bytes, short: bool) {
        if let Some(urb) = self.in_queue.pop_front() {
            let mut c = UrbCompletion::data_in(urb.seqnum, data);
            if short && urb.transfer_flags & transfer_flags::URB_SHORT_NOT_OK != 0 {
                c.status = errno::EREMOTEIO;
            }
            self.completer.complete(c);
        }
    }

    fn fail_front_in(&mut self, status: i32) {
        if let Some(urb) = self.in_queue.pop_front() {
            self.completer
                .complete(UrbCompletion::error(urb.seqnum, status));
        }
    }

    /// Takes the front bulk OUT URB as a CBW or as data, if the phase wants one.
    fn serve_out(&mut self) -> Step {
        if self.out_queue.is_empty() {
            return Step::Stuck;
        }
        match self.phase {
            Phase::Idle if !self.io_running => {}
            Phase::DataOut { .. } => return self.take_data_out(),
            _ => return Step::Stuck,
        }
        let Some(urb) = self.out_queue.pop_front() else {
            return Step::Stuck;
        };
        self.completer
            .complete(UrbCompletion::done_out(urb.seqnum, urb.data.len() as u32));
        match Cbw::parse(&urb.data) {
            Some(cbw) => self.start(cbw).map_or(Step::Progress, Step::Io),
            None => {
                tracing::debug!(
                    len = urb.data.len(),
                    "invalid CBW: stalling both bulk pipes"
                );
                self.stall_for_reset();
                Step::Progress
            }
        }
    }

    fn take_data_out(&mut self) -> Step {
        let Phase::DataOut {
            remaining,
            keep,
            buf,
            ..
        } = &mut self.phase
        else {
            return Step::Stuck;
        };
        let Some(urb) = self.out_queue.pop_front() else {
            return Step::Stuck;
        };
        // Bytes past the host's announced length are not part of this command: ignored.
        let take = urb.data.len().min(*remaining as usize);
        let room = keep.saturating_sub(buf.len()).min(take);
        buf.extend_from_slice(&urb.data[..room]);
        *remaining -= take as u32;
        let done = *remaining == 0;
        self.completer
            .complete(UrbCompletion::done_out(urb.seqnum, urb.data.len() as u32));
        if !done {
            return Step::Progress;
        }
        match std::mem::replace(&mut self.phase, Phase::Idle) {
            Phase::DataOut { cmd, buf, .. } => {
                self.execute(cmd, buf).map_or(Step::Progress, Step::Io)
            }
            _ => Step::Progress,
        }
    }

    /// Decodes a CBW's command, settles its data phase and starts it.
    fn start(&mut self, cbw: Cbw) -> Option<Job> {
        let action = if cbw.lun != 0 {
            self.lun.fail(Sense::LUN_NOT_SUPPORTED)
        } else {
            self.lun.execute(cbw.cdb())
        };
        let (device, exec, may_truncate) = match action {
            Action::Good => (Transfer::None, Exec::Finish(Status::Passed), false),
            Action::Fail => (Transfer::None, Exec::Finish(Status::Failed), false),
            Action::DataIn(d) => (Transfer::new(true, d.len() as u32), Exec::Send(d), true),
            Action::Read { offset, len } => (Transfer::In(len), Exec::Read { offset }, false),
            Action::Write { offset, len } => (Transfer::Out(len), Exec::Write { offset }, false),
            Action::Sync => (Transfer::None, Exec::Sync, false),
        };
        let cmd = match bot::settle(cbw.host, device, may_truncate) {
            Settlement::Proceed { length, residue } => Command {
                tag: cbw.tag,
                host: cbw.host,
                length,
                residue,
                exec,
            },
            Settlement::PhaseError => {
                tracing::debug!(host = ?cbw.host, ?device, "BOT phase error");
                Command {
                    tag: cbw.tag,
                    host: cbw.host,
                    length: 0,
                    residue: cbw.host.len(),
                    exec: Exec::Finish(Status::PhaseError),
                }
            }
        };
        if let Transfer::Out(host_len) = cmd.host {
            let keep = if matches!(cmd.exec, Exec::Write { .. }) {
                cmd.length as usize
            } else {
                0
            };
            self.phase = Phase::DataOut {
                cmd,
                remaining: host_len,
                keep,
                buf: Vec::with_capacity(keep),
            };
            return None;
        }
        self.execute(cmd, Vec::new())
    }

    /// Carries out a command whose OUT data (if any) has arrived.
    fn execute(&mut self, cmd: Command, data_out: Vec<u8>) -> Option<Job> {
        let job = match cmd.exec {
            Exec::Finish(status) => {
                let residue = if status == Status::Passed {
                    cmd.residue
                } else {
                    cmd.host.len()
                };
                self.respond(cmd.tag, cmd.host, Vec::new(), status, residue);
                return None;
            }
            Exec::Send(mut reply) => {
                reply.truncate(cmd.length as usize);
                self.respond(cmd.tag, cmd.host, reply, Status::Passed, cmd.residue);
                return None;
            }
            Exec::Read { offset } => Job::Read {
                offset,
                len: cmd.length as usize,
            },
            Exec::Write { offset } => Job::Write {
                offset,
                data: data_out,
            },
            Exec::Sync => Job::Sync,
        };
        self.phase = Phase::Io { cmd };
        self.io_running = true;
        Some(job)
    }

    /// Applies the outcome of file I/O started in `epoch`.
    fn io_done(&mut self, epoch: u64, outcome: Outcome) {
        self.io_running = false;
        if self.closed || epoch != self.epoch {
            return; // a reset abandoned the command
        }
        let Phase::Io { cmd } = std::mem::replace(&mut self.phase, Phase::Idle) else {
            return;
        };
        let (status, data) = match outcome {
            Outcome::Read(Ok(data)) => (Status::Passed, data),
            Outcome::Write(Ok(())) => (Status::Passed, Vec::new()),
            Outcome::Read(Err(e)) => {
                tracing::warn!(error = %e, "disk image read failed");
                self.lun.fail(Sense::UNRECOVERED_READ_ERROR);
                (Status::Failed, Vec::new())
            }
            Outcome::Write(Err(e)) => {
                tracing::warn!(error = %e, "disk image write or sync failed");
                self.lun.fail(Sense::WRITE_ERROR);
                (Status::Failed, Vec::new())
            }
        };
        let residue = if status == Status::Passed {
            cmd.residue
        } else {
            cmd.host.len()
        };
        self.respond(cmd.tag, cmd.host, data, status, residue);
    }

    /// Enters the data-in phase when the host expects data (even if there is none to send: it
    /// then gets a zero-length packet), else goes straight to the status phase.
    fn respond(&mut self, tag: u32, host: Transfer, data: Vec<u8>, status: Status, residue: u32) {
        let csw = bot::csw(tag, residue, status);
        self.phase = match host {
            Transfer::In(host_len) => Phase::DataIn {
                data: Bytes::from(data),
                sent: 0,
                host_len,
                csw,
            },
            _ => Phase::Status { csw },
        };
    }

    /// Invalid CBW: stall both bulk pipes until reset recovery.
    fn stall_for_reset(&mut self) {
        self.needs_reset = true;
        self.phase = Phase::Idle;
        self.halt_in();
        self.halt_out();
    }

    /// Halts bulk IN; URBs parked on it see the stall.
    fn halt_in(&mut self) {
        self.in_halted = true;
        for urb in self.in_queue.drain(..) {
            self.completer
                .complete(UrbCompletion::error(urb.seqnum, errno::EPIPE));
        }
    }

    fn halt_out(&mut self) {
        self.out_halted = true;
        for urb in self.out_queue.drain(..) {
            self.completer
                .complete(UrbCompletion::error(urb.seqnum, errno::EPIPE));
        }
    }

    /// Bulk-Only Mass Storage Reset: abandon the current command and wait for a CBW. Halts
    /// stay (BOT 3.1: the host clears them next); parked URBs stay queued, as on a real pipe.
    fn reset(&mut self) {
        self.phase = Phase::Idle;
        self.epoch += 1;
        self.needs_reset = false;
    }

    /// SET_CONFIGURATION / SET_INTERFACE: endpoints start afresh, halts cleared, and URBs still
    /// parked on the old endpoints end as the host controller would end them.
    fn restart(&mut self) {
        self.reset();
        self.in_halted = false;
        self.out_halted = false;
        for urb in self.in_queue.drain(..).chain(self.out_queue.drain(..)) {
            self.completer
                .complete(UrbCompletion::error(urb.seqnum, errno::ESHUTDOWN));
        }
    }
}

enum Step {
    /// Nothing can move on bulk OUT now.
    Stuck,
    /// A URB was served.
    Progress,
    /// A URB was served and the command needs this file I/O.
    Io(Job),
}
