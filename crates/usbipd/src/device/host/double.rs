//! A stand-in for the USB library in tests: records every host call and lets the test finish
//! queued transfers one by one, in order, like nusb's queues.
//!
//! Test-only. It models what the logic above the backend relies on (in-order completion,
//! cancel_all returning every pending transfer, no alt-setting change with open queues) and
//! nothing else.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use super::backend::{
    BoxFuture, EndpointDesc, EndpointQueue, HostBackend, HostDeviceInfo, HostDeviceOps,
    TransferDone, TransferRequest,
};
use super::errors::{ClaimError, HostError, HostErrorKind, XferError};
use crate::device::SetupPacket;

/// A plain high-speed device at `busid` with this VID:PID, for tests that only need a listing.
pub(crate) fn sample_info(busid: &str, vid: u16, pid: u16) -> HostDeviceInfo {
    HostDeviceInfo {
        busid: busid.into(),
        busnum: 1,
        devnum: 2,
        path: String::new(),
        speed: usbip_proto::Speed::High,
        vendor_id: vid,
        product_id: pid,
        device_version: 0,
        class: 0,
        subclass: 0,
        protocol: 0,
        manufacturer: None,
        product: None,
        serial: None,
        configuration_value: 1,
        num_configurations: 1,
        configurations: vec![],
        interfaces: vec![],
    }
}

pub(crate) type ControlFn =
    Box<dyn FnMut(&SetupPacket, &[u8]) -> Result<Vec<u8>, XferError> + Send>;

/// One endpoint's queue as the test sees it.
#[derive(Default)]
pub(crate) struct QueueState {
    /// Every request ever submitted, in order.
    pub submitted: Vec<TransferRequest>,
    /// Pending transfers, oldest first, with their result once finished.
    pub pending: VecDeque<(TransferRequest, Option<TransferDone>)>,
    /// Bytes the oldest transfer has moved, reported if it is cancelled.
    pub head_progress: usize,
    pub cancel_alls: usize,
    pub clear_halts: usize,
    waker: Option<Waker>,
}

pub(crate) struct DeviceState {
    pub calls: Vec<String>,
    pub active: u8,
    pub configurations: Vec<Vec<u8>>,
    pub claimed: Vec<u8>,
    pub queues: HashMap<u8, Arc<Mutex<QueueState>>>,
    /// (endpoint, interface) of every open queue (dropped queues close).
    pub open: Vec<(u8, u8)>,
    pub claim_error: Option<HostError>,
    /// Opening fails with this (the usbfs node cannot be opened).
    pub open_error: Option<HostError>,
    pub control: ControlFn,
    /// Unplugged: no longer listed.
    pub gone: bool,
}

#[derive(Clone)]
pub(crate) struct Double {
    pub state: Arc<Mutex<DeviceState>>,
    pub info: HostDeviceInfo,
}

impl Double {
    pub fn new(info: HostDeviceInfo, configurations: Vec<Vec<u8>>, active: u8) -> Double {
        Double {
            state: Arc::new(Mutex::new(DeviceState {
                calls: Vec::new(),
                active,
                configurations,
                claimed: Vec::new(),
                queues: HashMap::new(),
                open: Vec::new(),
                claim_error: None,
                open_error: None,
                control: Box::new(|_, _| Ok(Vec::new())),
                gone: false,
            })),
            info,
        }
    }

    pub fn state(&self) -> MutexGuard<'_, DeviceState> {
        self.state.lock().unwrap()
    }

    pub fn calls(&self) -> Vec<String> {
        self.state().calls.clone()
    }

    pub fn queue(&self, address: u8) -> Arc<Mutex<QueueState>> {
        self.state().queues.entry(address).or_default().clone()
    }

    /// Requests pending on an endpoint.
    pub fn pending(&self, address: u8) -> Vec<TransferRequest> {
        let q = self.queue(address);
        let q = q.lock().unwrap();
        q.pending.iter().map(|(r, _)| r.clone()).collect()
    }

    /// Finishes the oldest unfinished transfer of an endpoint.
    pub fn finish(&self, address: u8, done: TransferDone) {
        let q = self.queue(address);
        let mut q = q.lock().unwrap();
        let slot = q
            .pending
            .iter_mut()
            .find(|(_, d)| d.is_none())
            .expect("a transfer to finish");
        slot.1 = Some(done);
        q.head_progress = 0;
        if let Some(w) = q.waker.take() {
            w.wake();
        }
    }
}

impl HostBackend for Double {
    fn list(&self) -> Result<Vec<HostDeviceInfo>, HostError> {
        if self.state().gone {
            return Ok(Vec::new());
        }
        Ok(vec![self.info.clone()])
    }

    fn open(&self, busid: &str) -> Result<Box<dyn HostDeviceOps>, ClaimError> {
        if busid != self.info.busid {
            return Err(ClaimError::new(
                busid,
                None,
                HostError::new(HostErrorKind::NotFound, "no such device"),
            ));
        }
        let mut s = self.state();
        s.calls.push("open".into());
        if let Some(e) = s.open_error.clone() {
            return Err(ClaimError::new(busid, None, e));
        }
        drop(s);
        Ok(Box::new(self.clone()))
    }
}

impl HostDeviceOps for Double {
    fn active_configuration(&self) -> u8 {
        self.state().active
    }

    fn configuration_descriptor(&self, value: u8) -> Option<Vec<u8>> {
        self.state()
            .configurations
            .iter()
            .find(|c| c.get(5) == Some(&value))
            .cloned()
    }

    fn claim_interfaces(&mut self) -> Result<(), ClaimError> {
        let mut s = self.state();
        s.calls.push("claim".into());
        if let Some(e) = s.claim_error.clone() {
            return Err(ClaimError::new(&self.info.busid, Some(0), e));
        }
        let active = s.active;
        let config = s.configurations.iter().find(|c| c.get(5) == Some(&active));
        s.claimed = config
            .map(|c| {
                let mut n: Vec<u8> = crate::device::r#virtual::parse_configuration(c)
                    .0
                    .iter()
                    .map(|i| i.number)
                    .collect();
                n.dedup();
                n
            })
            .unwrap_or_default();
        Ok(())
    }

    fn release_interfaces(&mut self) {
        let mut s = self.state();
        s.calls.push("release".into());
        s.claimed.clear();
    }

    fn open_endpoint(
        &mut self,
        endpoint: &EndpointDesc,
    ) -> Result<Box<dyn EndpointQueue>, HostError> {
        let queue = self.queue(endpoint.address);
        let mut s = self.state();
        if !s.claimed.contains(&endpoint.interface) {
            return Err(HostError::new(HostErrorKind::NotFound, "not claimed"));
        }
        s.open.push((endpoint.address, endpoint.interface));
        Ok(Box::new(DoubleQueue {
            address: endpoint.address,
            queue,
            device: self.state.clone(),
        }))
    }

    fn control(&mut self, setup: &SetupPacket, data: &[u8]) -> Result<Vec<u8>, XferError> {
        let mut control = {
            let mut s = self.state();
            s.calls.push(format!(
                "control {:02x} {:02x} {:04x} {:04x}",
                setup.request_type, setup.request, setup.value, setup.index
            ));
            std::mem::replace(&mut s.control, Box::new(|_, _| Err(XferError::Fault)))
        };
        // Answer without the lock: a test may hold a transfer while it inspects the double.
        let result = control(setup, data);
        self.state().control = control;
        result
    }

    fn set_configuration(&mut self, value: u8) -> Result<(), HostError> {
        let mut s = self.state();
        s.calls.push(format!("set_configuration {value}"));
        assert!(
            s.claimed.is_empty(),
            "set_configuration with claimed interfaces"
        );
        s.active = value;
        Ok(())
    }

    fn set_alt_setting(&mut self, interface: u8, alt: u8) -> Result<(), HostError> {
        let mut s = self.state();
        s.calls.push(format!("set_alt_setting {interface} {alt}"));
        // nusb (and usbfs) refuse while a queue of the interface is open.
        if s.open.iter().any(|(_, i)| *i == interface) {
            s.calls
                .push("REFUSED: queue open during set_alt_setting".into());
            return Err(HostError::new(HostErrorKind::Busy, "endpoints in use"));
        }
        Ok(())
    }

    fn reset(&mut self) -> Result<(), HostError> {
        let mut s = self.state();
        s.calls.push("reset".into());
        assert!(s.claimed.is_empty(), "reset with claimed interfaces");
        Ok(())
    }

    fn attach_kernel_drivers(&mut self) -> Result<(), HostError> {
        self.state().calls.push("attach_kernel_drivers".into());
        Ok(())
    }
}

struct DoubleQueue {
    address: u8,
    queue: Arc<Mutex<QueueState>>,
    device: Arc<Mutex<DeviceState>>,
}

impl Drop for DoubleQueue {
    fn drop(&mut self) {
        let mut s = self.device.lock().unwrap();
        s.open.retain(|(a, _)| *a != self.address);
        s.calls.push(format!("close {:02x}", self.address));
    }
}

impl EndpointQueue for DoubleQueue {
    fn submit(&mut self, request: TransferRequest) {
        let mut q = self.queue.lock().unwrap();
        q.submitted.push(request.clone());
        q.pending.push_back((request, None));
    }

    fn poll_next_complete(&mut self, cx: &mut Context<'_>) -> Poll<TransferDone> {
        let mut q = self.queue.lock().unwrap();
        if let Some((_, Some(_))) = q.pending.front() {
            let (_, done) = q.pending.pop_front().expect("front");
            return Poll::Ready(done.expect("finished"));
        }
        q.waker = Some(cx.waker().clone());
        Poll::Pending
    }

    fn pending(&self) -> usize {
        self.queue.lock().unwrap().pending.len()
    }

    fn cancel_all(&mut self) {
        let mut q = self.queue.lock().unwrap();
        q.cancel_alls += 1;
        let progress = q.head_progress;
        let mut first = true;
        for (request, done) in q.pending.iter_mut() {
            if done.is_none() {
                let moved = if first { progress } else { 0 };
                let data = match request {
                    TransferRequest::In { .. } => vec![0xee; moved].into(),
                    TransferRequest::Out { .. } => Default::default(),
                };
                *done = Some(TransferDone {
                    data,
                    actual_length: moved,
                    status: Err(XferError::Cancelled),
                });
            }
            first = false;
        }
        if let Some(w) = q.waker.take() {
            w.wake();
        }
    }

    fn clear_halt(&mut self) -> BoxFuture<'static, Result<(), HostError>> {
        let mut q = self.queue.lock().unwrap();
        assert!(q.pending.is_empty(), "clear_halt with transfers pending");
        q.clear_halts += 1;
        self.device
            .lock()
            .unwrap()
            .calls
            .push(format!("clear_halt {:02x}", self.address));
        Box::pin(async { Ok(()) })
    }
}
