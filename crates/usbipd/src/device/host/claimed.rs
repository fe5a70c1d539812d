//! A host device claimed once and kept: the extension opens and claims it at `bind`, and every
//! client session borrows the open handle and gives it back when it ends, so the kernel driver
//! never gets the device between two clients.
//!
//! It never claims or releases per session (that is [`super::HostDevice`], fallback mode), and
//! never lets two sessions hold the handle at once. A transfer or call that fails because the
//! device is gone (ENODEV, ESHUTDOWN: `Disconnected`) is reported to whoever keeps the claim
//! ([`ClaimedHostDevice::on_disconnect`]), which may be the only sign of an unplug there is.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use usbip_proto::ExportedDevice;

use super::backend::{
    BoxFuture, EndpointDesc, EndpointQueue, HostDeviceInfo, HostDeviceOps, TransferDone,
    TransferRequest,
};
use super::errors::{ClaimError, HostError, HostErrorKind, XferError};
use super::session::HostSession;
use super::HostDevice;
use crate::device::{Completer, Device, DeviceSession, OpenError, SetupPacket};

/// Told that an operation on the device failed with `Disconnected` (maybe many times).
pub type OnDisconnect = Arc<dyn Fn() + Send + Sync>;

/// Where the claimed handle waits between sessions.
struct Slot {
    ops: Mutex<Option<Box<dyn HostDeviceOps>>>,
    returned: Condvar,
    on_disconnect: Mutex<Option<OnDisconnect>>,
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, Option<Box<dyn HostDeviceOps>>> {
        // Only take/put under this lock: a panic elsewhere cannot leave it inconsistent.
        self.ops.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn put(&self, ops: Box<dyn HostDeviceOps>) {
        *self.lock() = Some(ops);
        self.returned.notify_all();
    }

    fn disconnected(&self) {
        let hook = self
            .on_disconnect
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(hook) = hook {
            hook();
        }
    }

    /// Passes `result` on, reporting a `Disconnected` failure first.
    fn watch<T>(&self, result: Result<T, HostError>) -> Result<T, HostError> {
        if matches!(&result, Err(e) if e.kind == HostErrorKind::Disconnected) {
            self.disconnected();
        }
        result
    }
}

/// A [`Device`] over a host device whose interfaces are already claimed.
pub struct ClaimedHostDevice {
    info: HostDeviceInfo,
    slot: Arc<Slot>,
}

impl ClaimedHostDevice {
    /// `ops` must have its interfaces claimed already; they stay claimed until [`Self::take`].
    pub fn new(info: HostDeviceInfo, ops: Box<dyn HostDeviceOps>) -> ClaimedHostDevice {
        ClaimedHostDevice {
            info,
            slot: Arc::new(Slot {
                ops: Mutex::new(Some(ops)),
                returned: Condvar::new(),
                on_disconnect: Mutex::new(None),
            }),
        }
    }

    /// Calls `hook` whenever a transfer or call on the device fails with `Disconnected`
    /// (from any thread; it must not block).
    pub fn on_disconnect(&self, hook: OnDisconnect) {
        *self
            .slot
            .on_disconnect
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(hook);
    }

    pub fn info(&self) -> &HostDeviceInfo {
        &self.info
    }

    /// Takes the handle back for good (to release it), waiting up to `wait` for a session that
    /// is ending to return it. Blocks: call it off the async executor. `None`: still in use.
    pub fn take(&self, wait: Duration) -> Option<Box<dyn HostDeviceOps>> {
        let deadline = Instant::now() + wait;
        let mut guard = self.slot.lock();
        loop {
            if let Some(ops) = guard.take() {
                return Some(ops);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            guard = self
                .slot
                .returned
                .wait_timeout(guard, left)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }
}

impl Device for ClaimedHostDevice {
    fn describe(&self) -> ExportedDevice {
        // The same record fallback mode shows: built from the enumeration alone.
        HostDevice::describe_info(&self.info)
    }

    /// Borrows the claimed handle for one session; nothing is opened or claimed.
    fn open(&self, completer: Completer) -> Result<Box<dyn DeviceSession>, OpenError> {
        let runtime = Handle::try_current()
            .map_err(|_| OpenError::Failed("host devices need a tokio runtime".into()))?;
        // The registry allows one session at a time; a handle still out belongs to a session
        // that is ending, or was taken back by an unbind.
        let ops = self.slot.lock().take().ok_or(OpenError::Busy)?;
        let lent = Lent {
            ops: Some(ops),
            slot: self.slot.clone(),
        };
        Ok(Box::new(HostSession::start_keeping_claim(
            Box::new(lent),
            completer,
            runtime,
            self.info.busid.clone(),
        )))
    }
}

/// The handle as a session holds it: given back to the slot when the session drops it.
struct Lent {
    ops: Option<Box<dyn HostDeviceOps>>,
    slot: Arc<Slot>,
}

impl Lent {
    fn ops(&self) -> &dyn HostDeviceOps {
        // Only `Drop` empties it.
        self.ops.as_deref().unwrap_or_else(|| unreachable!())
    }

    fn ops_mut(&mut self) -> &mut dyn HostDeviceOps {
        match self.ops.as_deref_mut() {
            Some(ops) => ops,
            None => unreachable!(),
        }
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        if let Some(ops) = self.ops.take() {
            self.slot.put(ops);
        }
    }
}

impl HostDeviceOps for Lent {
    fn active_configuration(&self) -> u8 {
        self.ops().active_configuration()
    }

    fn configuration_descriptor(&self, value: u8) -> Option<Vec<u8>> {
        self.ops().configuration_descriptor(value)
    }

    fn claim_interfaces(&mut self) -> Result<(), ClaimError> {
        let result = self.ops_mut().claim_interfaces();
        if matches!(&result, Err(e) if e.error.kind == HostErrorKind::Disconnected) {
            self.slot.disconnected();
        }
        result
    }

    fn release_interfaces(&mut self) {
        self.ops_mut().release_interfaces()
    }

    fn open_endpoint(
        &mut self,
        endpoint: &EndpointDesc,
    ) -> Result<Box<dyn EndpointQueue>, HostError> {
        let queue = self.ops_mut().open_endpoint(endpoint);
        let queue = self.slot.watch(queue)?;
        Ok(Box::new(WatchedQueue {
            queue,
            slot: self.slot.clone(),
        }))
    }

    fn control(&mut self, setup: &SetupPacket, data: &[u8]) -> Result<Vec<u8>, XferError> {
        let result = self.ops_mut().control(setup, data);
        if result == Err(XferError::Disconnected) {
            self.slot.disconnected();
        }
        result
    }

    fn set_configuration(&mut self, value: u8) -> Result<(), HostError> {
        let result = self.ops_mut().set_configuration(value);
        self.slot.watch(result)
    }

    fn set_alt_setting(&mut self, interface: u8, alt: u8) -> Result<(), HostError> {
        let result = self.ops_mut().set_alt_setting(interface, alt);
        self.slot.watch(result)
    }

    fn reset(&mut self) -> Result<(), HostError> {
        let result = self.ops_mut().reset();
        self.slot.watch(result)
    }

    fn attach_kernel_drivers(&mut self) -> Result<(), HostError> {
        self.ops_mut().attach_kernel_drivers()
    }
}

/// An endpoint queue of a claimed device whose `Disconnected` completions are reported.
struct WatchedQueue {
    queue: Box<dyn EndpointQueue>,
    slot: Arc<Slot>,
}

impl EndpointQueue for WatchedQueue {
    fn submit(&mut self, request: TransferRequest) {
        self.queue.submit(request)
    }

    fn poll_next_complete(&mut self, cx: &mut Context<'_>) -> Poll<TransferDone> {
        let done = self.queue.poll_next_complete(cx);
        if let Poll::Ready(TransferDone {
            status: Err(XferError::Disconnected),
            ..
        }) = &done
        {
            self.slot.disconnected();
        }
        done
    }

    fn pending(&self) -> usize {
        self.queue.pending()
    }

    fn cancel_all(&mut self) {
        self.queue.cancel_all()
    }

    fn clear_halt(&mut self) -> BoxFuture<'static, Result<(), HostError>> {
        self.queue.clear_halt()
    }
}
