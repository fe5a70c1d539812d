//! One client's use of a host device: routes URBs to the endpoint tasks, and runs endpoint 0
//! (control transfers and the intercepted standard requests) on a thread of its own.
//!
//! Endpoint 0 gets a blocking thread because every device-wide call (control transfer,
//! SET_CONFIGURATION, SET_INTERFACE, reset) blocks in the OS; `submit` and `cancel` only send
//! messages and never wait. Control URBs run one at a time, in order, as on the bus.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
use tracing::{debug, info, warn};
use usbip_proto::{errno, Direction};

use super::backend::{EndpointDesc, HostDeviceOps, TransferDone, TransferKind};
use super::endpoint::{self, EpCmd};
use super::errors::{transfer_errno, XferError};
use super::intercept::{self, Intercept};
use crate::device::r#virtual::parse_configuration;
use crate::device::{Completer, DeviceSession, SetupPacket, Urb, UrbCompletion};

/// The longest a control transfer may take. The client gives up (and unlinks) long before in
/// practice; this only bounds a transfer nobody waits for, since nusb cannot cancel a single
/// control transfer.
pub(super) const CONTROL_TIMEOUT: Duration = Duration::from_secs(30);

enum Route {
    Queue {
        tx: mpsc::UnboundedSender<EpCmd>,
        task: AbortHandle,
        interface: u8,
    },
    /// Isochronous (or a non-zero control endpoint): nusb 0.2 has no API for it.
    Unsupported {
        kind: TransferKind,
        warned: bool,
        interface: u8,
    },
}

/// Where the URBs of each endpoint go. Shared by `submit` and the endpoint-0 thread, which
/// rebuilds it when the configuration or an alternate setting changes.
#[derive(Default)]
struct Routes {
    /// Set when the session is dropped: no new endpoint task may start.
    closed: bool,
    endpoints: HashMap<u8, Route>,
}

type SharedRoutes = Arc<Mutex<Routes>>;

fn lock(routes: &SharedRoutes) -> MutexGuard<'_, Routes> {
    // Short, I/O-free critical sections: a panic in one leaves the map usable.
    routes.lock().unwrap_or_else(|e| e.into_inner())
}

enum Ep0Cmd {
    Submit(Urb),
    Cancel(u32),
}

/// The [`DeviceSession`] of a host device.
pub(super) struct HostSession {
    ep0: mpsc::UnboundedSender<Ep0Cmd>,
    routes: SharedRoutes,
    completer: Completer,
}

impl HostSession {
    /// Starts the session on a device whose interfaces are claimed; its end releases them.
    pub(super) fn start(
        ops: Box<dyn HostDeviceOps>,
        completer: Completer,
        runtime: Handle,
        busid: String,
    ) -> HostSession {
        HostSession::start_with(ops, completer, runtime, busid, false)
    }

    /// Starts the session on a device claimed by someone who keeps it (the extension): its
    /// end puts the alternate settings back to 0 and releases nothing.
    pub(super) fn start_keeping_claim(
        ops: Box<dyn HostDeviceOps>,
        completer: Completer,
        runtime: Handle,
        busid: String,
    ) -> HostSession {
        HostSession::start_with(ops, completer, runtime, busid, true)
    }

    fn start_with(
        ops: Box<dyn HostDeviceOps>,
        completer: Completer,
        runtime: Handle,
        busid: String,
        keep_claim: bool,
    ) -> HostSession {
        let routes = SharedRoutes::default();
        let (ep0, rx) = mpsc::unbounded_channel();
        let mut thread = Ep0 {
            ops,
            routes: routes.clone(),
            completer: completer.clone(),
            runtime: runtime.clone(),
            busid,
            alts: HashMap::new(),
            queue: VecDeque::new(),
            keep_claim,
        };
        thread.start_endpoints(|_| true);
        runtime.spawn_blocking(move || thread.run(rx));
        HostSession {
            ep0,
            routes,
            completer,
        }
    }
}

impl DeviceSession for HostSession {
    fn submit(&mut self, urb: Urb) {
        if urb.endpoint == 0 {
            if let Err(mpsc::error::SendError(Ep0Cmd::Submit(urb))) =
                self.ep0.send(Ep0Cmd::Submit(urb))
            {
                self.completer
                    .complete(UrbCompletion::failed(&urb, errno::ESHUTDOWN));
            }
            return;
        }
        let address = urb.endpoint_address();
        let mut routes = lock(&self.routes);
        // Every failure here carries the URB's packet descriptors if it is isochronous.
        let (urb, status) = match routes.endpoints.get_mut(&address) {
            Some(Route::Queue { tx, .. }) => match tx.send(EpCmd::Submit(urb)) {
                Ok(()) => return,
                Err(mpsc::error::SendError(EpCmd::Submit(urb))) => (urb, errno::ESHUTDOWN),
                Err(_) => return,
            },
            Some(Route::Unsupported { kind, warned, .. }) => {
                if !*warned {
                    *warned = true;
                    warn!(
                        endpoint = address,
                        ?kind,
                        "transfers of this type are not supported on host devices; failing them with ENOSYS"
                    );
                }
                (urb, errno::ENOSYS)
            }
            None => {
                // Not in the current configuration or alternate setting, or being rebuilt:
                // Linux fails URBs of a disabled endpoint the same way.
                debug!(
                    endpoint = address,
                    "URB for an endpoint that is not enabled"
                );
                (urb, errno::ESHUTDOWN)
            }
        };
        drop(routes);
        self.completer.complete(UrbCompletion::failed(&urb, status));
    }

    fn cancel(&mut self, seqnum: u32) {
        // The session does not remember which endpoint a seqnum went to: ask them all. Only
        // the one holding it acts.
        let _ = self.ep0.send(Ep0Cmd::Cancel(seqnum));
        for route in lock(&self.routes).endpoints.values() {
            if let Route::Queue { tx, .. } = route {
                let _ = tx.send(EpCmd::Cancel(seqnum));
            }
        }
    }
}

impl Drop for HostSession {
    fn drop(&mut self) {
        let mut routes = lock(&self.routes);
        routes.closed = true;
        for (_, route) in routes.endpoints.drain() {
            if let Route::Queue { task, .. } = route {
                // Dropping an endpoint's queue cancels its transfers.
                task.abort();
            }
        }
        // The endpoint-0 thread sees its channel close, finishes the control transfer it may
        // be in, and releases the interfaces.
    }
}

/// The endpoint-0 thread: owns the device handle.
struct Ep0 {
    ops: Box<dyn HostDeviceOps>,
    routes: SharedRoutes,
    completer: Completer,
    runtime: Handle,
    busid: String,
    /// Alternate setting per interface, where not 0.
    alts: HashMap<u8, u8>,
    /// Control URBs waiting for their turn.
    queue: VecDeque<Urb>,
    /// The claim outlives the session (see `HostSession::start_keeping_claim`).
    keep_claim: bool,
}

impl Ep0 {
    fn run(mut self, mut rx: mpsc::UnboundedReceiver<Ep0Cmd>) {
        'outer: loop {
            if self.queue.is_empty() {
                match rx.blocking_recv() {
                    Some(cmd) => self.apply(cmd),
                    None => break,
                }
            }
            // Take in everything that arrived, so that an unlink of a waiting URB removes it.
            loop {
                match rx.try_recv() {
                    Ok(cmd) => self.apply(cmd),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => break 'outer,
                }
            }
            if let Some(urb) = self.queue.pop_front() {
                let completion = self.control(&urb);
                self.completer.complete(completion);
            }
        }
        self.stop_endpoints(|_| true);
        if self.keep_claim {
            // The next client starts as after SET_CONFIGURATION: every alternate setting 0.
            let nonzero: Vec<u8> = self.alts.keys().copied().collect();
            for interface in nonzero {
                if let Err(e) = self.ops.set_alt_setting(interface, 0) {
                    warn!(busid = %self.busid, interface, error = %e, "alternate setting not reset");
                }
            }
            debug!(busid = %self.busid, "session ended; the device stays claimed");
        } else {
            self.ops.release_interfaces();
            debug!(busid = %self.busid, "host device released");
        }
    }

    fn apply(&mut self, cmd: Ep0Cmd) {
        match cmd {
            Ep0Cmd::Submit(urb) => self.queue.push_back(urb),
            // An unlink of the transfer in progress cannot stop it (nusb has no per-transfer
            // cancel for control); the server core drops its completion.
            Ep0Cmd::Cancel(seqnum) => self.queue.retain(|u| u.seqnum != seqnum),
        }
    }

    fn control(&mut self, urb: &Urb) -> UrbCompletion {
        let setup = SetupPacket::parse(&urb.setup);
        let result = match intercept::classify(&setup) {
            Intercept::PassThrough => return self.pass_through(urb, &setup),
            Intercept::SetAddress => Ok(()),
            Intercept::SetConfiguration(value) => self.set_configuration(value),
            Intercept::SetInterface { interface, alt } => self.set_interface(interface, alt),
            Intercept::ClearHalt(endpoint) => self.clear_halt(endpoint, &setup),
            Intercept::ResetDevice => self.reset(),
        };
        UrbCompletion::error(urb.seqnum, result.err().unwrap_or(0))
    }

    fn pass_through(&mut self, urb: &Urb, setup: &SetupPacket) -> UrbCompletion {
        let data: &[u8] = match urb.direction {
            Direction::In => &[],
            Direction::Out => &urb.data,
        };
        let result = self.ops.control(setup, data);
        let done = match result {
            Ok(mut data) => {
                intercept::fix_descriptor(setup, &mut data);
                TransferDone {
                    actual_length: if urb.direction == Direction::In {
                        data.len()
                    } else {
                        urb.data.len()
                    },
                    data: data.into(),
                    status: Ok(()),
                }
            }
            // We never cancel a control transfer: a cancelled one ran out of time.
            Err(XferError::Cancelled) => {
                return UrbCompletion::error(urb.seqnum, errno::ETIMEDOUT);
            }
            Err(e) => TransferDone {
                data: Default::default(),
                actual_length: 0,
                status: Err(e),
            },
        };
        endpoint::finish(urb, done)
    }

    fn set_configuration(&mut self, value: u8) -> Result<(), i32> {
        let active = self.ops.active_configuration();
        if value != 0 && value == active {
            // The configuration the device already has (the client's enumeration always asks
            // for it). Sending SET_CONFIGURATION again would make the OS reset it and some
            // devices misbehave (the kernel stub avoids that too); only the alternate settings
            // go back to 0, as they would.
            let nonzero: Vec<u8> = self.alts.keys().copied().collect();
            for interface in nonzero {
                self.set_interface(interface, 0)?;
            }
            return Ok(());
        }
        if value != 0 && self.ops.configuration_descriptor(value).is_none() {
            return Err(errno::EPIPE);
        }
        info!(busid = %self.busid, from = active, to = value, "set configuration");
        self.stop_endpoints(|_| true);
        self.ops.release_interfaces();
        let set = self.ops.set_configuration(value);
        self.alts.clear();
        let claimed = self.ops.claim_interfaces();
        self.start_endpoints(|_| true);
        set.map_err(|e| {
            warn!(busid = %self.busid, error = %e, "set configuration failed");
            e.request_errno()
        })?;
        claimed.map_err(|e| {
            warn!(busid = %self.busid, error = %e, "interfaces of the new configuration");
            e.error.request_errno()
        })
    }

    fn set_interface(&mut self, interface: u8, alt: u8) -> Result<(), i32> {
        let exists = self
            .ops
            .configuration_descriptor(self.ops.active_configuration())
            .is_some_and(|c| {
                parse_configuration(&c)
                    .0
                    .iter()
                    .any(|i| i.number == interface && i.alt == alt)
            });
        if !exists {
            return Err(errno::EPIPE);
        }
        self.stop_endpoints(|i| i == interface);
        let result = self.ops.set_alt_setting(interface, alt);
        if result.is_ok() {
            if alt == 0 {
                self.alts.remove(&interface);
            } else {
                self.alts.insert(interface, alt);
            }
        }
        self.start_endpoints(|i| i == interface);
        result.map_err(|e| {
            warn!(busid = %self.busid, interface, alt, error = %e, "set interface failed");
            e.request_errno()
        })
    }

    fn clear_halt(&mut self, endpoint: u8, setup: &SetupPacket) -> Result<(), i32> {
        if endpoint & 0x7f == 0 {
            return Ok(()); // endpoint 0 clears its own stall with the next setup packet
        }
        let tx = match lock(&self.routes).endpoints.get(&endpoint) {
            Some(Route::Queue { tx, .. }) => Some(tx.clone()),
            _ => None,
        };
        let Some(tx) = tx else {
            // No queue here (isochronous, or not enabled): let the device answer.
            return self
                .ops
                .control(setup, &[])
                .map(|_| ())
                .map_err(transfer_errno);
        };
        let (reply, answer) = oneshot::channel();
        if tx.send(EpCmd::ClearHalt(reply)).is_err() {
            return Err(errno::ESHUTDOWN);
        }
        match answer.blocking_recv() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.request_errno()),
            Err(_) => Err(errno::ESHUTDOWN),
        }
    }

    fn reset(&mut self) -> Result<(), i32> {
        info!(busid = %self.busid, "client reset the device");
        self.stop_endpoints(|_| true);
        self.ops.release_interfaces();
        let reset = self.ops.reset();
        self.alts.clear();
        let claimed = self.ops.claim_interfaces();
        self.start_endpoints(|_| true);
        reset.map_err(|e| {
            warn!(busid = %self.busid, error = %e, "reset failed");
            e.request_errno()
        })?;
        claimed.map_err(|e| {
            warn!(busid = %self.busid, error = %e, "cannot claim the device again after reset");
            e.error.request_errno()
        })
    }

    /// The endpoints of the current alternate settings of the active configuration.
    fn current_endpoints(&self, wanted: impl Fn(u8) -> bool) -> Vec<EndpointDesc> {
        let Some(config) = self
            .ops
            .configuration_descriptor(self.ops.active_configuration())
        else {
            return Vec::new();
        };
        parse_configuration(&config)
            .1
            .into_iter()
            .filter(|e| wanted(e.interface))
            .filter(|e| self.alts.get(&e.interface).copied().unwrap_or(0) == e.alt)
            .map(|e| EndpointDesc {
                address: e.address,
                interface: e.interface,
                kind: TransferKind::from_attributes(e.attributes),
                max_packet_size: usize::from(e.max_packet_size),
            })
            .collect()
    }

    /// Opens the queues of the wanted interfaces' endpoints and starts their tasks.
    fn start_endpoints(&mut self, wanted: impl Fn(u8) -> bool) {
        for desc in self.current_endpoints(wanted) {
            let route = match desc.kind {
                TransferKind::Bulk | TransferKind::Interrupt => {
                    match self.ops.open_endpoint(&desc) {
                        Ok(queue) => {
                            let (tx, task) =
                                endpoint::spawn(&self.runtime, queue, desc, self.completer.clone());
                            Route::Queue {
                                tx,
                                task: task.abort_handle(),
                                interface: desc.interface,
                            }
                        }
                        Err(e) => {
                            warn!(busid = %self.busid, endpoint = desc.address, error = %e, "cannot open endpoint");
                            continue;
                        }
                    }
                }
                kind => Route::Unsupported {
                    kind,
                    warned: false,
                    interface: desc.interface,
                },
            };
            let mut routes = lock(&self.routes);
            if routes.closed {
                if let Route::Queue { task, .. } = route {
                    task.abort();
                }
                continue;
            }
            routes.endpoints.insert(desc.address, route);
        }
    }

    /// Ends the tasks of the wanted interfaces' endpoints and waits until their queues are
    /// dropped (the OS refuses alternate-setting changes while an endpoint is open).
    fn stop_endpoints(&mut self, wanted: impl Fn(u8) -> bool) {
        let stopping: Vec<mpsc::UnboundedSender<EpCmd>> = {
            let mut routes = lock(&self.routes);
            let addresses: Vec<u8> = routes
                .endpoints
                .iter()
                .filter(|(_, r)| match r {
                    Route::Queue { interface, .. } | Route::Unsupported { interface, .. } => {
                        wanted(*interface)
                    }
                })
                .map(|(a, _)| *a)
                .collect();
            addresses
                .into_iter()
                .filter_map(|a| match routes.endpoints.remove(&a) {
                    Some(Route::Queue { tx, .. }) => Some(tx),
                    _ => None,
                })
                .collect()
        };
        for tx in stopping {
            let (reply, done) = oneshot::channel();
            if tx.send(EpCmd::Stop(reply)).is_ok() {
                let _ = done.blocking_recv();
            }
        }
    }
}
