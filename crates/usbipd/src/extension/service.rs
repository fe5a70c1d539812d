//! The extension's core: the bound devices and their claims, kept in step with the registry
//! file, the bus's hotplug events and the sessions of imported devices.
//!
//! Every state change goes through one queue (`ops`) so the file always says what memory says;
//! the data lock itself is short and never held across I/O or an await. Logs carry busid,
//! VID:PID, the transition and OS error codes: never anything a device sent.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::BytesMut;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tracing::{info, warn};
use usbip_proto::OpReply;

use super::bus::{BusDevice, BusEvent, ClaimError, Claimed, HostBus};
use super::claims::{ClaimRecord, ClaimStore, Phase, StoreError};
use super::health::HealthState;
use crate::device::registry::Registry;
use crate::ipc::server::Handler;
use crate::ipc::{
    from_hex, to_hex, ClaimInfo, ErrorCode, Event, EventKind, HostDeviceInfo, IpcError, Request,
    Response, SessionLimits, StatusReport,
};
use futures_core::future::BoxFuture;

use crate::server::ServerConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    Claiming,
    Claimed,
    /// Bound, but the device is unplugged (or could not be claimed): waiting for it.
    Absent,
    Releasing,
}

/// What is taken out of a slot to be closed outside the lock.
type Taken = (String, Option<Box<dyn Claimed>>, Vec<JoinHandle<()>>);

struct Slot {
    record: ClaimRecord,
    state: SlotState,
    handle: Option<Box<dyn Claimed>>,
    sessions: Vec<JoinHandle<()>>,
}

pub struct Extension {
    bus: Arc<dyn HostBus>,
    store: ClaimStore,
    exports: Arc<Registry>,
    slots: Mutex<BTreeMap<String, Slot>>,
    /// Serialises bind, unbind, hotplug and restore. An async mutex on purpose: it is a queue
    /// of operations (each awaits a blocking claim), not a lock on data.
    ops: tokio::sync::Mutex<()>,
    health: HealthState,
    events: broadcast::Sender<Event>,
    server_config: ServerConfig,
}

fn vid_pid(r: &ClaimRecord) -> String {
    format!("{:04x}:{:04x}", r.vid, r.pid)
}

fn ipc_error(e: &ClaimError, message: String) -> IpcError {
    IpcError {
        code: e.code,
        message,
        os: e.os,
    }
}

impl Extension {
    pub fn new(
        bus: Arc<dyn HostBus>,
        store: ClaimStore,
        health: HealthState,
        server_config: ServerConfig,
    ) -> Arc<Extension> {
        Arc::new(Extension {
            bus,
            store,
            exports: Registry::new(),
            slots: Mutex::new(BTreeMap::new()),
            ops: tokio::sync::Mutex::new(()),
            health,
            events: broadcast::channel(256).0,
            server_config,
        })
    }

    fn slots(&self) -> MutexGuard<'_, BTreeMap<String, Slot>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Restores every saved claim, finishes interrupted unbinds, then follows hotplug events.
    pub async fn start(self: &Arc<Self>) -> Result<(), StoreError> {
        // Subscribe first: a device plugged during the restore is not missed.
        let mut bus_events = self.bus.subscribe();
        self.restore().await?;
        let ext = Arc::downgrade(self);
        tokio::spawn(async move {
            while let Some(event) = bus_events.recv().await {
                let Some(ext) = ext.upgrade() else { return };
                ext.on_bus_event(event).await;
            }
        });
        Ok(())
    }

    async fn restore(&self) -> Result<(), StoreError> {
        let _op = self.ops.lock().await;
        let store = self.store.clone();
        let records = tokio::task::spawn_blocking(move || store.load())
            .await
            .map_err(|e| StoreError::Corrupt {
                path: self.store.path().to_path_buf(),
                reason: e.to_string(),
            })??;
        let present = self.bus.devices();
        for record in records {
            let found = present
                .iter()
                .find(|d| record.matches(&d.busid, d.vid, d.pid, d.serial.as_deref()));
            match (record.phase, found) {
                (Phase::Releasing, Some(dev)) => {
                    // Interrupted unbind (a crash): the device goes back to its kernel driver.
                    match self.bus.reattach(&dev.busid) {
                        Ok(()) => {
                            info!(busid = %dev.busid, vid_pid = %dev.vid_pid(), transition = "releasing -> released", "given back to its kernel driver after a restart")
                        }
                        Err(e) => self.failed(Some(&dev.busid), &e, "reattach after restart"),
                    }
                    self.emit(EventKind::Released, &record);
                }
                (Phase::Releasing, None) => {}
                (Phase::Bound, Some(dev)) => {
                    let mut record = record;
                    record.busid = dev.busid.clone();
                    info!(busid = %record.busid, vid_pid = %vid_pid(&record), transition = "requested -> claiming", "restoring claim");
                    self.insert(record.clone(), SlotState::Claiming);
                    let _ = self
                        .claim_into_slot(&record.busid, EventKind::Claimed)
                        .await;
                }
                (Phase::Bound, None) => {
                    info!(busid = %record.busid, vid_pid = %vid_pid(&record), state = "absent", "bound device not plugged in; waiting for it");
                    self.insert(record, SlotState::Absent);
                }
            }
        }
        self.persist().await
    }

    fn insert(&self, record: ClaimRecord, state: SlotState) {
        self.slots().insert(
            record.busid.clone(),
            Slot {
                record,
                state,
                handle: None,
                sessions: Vec::new(),
            },
        );
    }

    /// Claims the device of the slot at `busid` (state Claiming). On success it is exported;
    /// on failure the slot waits (Absent) and the error is recorded.
    async fn claim_into_slot(&self, busid: &str, kind: EventKind) -> Result<(), ClaimError> {
        let bus = self.bus.clone();
        let id = busid.to_string();
        let result = tokio::task::spawn_blocking(move || bus.claim(&id))
            .await
            .unwrap_or_else(|_| Err(ClaimError::new(ErrorCode::Internal)));
        let mut slots = self.slots();
        let Some(slot) = slots.get_mut(busid) else {
            return Err(ClaimError::new(ErrorCode::Internal));
        };
        match result {
            Ok(handle) => {
                if let Some(d) = handle.detached_driver() {
                    slot.record.detached_driver = Some(d);
                }
                self.exports.add(handle.device());
                slot.handle = Some(handle);
                slot.state = SlotState::Claimed;
                info!(busid, vid_pid = %vid_pid(&slot.record), detached_driver = slot.record.detached_driver.as_deref().unwrap_or("-"), transition = "claiming -> claimed", "claimed");
                let record = slot.record.clone();
                drop(slots);
                self.emit(kind, &record);
                Ok(())
            }
            Err(e) => {
                slot.state = SlotState::Absent;
                let record = slot.record.clone();
                drop(slots);
                self.failed(Some(busid), &e, "claim");
                self.emit(EventKind::ClaimFailed, &record);
                Err(e)
            }
        }
    }

    fn failed(&self, busid: Option<&str>, e: &ClaimError, what: &str) {
        let os = e.os.map(|o| o.to_string()).unwrap_or_else(|| "-".into());
        warn!(busid = busid.unwrap_or("-"), code = %e.code, os = %os, "{what} failed");
        self.health
            .record_error(busid, e.code, e.os, &format!("{what} failed"));
    }

    fn emit(&self, kind: EventKind, r: &ClaimRecord) {
        let _ = self.events.send(Event {
            kind,
            busid: r.busid.clone(),
            vid: r.vid,
            pid: r.pid,
        });
    }

    async fn persist(&self) -> Result<(), StoreError> {
        let records: Vec<ClaimRecord> = self.slots().values().map(|s| s.record.clone()).collect();
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.save(&records))
            .await
            .map_err(|e| StoreError::Corrupt {
                path: self.store.path().to_path_buf(),
                reason: e.to_string(),
            })?
    }

    async fn persist_or_error(&self) -> Result<(), IpcError> {
        self.persist().await.map_err(|e| {
            warn!(code = %ErrorCode::StateFile, "claim registry not written");
            self.health.record_error(
                None,
                ErrorCode::StateFile,
                None,
                "claim registry not written",
            );
            IpcError::new(ErrorCode::StateFile, e.to_string())
        })
    }

    /// `usbipd bind`: claims `busid` exclusively and exports it.
    pub async fn bind(&self, busid: &str) -> Result<ClaimInfo, IpcError> {
        let _op = self.ops.lock().await;
        if self.slots().contains_key(busid) {
            return Err(IpcError::new(
                ErrorCode::AlreadyBound,
                format!("{busid} is bound already"),
            ));
        }
        let Some(dev) = self.bus.devices().into_iter().find(|d| d.busid == busid) else {
            return Err(IpcError::new(
                ErrorCode::NoSuchDevice,
                format!("no device at {busid}"),
            ));
        };
        let record = ClaimRecord {
            busid: dev.busid.clone(),
            vid: dev.vid,
            pid: dev.pid,
            serial: dev.serial.clone(),
            detached_driver: dev.driver.clone(),
            phase: Phase::Bound,
        };
        info!(busid, vid_pid = %dev.vid_pid(), transition = "requested -> claiming", "bind");
        self.insert(record.clone(), SlotState::Claiming);
        // Saved before the driver is detached: a crash from here on restores the claim.
        if let Err(e) = self.persist_or_error().await {
            self.slots().remove(busid);
            return Err(e);
        }
        if let Err(e) = self.claim_into_slot(busid, EventKind::Claimed).await {
            self.slots().remove(busid);
            info!(busid, vid_pid = %dev.vid_pid(), transition = "claiming -> released", "bind failed");
            self.persist_or_error().await?;
            return Err(ipc_error(&e, format!("cannot claim {busid}")));
        }
        self.persist_or_error().await?;
        self.info(busid)
            .ok_or_else(|| IpcError::new(ErrorCode::Internal, "claim vanished"))
    }

    /// `usbipd unbind`: ends any session, releases the claim, gives the device back to its
    /// kernel driver and forgets it.
    pub async fn unbind(&self, busid: &str) -> Result<(), IpcError> {
        let _op = self.ops.lock().await;
        self.unbind_locked(busid).await
    }

    pub async fn unbind_all(&self) -> Result<Vec<String>, IpcError> {
        let _op = self.ops.lock().await;
        let busids: Vec<String> = self.slots().keys().cloned().collect();
        for b in &busids {
            self.unbind_locked(b).await?;
        }
        Ok(busids)
    }

    async fn unbind_locked(&self, busid: &str) -> Result<(), IpcError> {
        let (handle, sessions, record) = {
            let mut slots = self.slots();
            let Some(slot) = slots.get_mut(busid) else {
                return Err(IpcError::new(
                    ErrorCode::NotBound,
                    format!("{busid} is not bound"),
                ));
            };
            slot.state = SlotState::Releasing;
            slot.record.phase = Phase::Releasing;
            (
                slot.handle.take(),
                std::mem::take(&mut slot.sessions),
                slot.record.clone(),
            )
        };
        info!(busid, vid_pid = %vid_pid(&record), transition = "claimed -> releasing", "unbind");
        // Saved first: if we die while giving the device back, the next start finishes it.
        self.persist_or_error().await?;
        self.exports.remove(busid);
        end_sessions(sessions).await;
        let mut result = Ok(());
        if let Some(handle) = handle {
            let released = tokio::task::spawn_blocking(move || handle.release())
                .await
                .unwrap_or_else(|_| Err(ClaimError::new(ErrorCode::Internal)));
            if let Err(e) = released {
                self.failed(Some(busid), &e, "release");
                result = Err(ipc_error(
                    &e,
                    format!("{busid} was not given back to its driver"),
                ));
            }
        }
        self.slots().remove(busid);
        self.persist_or_error().await?;
        info!(busid, vid_pid = %vid_pid(&record), transition = "releasing -> released", "unbound");
        self.emit(EventKind::Released, &record);
        result
    }

    async fn on_bus_event(&self, event: BusEvent) {
        let _op = self.ops.lock().await;
        match event {
            BusEvent::Left { busid } => self.left(&busid, "device unplugged").await,
            BusEvent::Departed { busid } => {
                let departed = self
                    .slots()
                    .get(&busid)
                    .and_then(|s| s.handle.as_ref())
                    .is_some_and(|h| h.departed());
                if departed {
                    self.left(
                        &busid,
                        "device gone (its transfers failed with ENODEV/ESHUTDOWN)",
                    )
                    .await;
                }
            }
            BusEvent::Arrived(dev) => self.arrived(dev).await,
        }
    }

    /// The device of `busid` left: its sessions end and its claim is released; the slot waits
    /// for the device to return (and claims it again then).
    async fn left(&self, busid: &str, why: &str) {
        let taken = {
            let mut slots = self.slots();
            slots.get_mut(busid).and_then(|slot| {
                let handle = slot.handle.take()?;
                slot.state = SlotState::Absent;
                Some((
                    handle,
                    std::mem::take(&mut slot.sessions),
                    slot.record.clone(),
                ))
            })
        };
        let Some((handle, sessions, record)) = taken else {
            return;
        };
        self.exports.remove(busid);
        end_sessions(sessions).await;
        handle.unplugged(); // the device is gone: nothing to give back
        warn!(busid, vid_pid = %vid_pid(&record), transition = "claimed -> released", "{why}; claim released, waiting for it to return");
        self.emit(EventKind::Gone, &record);
    }

    async fn arrived(&self, dev: BusDevice) {
        let old_busid = {
            let slots = self.slots();
            slots
                .iter()
                .find(|(_, s)| {
                    s.state == SlotState::Absent
                        && s.record.phase == Phase::Bound
                        && s.record
                            .matches(&dev.busid, dev.vid, dev.pid, dev.serial.as_deref())
                })
                .map(|(b, _)| b.clone())
        };
        let Some(old_busid) = old_busid else { return };
        {
            let mut slots = self.slots();
            if let Some(mut slot) = slots.remove(&old_busid) {
                slot.record.busid = dev.busid.clone();
                slot.state = SlotState::Claiming;
                slots.insert(dev.busid.clone(), slot);
            }
        }
        info!(busid = %dev.busid, vid_pid = %dev.vid_pid(), transition = "requested -> claiming", "bound device is back");
        let _ = self.claim_into_slot(&dev.busid, EventKind::Reclaimed).await;
        if old_busid != dev.busid {
            let _ = self.persist_or_error().await;
        }
    }

    /// Hands an imported client's connection to its device's session.
    pub fn import(
        self: &Arc<Self>,
        fd: OwnedFd,
        busid: String,
        peer: SocketAddr,
        leftover: Vec<u8>,
        limits: Option<SessionLimits>,
    ) -> Result<(), IpcError> {
        // The daemon's limits where it sent them (validated at parse), ours otherwise. Either
        // way the count against the server-wide budget is `server_config`'s, one for every
        // session this extension hosts.
        let config = match limits {
            Some(limits) => super::limits::apply(&limits, &self.server_config),
            None => self.server_config.clone(),
        };
        let std_stream = std::net::TcpStream::from(fd);
        let stream = std_stream
            .set_nonblocking(true)
            .and_then(|()| tokio::net::TcpStream::from_std(std_stream))
            .map_err(|e| {
                IpcError::new(ErrorCode::InvalidRequest, format!("not a TCP socket: {e}"))
            })?;
        let ext = self.clone();
        let id = busid.clone();
        let task = tokio::spawn(async move {
            let on_attached = {
                let id = id.clone();
                Box::new(
                    move || info!(busid = %id, %peer, transition = "claimed -> in use", "client attached"),
                )
            };
            crate::server::serve_import(
                stream,
                peer,
                id.clone(),
                BytesMut::from(&leftover[..]),
                &ext.exports,
                &config,
                Some(on_attached),
            )
            .await;
            info!(busid = %id, %peer, transition = "in use -> claimed", "client gone; the claim stays until unbind");
        });
        let mut slots = self.slots();
        match slots.get_mut(&busid) {
            Some(slot) => {
                slot.sessions.retain(|t| !t.is_finished());
                slot.sessions.push(task);
            }
            None => drop(task), // not bound: serve_import answers NODEV by itself
        }
        Ok(())
    }

    fn info_of(&self, slot: &Slot, users: &BTreeMap<String, Option<SocketAddr>>) -> ClaimInfo {
        let client = users.get(&slot.record.busid).copied().flatten();
        let state = match slot.state {
            SlotState::Claiming => "claiming",
            SlotState::Claimed if client.is_some() => "in use",
            SlotState::Claimed => "claimed",
            SlotState::Absent => "absent",
            SlotState::Releasing => "releasing",
        };
        ClaimInfo {
            busid: slot.record.busid.clone(),
            vid: slot.record.vid,
            pid: slot.record.pid,
            serial: slot.record.serial.clone(),
            state: state.into(),
            client: client.map(|c| c.to_string()),
            detached_driver: slot.record.detached_driver.clone(),
        }
    }

    fn users(&self) -> BTreeMap<String, Option<SocketAddr>> {
        self.exports
            .states()
            .into_iter()
            .map(|s| (s.device.record.busid, s.user))
            .collect()
    }

    fn info(&self, busid: &str) -> Option<ClaimInfo> {
        let users = self.users();
        self.slots().get(busid).map(|s| self.info_of(s, &users))
    }

    pub fn status(&self) -> StatusReport {
        let users = self.users();
        StatusReport {
            health: self.health.health(),
            claims: self
                .slots()
                .values()
                .map(|s| self.info_of(s, &users))
                .collect(),
            errors: self.health.errors(),
        }
    }

    pub fn host_devices(&self) -> Vec<HostDeviceInfo> {
        let bound: Vec<String> = self.slots().keys().cloned().collect();
        self.bus
            .devices()
            .into_iter()
            .map(|d| HostDeviceInfo {
                bound: bound.contains(&d.busid),
                busid: d.busid,
                vid: d.vid,
                pid: d.pid,
                serial: d.serial,
                driver: d.driver,
            })
            .collect()
    }

    /// Server-side detach: ends the client session of `busid` (of every device when `None`);
    /// the claims stay.
    pub fn detach(&self, busid: Option<&str>) -> Vec<crate::ipc::DetachedSession> {
        let ended = match busid {
            Some(b) => self
                .exports
                .detach(b)
                .map(|c| vec![(b.to_string(), c)])
                .unwrap_or_default(),
            None => self.exports.detach_all(),
        };
        for (busid, client) in &ended {
            info!(%busid, %client, "client detached on request");
        }
        ended
            .into_iter()
            .map(|(b, c)| crate::ipc::DetachedSession::new(b, c))
            .collect()
    }

    /// The exported devices as an encoded OP_REP_DEVLIST.
    pub fn exported(&self) -> Vec<u8> {
        let devices = self
            .exports
            .states()
            .into_iter()
            .map(|s| s.device)
            .collect();
        let mut out = Vec::new();
        OpReply::DevList(devices).encode(&mut out);
        out
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Ends every session and closes every device. Bound devices stay bound (in the file) and
    /// are claimed again at the next start; only interrupted unbinds are finished now.
    pub async fn shutdown(&self) {
        let _op = self.ops.lock().await;
        let taken: Vec<Taken> = self
            .slots()
            .iter_mut()
            .map(|(b, s)| (b.clone(), s.handle.take(), std::mem::take(&mut s.sessions)))
            .collect();
        for (busid, handle, sessions) in taken {
            self.exports.remove(&busid);
            end_sessions(sessions).await;
            drop(handle);
        }
        info!("extension stopped; bound devices will be claimed again at the next start");
    }
}

/// Aborts session tasks and waits until each has dropped its device session and socket, so
/// the device is no longer in use when this returns.
async fn end_sessions(sessions: Vec<JoinHandle<()>>) {
    for task in sessions {
        task.abort();
        let _ = task.await;
    }
}

/// The IPC face of the extension.
pub struct ExtensionHandler(pub Arc<Extension>);

impl Handler for ExtensionHandler {
    fn handle(&self, request: Request, fd: Option<OwnedFd>) -> BoxFuture<'_, Response> {
        Box::pin(async move {
            let ext = &self.0;
            let result = match request {
                Request::Status => Ok(Response::Status(ext.status())),
                Request::HostDevices => Ok(Response::HostDevices(ext.host_devices())),
                Request::Bind { busid } => ext.bind(&busid).await.map(Response::Bound),
                Request::Unbind { busid } => ext.unbind(&busid).await.map(|()| Response::Unbound {
                    busids: vec![busid],
                }),
                Request::Detach { busid } => Ok(Response::Detached {
                    sessions: ext.detach(busid.as_deref()),
                }),
                Request::UnbindAll => ext
                    .unbind_all()
                    .await
                    .map(|busids| Response::Unbound { busids }),
                Request::Exported => Ok(Response::Exported {
                    devlist: to_hex(&ext.exported()),
                }),
                Request::Import {
                    busid,
                    peer,
                    leftover,
                    limits,
                } => match (fd, peer.parse(), from_hex(&leftover)) {
                    (Some(fd), Ok(peer), Some(leftover)) => ext
                        .import(fd, busid, peer, leftover, limits)
                        .map(|()| Response::Accepted),
                    _ => Err(IpcError::new(ErrorCode::InvalidRequest, "bad import")),
                },
                Request::Subscribe => Ok(Response::Subscribed),
            };
            result.unwrap_or_else(Response::Error)
        })
    }

    fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.0.subscribe()
    }
}
