//! Completes isochronous URBs at the pace of the bus.
//!
//! A real host controller moves one packet per service interval, so a URB of N packets
//! completes N intervals after its first packet, and a queue of URBs streams back to back
//! (`URB_ISO_ASAP`: each starts where the previous one ends, or now when the endpoint was
//! idle). Completing at once instead would let a client run its isochronous loop as fast as
//! the network goes, which no device does; pacing also gives `start_frame` its meaning.
//!
//! The answers are computed at submit (a virtual function knows them at once); one task per
//! endpoint, started with the first URB and aborted when the pacer is dropped, hands each to the
//! completer when its time has come, in order. Nothing is held across an await.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use usbip_proto::errno;

use super::IsoEndpoint;
use crate::device::{Completer, UrbCompletion};

/// One answered URB waiting for its last packet's interval to end.
struct Paced {
    due: Instant,
    completion: UrbCompletion,
}

#[derive(Default)]
struct Queue {
    /// In due order: each URB starts where the one before it ends.
    waiting: VecDeque<Paced>,
    /// When the last scheduled packet's interval ends.
    busy_until: Option<Instant>,
}

struct Shared {
    queue: Mutex<Queue>,
    /// Wakes the task for a URB in an empty queue (a permit is kept if it is not waiting).
    wake: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The schedule of one isochronous endpoint.
pub struct IsoPacer {
    endpoint: IsoEndpoint,
    completer: Completer,
    shared: Arc<Shared>,
    task: Option<JoinHandle<()>>,
    /// Frame 0 of this endpoint's bus.
    origin: Instant,
}

impl IsoPacer {
    pub fn new(endpoint: IsoEndpoint, completer: Completer) -> IsoPacer {
        IsoPacer {
            endpoint,
            completer,
            shared: Arc::new(Shared {
                queue: Mutex::new(Queue::default()),
                wake: Notify::new(),
            }),
            task: None,
            origin: Instant::now(),
        }
    }

    pub fn endpoint(&self) -> &IsoEndpoint {
        &self.endpoint
    }

    /// Schedules an answered URB (see `packets`): its packets take the next free service
    /// intervals, its `start_frame` is the frame of the first, and it completes when the last
    /// interval ends.
    pub fn schedule(&mut self, mut completion: UrbCompletion) {
        let packets = completion.iso.len().max(1) as u32;
        let running = self.ensure_task();
        let now = Instant::now();
        let mut queue = self.shared.lock();
        let start = queue.busy_until.map_or(now, |busy| busy.max(now));
        let due = start + self.endpoint.period * packets;
        completion.start_frame = self.frame_number(start);
        if !running {
            // No runtime to wait in (a synchronous caller): complete now rather than never.
            drop(queue);
            return self.completer.complete(completion);
        }
        queue.busy_until = Some(due);
        queue.waiting.push_back(Paced { due, completion });
        drop(queue);
        self.shared.wake.notify_one();
    }

    /// Forgets a waiting URB. Returns whether it was here.
    pub fn cancel(&mut self, seqnum: u32) -> bool {
        let mut queue = self.shared.lock();
        let Some(i) = queue
            .waiting
            .iter()
            .position(|p| p.completion.seqnum == seqnum)
        else {
            return false;
        };
        queue.waiting.remove(i);
        // The URBs behind it keep their frames, as on a bus; only an idle endpoint restarts.
        if queue.waiting.is_empty() {
            queue.busy_until = None;
        }
        true
    }

    /// The endpoint was disabled (configuration or alternate setting changed): waiting URBs
    /// end with -ESHUTDOWN at once and the schedule starts afresh.
    pub fn reset(&mut self) {
        let waiting: Vec<Paced> = {
            let mut queue = self.shared.lock();
            queue.busy_until = None;
            queue.waiting.drain(..).collect()
        };
        for p in waiting {
            let mut c = p.completion;
            c.status = errno::ESHUTDOWN;
            c.actual_length = 0;
            c.data = bytes::Bytes::new();
            c.error_count = c.iso.len() as u32;
            for packet in &mut c.iso {
                packet.actual_length = 0;
                packet.status = errno::ESHUTDOWN;
            }
            self.completer.complete(c);
        }
    }

    /// (Micro)frame number of `at`, wrapped like the bus's.
    fn frame_number(&self, at: Instant) -> u32 {
        let elapsed = at.saturating_duration_since(self.origin).as_nanos();
        let frame = self.endpoint.frame.as_nanos().max(1);
        ((elapsed / frame) as u32) & self.endpoint.frame_mask
    }

    /// Starts the task on first use; false when there is no runtime to start it in.
    fn ensure_task(&mut self) -> bool {
        if self.task.is_some() {
            return true;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return false;
        };
        let shared = self.shared.clone();
        let completer = self.completer.clone();
        self.task = Some(runtime.spawn(run(shared, completer)));
        true
    }
}

impl Drop for IsoPacer {
    fn drop(&mut self) {
        // Dropping the session cancels what waits; the task's completer clone goes with it.
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn run(shared: Arc<Shared>, completer: Completer) {
    loop {
        let next = shared.lock().waiting.front().map(|p| p.due);
        let Some(due) = next else {
            shared.wake.notified().await;
            continue;
        };
        tokio::select! {
            () = tokio::time::sleep_until(due) => {}
            // A URB came in meanwhile (or one was cancelled): look at the queue again.
            () = shared.wake.notified() => continue,
        }
        let ready: Vec<UrbCompletion> = {
            let mut queue = shared.lock();
            let now = Instant::now();
            let mut ready = Vec::new();
            while queue.waiting.front().is_some_and(|p| p.due <= now) {
                if let Some(p) = queue.waiting.pop_front() {
                    ready.push(p.completion);
                }
            }
            ready
        };
        for c in ready {
            completer.complete(c);
        }
    }
}
