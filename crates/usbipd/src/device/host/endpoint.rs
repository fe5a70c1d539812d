//! One task per bulk or interrupt endpoint: takes URBs in order, keeps many transfers queued on
//! the endpoint, and completes URBs in submission order.
//!
//! The library cancels whole endpoints only, so unlinking one URB cancels the queue, waits for
//! every transfer to come back, drops the victim, and resubmits the innocent transfers that had
//! not started, in their original order, ahead of anything that arrived meanwhile. A task never
//! completes an unlinked URB, and never blocks: device-wide calls belong to the endpoint-0 thread.

use std::collections::VecDeque;
use std::future::poll_fn;

use bytes::Bytes;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, warn};
use usbip_proto::{errno, transfer_flags, Direction};

use super::backend::{EndpointDesc, EndpointQueue, TransferDone, TransferRequest};
use super::errors::{transfer_errno, HostError, XferError};
use crate::device::{Completer, Urb, UrbCompletion};

/// What the session asks of an endpoint task.
pub(super) enum EpCmd {
    Submit(Urb),
    /// Unlink: the URB must not complete.
    Cancel(u32),
    /// CLEAR_FEATURE(ENDPOINT_HALT): pause the queue, clear the halt, carry on.
    ClearHalt(oneshot::Sender<Result<(), HostError>>),
    /// The endpoint is going away (SET_INTERFACE, SET_CONFIGURATION, reset): end every URB
    /// and drop the queue, then answer.
    Stop(oneshot::Sender<()>),
}

/// Starts the task of one endpoint.
pub(super) fn spawn(
    runtime: &Handle,
    queue: Box<dyn EndpointQueue>,
    desc: EndpointDesc,
    completer: Completer,
) -> (mpsc::UnboundedSender<EpCmd>, JoinHandle<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let worker = Worker {
        queue,
        desc,
        completer,
        slots: VecDeque::new(),
        draining: false,
        recycled: Vec::new(),
        held: VecDeque::new(),
        halt_waiters: Vec::new(),
        stop: None,
        awaiting_zlp: None,
    };
    let task = runtime.spawn(worker.run(rx));
    (tx, task)
}

/// One transfer on the queue.
struct Slot {
    urb: Urb,
    /// The zero-length packet sent after `urb`'s data for URB_ZERO_PACKET.
    zlp: bool,
    /// Unlinked (or superseded): its result is thrown away.
    discard: bool,
}

struct Worker {
    queue: Box<dyn EndpointQueue>,
    desc: EndpointDesc,
    completer: Completer,
    /// Transfers on the queue, oldest first: the queue finishes them in this order.
    slots: VecDeque<Slot>,
    /// The queue was cancelled and is being emptied.
    draining: bool,
    /// Innocent URBs that came back cancelled without having started, in their order.
    recycled: Vec<Urb>,
    /// URBs that arrived while draining.
    held: VecDeque<Urb>,
    halt_waiters: Vec<oneshot::Sender<Result<(), HostError>>>,
    stop: Option<oneshot::Sender<()>>,
    /// The data part of a URB whose trailing zero-length packet is still on the queue.
    awaiting_zlp: Option<UrbCompletion>,
}

impl Worker {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<EpCmd>) {
        loop {
            if self.draining && self.queue.pending() == 0 {
                if let Some(reply) = self.drained().await {
                    // Answer only once the queue is dropped: the caller may change the
                    // alternate setting next, which the OS refuses while it is open.
                    drop(self);
                    let _ = reply.send(());
                    return;
                }
            }
            let busy = self.queue.pending() > 0;
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(cmd) => self.command(cmd),
                    // The session is gone; dropping the queue cancels what is left.
                    None => return,
                },
                done = poll_fn(|cx| self.queue.poll_next_complete(cx)), if busy => {
                    self.finished(done);
                }
            }
        }
    }

    fn command(&mut self, cmd: EpCmd) {
        match cmd {
            EpCmd::Submit(urb) if self.draining => self.held.push_back(urb),
            EpCmd::Submit(urb) => self.start(urb),
            EpCmd::Cancel(seqnum) => self.cancel(seqnum),
            EpCmd::ClearHalt(reply) => {
                self.halt_waiters.push(reply);
                self.drain();
            }
            EpCmd::Stop(reply) => {
                self.stop = Some(reply);
                self.drain();
            }
        }
    }

    fn cancel(&mut self, seqnum: u32) {
        // Not started yet: just forget it.
        let before = self.held.len() + self.recycled.len();
        self.held.retain(|u| u.seqnum != seqnum);
        self.recycled.retain(|u| u.seqnum != seqnum);
        if self.held.len() + self.recycled.len() != before {
            return;
        }
        let mut found = false;
        for slot in self.slots.iter_mut().filter(|s| s.urb.seqnum == seqnum) {
            slot.discard = true;
            found = true;
        }
        if found {
            debug!(
                endpoint = self.desc.address,
                seqnum, "unlink: cancelling the endpoint queue"
            );
            self.drain();
        }
    }

    /// Cancels everything on the queue; `run` calls `drained` once it is empty.
    fn drain(&mut self) {
        if !self.draining {
            self.draining = true;
            self.queue.cancel_all();
        }
    }

    /// The queue is empty after a drain: stop, clear a halt, and resubmit. Gives the stop
    /// request's answer back when stopping.
    async fn drained(&mut self) -> Option<oneshot::Sender<()>> {
        if let Some(reply) = self.stop.take() {
            for urb in self.recycled.drain(..).chain(self.held.drain(..)) {
                // What the Linux core gives URBs of an endpoint that is disabled.
                self.completer
                    .complete(UrbCompletion::failed(&urb, errno::ESHUTDOWN));
            }
            for w in self.halt_waiters.drain(..) {
                let _ = w.send(Ok(()));
            }
            return Some(reply);
        }
        if !self.halt_waiters.is_empty() {
            let result = self.queue.clear_halt().await;
            if let Err(e) = &result {
                warn!(endpoint = self.desc.address, error = %e, "clear halt failed");
            }
            for w in self.halt_waiters.drain(..) {
                let _ = w.send(result.clone());
            }
        }
        self.draining = false;
        let again: Vec<Urb> = self.recycled.drain(..).chain(self.held.drain(..)).collect();
        for urb in again {
            self.start(urb);
        }
        None
    }

    /// Puts a URB's transfer (and its trailing zero-length packet) on the queue.
    fn start(&mut self, urb: Urb) {
        let mps = self.desc.max_packet_size;
        if mps == 0 {
            self.completer
                .complete(UrbCompletion::failed(&urb, errno::EINVAL));
            return;
        }
        let mut zlp = false;
        let request = match urb.direction {
            Direction::In => TransferRequest::In {
                length: in_length(urb.transfer_length, mps),
            },
            Direction::Out => {
                let len = urb.data.len();
                zlp = urb.transfer_flags & transfer_flags::URB_ZERO_PACKET != 0
                    && ends_on_packet_boundary(len, mps);
                TransferRequest::Out {
                    data: urb.data.clone(),
                }
            }
        };
        self.queue.submit(request);
        self.slots.push_back(Slot {
            urb: urb.clone(),
            zlp: false,
            discard: false,
        });
        if zlp {
            self.queue
                .submit(TransferRequest::Out { data: Bytes::new() });
            self.slots.push_back(Slot {
                urb,
                zlp: true,
                discard: false,
            });
        }
    }

    fn finished(&mut self, done: TransferDone) {
        let Some(slot) = self.slots.pop_front() else {
            warn!(
                endpoint = self.desc.address,
                "transfer finished that was never submitted"
            );
            return;
        };
        let has_zlp = self
            .slots
            .front()
            .is_some_and(|s| s.zlp && s.urb.seqnum == slot.urb.seqnum);
        if slot.discard {
            // Unlinked (a trailing ZLP slot is marked too, and its data part is dropped).
            if slot.zlp {
                self.awaiting_zlp = None;
            }
            return;
        }
        if slot.zlp {
            if let Some(mut data_part) = self.awaiting_zlp.take() {
                match done.status {
                    Ok(()) | Err(XferError::Cancelled) => {}
                    Err(e) => data_part.status = transfer_errno(e),
                }
                self.completer.complete(data_part);
            }
            return;
        }
        let untouched = done.status == Err(XferError::Cancelled) && done.actual_length == 0;
        if self.draining && untouched && self.stop.is_none() {
            // Cancelled only because a neighbour was unlinked, and nothing moved: run it again.
            if has_zlp {
                if let Some(next) = self.slots.front_mut() {
                    next.discard = true;
                }
            }
            self.recycled.push(slot.urb);
            return;
        }
        let mut completion = finish(&slot.urb, done);
        if self.stop.is_some() && untouched {
            completion.status = errno::ESHUTDOWN;
        }
        if has_zlp {
            if completion.status == 0 {
                self.awaiting_zlp = Some(completion);
                return;
            }
            if let Some(next) = self.slots.front_mut() {
                next.discard = true;
            }
        }
        self.completer.complete(completion);
    }
}

/// Whether an OUT transfer of `len` bytes ends with a full packet (and so needs a zero-length
/// packet to mark its end when the client asks for one).
#[allow(clippy::manual_is_multiple_of)] // usize::is_multiple_of needs Rust 1.87; MSRV is 1.85
fn ends_on_packet_boundary(len: usize, max_packet_size: usize) -> bool {
    len > 0 && len % max_packet_size == 0
}

/// The length of an IN transfer for a client's request: nusb wants a non-zero multiple of the
/// max packet size, so round up. Whatever the device sends beyond the request is an overflow.
pub(super) fn in_length(requested: u32, max_packet_size: usize) -> usize {
    let requested = (requested as usize).max(1);
    requested.div_ceil(max_packet_size) * max_packet_size
}

/// Turns a finished transfer into the client's completion.
pub(super) fn finish(urb: &Urb, done: TransferDone) -> UrbCompletion {
    let status = match done.status {
        Ok(()) => 0,
        Err(e) => transfer_errno(e),
    };
    match urb.direction {
        Direction::Out => UrbCompletion {
            seqnum: urb.seqnum,
            status,
            actual_length: (done.actual_length as u32).min(urb.transfer_length),
            ..Default::default()
        },
        Direction::In => {
            let mut data = done.data;
            let asked = urb.transfer_length as usize;
            let mut status = status;
            if data.len() > asked {
                // The device sent more than the client asked for (we asked for more, rounded
                // up): Linux calls that babble.
                data.truncate(asked);
                if status == 0 {
                    status = errno::EOVERFLOW;
                }
            } else if status == 0
                && data.len() < asked
                && urb.transfer_flags & transfer_flags::URB_SHORT_NOT_OK != 0
            {
                status = errno::EREMOTEIO;
            }
            UrbCompletion {
                seqnum: urb.seqnum,
                status,
                actual_length: data.len() as u32,
                data,
                ..Default::default()
            }
        }
    }
}
