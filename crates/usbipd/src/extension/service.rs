//! The extension's core: the claim book kept in step with the registry file, the host bus and
//! the export table. The book ([`super::claim_book`]) decides; this file does what it says
//! (claims and releases on the bus, saves, logs and events) and returns domain errors that
//! [`super::dispatch`] turns into wire codes.
//!
//! Every state change goes through one queue (`ops`) so the file always says what memory says;
//! the book's lock itself is short and never held across I/O or an await. Logs carry busid,
//! VID:PID, the transition and OS error codes: never anything a device sent.

use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::bus::{BusClaim, BusDevice, BusError, BusEvent, HostBus};
use super::claim_book::{BookError, ClaimBook, RestoreStep};
use super::claims::{ClaimRecord, ClaimStore, StoreError};
use super::health::HealthState;
use crate::device::registry::Registry;
use crate::ipc::{ClaimInfo, ErrorCode, Event, EventKind};
use crate::server::ServerConfig;

/// The book as the extension keeps it: claim handles from the bus, session tasks.
pub(super) type Book = ClaimBook<Box<dyn BusClaim>, JoinHandle<()>>;

/// Why a request to the extension failed, before it is given a wire code.
#[derive(Debug, thiserror::Error)]
pub enum ExtensionError {
    #[error(transparent)]
    Book(#[from] BookError),
    /// The claim registry could not be read or written.
    #[error(transparent)]
    StateFile(StoreError),
    #[error("cannot claim {busid}")]
    Claim { busid: String, cause: BusError },
    #[error("{busid} was not given back to its driver")]
    Release { busid: String, cause: BusError },
    /// An imported connection's descriptor is not a TCP socket.
    #[error("not a TCP socket: {0}")]
    NotTcp(std::io::Error),
}

pub struct Extension {
    pub(super) bus: Arc<dyn HostBus>,
    store: ClaimStore,
    pub(super) exports: Arc<Registry>,
    book: Mutex<Book>,
    /// Serialises bind, unbind, hotplug, restore and shutdown. An async mutex on purpose: it
    /// is a queue of operations (each awaits a blocking claim), not a lock on data.
    pub(super) ops: tokio::sync::Mutex<()>,
    pub(super) health: HealthState,
    events: broadcast::Sender<Event>,
    pub(super) server_config: ServerConfig,
}

fn vid_pid(r: &ClaimRecord) -> String {
    format!("{:04x}:{:04x}", r.vid, r.pid)
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
            book: Mutex::new(ClaimBook::new()),
            ops: tokio::sync::Mutex::new(()),
            health,
            events: broadcast::channel(256).0,
            server_config,
        })
    }

    pub(super) fn book(&self) -> MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|e| e.into_inner())
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
        let steps = self.book().restore(records, &present);
        for step in steps {
            match step {
                RestoreStep::Reattach { record, busid } => {
                    // Interrupted unbind (a crash): the device goes back to its kernel driver.
                    match self.bus.reattach(&busid) {
                        Ok(()) => {
                            info!(%busid, vid_pid = %vid_pid(&record), transition = "releasing -> released", "given back to its kernel driver after a restart")
                        }
                        Err(e) => self.failed(Some(&busid), &e, "reattach after restart"),
                    }
                    self.emit(EventKind::Released, &record);
                }
                RestoreStep::Forget(_) => {}
                RestoreStep::Claim(record) => {
                    info!(busid = %record.busid, vid_pid = %vid_pid(&record), transition = "requested -> claiming", "restoring claim");
                    let _ = self
                        .claim_into_slot(&record.busid, EventKind::Claimed)
                        .await;
                }
                RestoreStep::Wait(record) => {
                    info!(busid = %record.busid, vid_pid = %vid_pid(&record), state = "absent", "bound device not plugged in; waiting for it");
                }
            }
        }
        self.persist().await
    }

    /// Claims the device of the slot at `busid` (state Claiming). On success it is exported;
    /// on failure the slot waits (Absent) and the error is recorded.
    async fn claim_into_slot(&self, busid: &str, kind: EventKind) -> Result<(), BusError> {
        let bus = self.bus.clone();
        let id = busid.to_string();
        let result = tokio::task::spawn_blocking(move || bus.claim(&id))
            .await
            .unwrap_or_else(|_| Err(BusError::new(ErrorCode::Internal)));
        match result {
            Ok(handle) => {
                let device = handle.device();
                let driver = handle.detached_driver();
                let record = self
                    .book()
                    .claimed(busid, handle, driver)
                    .map_err(|_| BusError::new(ErrorCode::Internal))?;
                self.exports.add(device);
                info!(busid, vid_pid = %vid_pid(&record), detached_driver = record.detached_driver.as_deref().unwrap_or("-"), transition = "claiming -> claimed", "claimed");
                self.emit(kind, &record);
                Ok(())
            }
            Err(e) => {
                let record = self
                    .book()
                    .claim_failed(busid)
                    .map_err(|_| BusError::new(ErrorCode::Internal))?;
                self.failed(Some(busid), &e, "claim");
                self.emit(EventKind::ClaimFailed, &record);
                Err(e)
            }
        }
    }

    pub(super) fn failed(&self, busid: Option<&str>, e: &BusError, what: &str) {
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
        let records = self.book().records();
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.save(&records))
            .await
            .map_err(|e| StoreError::Corrupt {
                path: self.store.path().to_path_buf(),
                reason: e.to_string(),
            })?
    }

    async fn persist_or_error(&self) -> Result<(), ExtensionError> {
        self.persist().await.map_err(|e| {
            warn!(code = %ErrorCode::StateFile, "claim registry not written");
            self.health.record_error(
                None,
                ErrorCode::StateFile,
                None,
                "claim registry not written",
            );
            ExtensionError::StateFile(e)
        })
    }

    /// `usbipd bind`: claims `busid` exclusively and exports it.
    pub async fn bind(&self, busid: &str) -> Result<ClaimInfo, ExtensionError> {
        let _op = self.ops.lock().await;
        let present = self.bus.devices();
        let record = self.book().bind(busid, &present)?;
        info!(busid, vid_pid = %vid_pid(&record), transition = "requested -> claiming", "bind");
        // Saved before the driver is detached: a crash from here on restores the claim.
        if let Err(e) = self.persist_or_error().await {
            self.book().forget(busid);
            return Err(e);
        }
        if let Err(cause) = self.claim_into_slot(busid, EventKind::Claimed).await {
            self.book().forget(busid);
            info!(busid, vid_pid = %vid_pid(&record), transition = "claiming -> released", "bind failed");
            self.persist_or_error().await?;
            return Err(ExtensionError::Claim {
                busid: busid.into(),
                cause,
            });
        }
        self.persist_or_error().await?;
        self.info(busid)
            .ok_or_else(|| BookError::Vanished(busid.into()).into())
    }

    /// `usbipd unbind`: ends any session, releases the claim, gives the device back to its
    /// kernel driver and forgets it.
    pub async fn unbind(&self, busid: &str) -> Result<(), ExtensionError> {
        let _op = self.ops.lock().await;
        self.unbind_locked(busid).await
    }

    pub async fn unbind_all(&self) -> Result<Vec<String>, ExtensionError> {
        let _op = self.ops.lock().await;
        let busids = self.book().busids();
        for b in &busids {
            self.unbind_locked(b).await?;
        }
        Ok(busids)
    }

    async fn unbind_locked(&self, busid: &str) -> Result<(), ExtensionError> {
        let taken = self.book().begin_unbind(busid)?;
        let record = taken.record;
        info!(busid, vid_pid = %vid_pid(&record), transition = "claimed -> releasing", "unbind");
        // Saved first: if we die while giving the device back, the next start finishes it.
        self.persist_or_error().await?;
        self.exports.remove(busid);
        super::sessions::end_sessions(taken.sessions).await;
        let mut result = Ok(());
        if let Some(handle) = taken.handle {
            let released = tokio::task::spawn_blocking(move || handle.release())
                .await
                .unwrap_or_else(|_| Err(BusError::new(ErrorCode::Internal)));
            if let Err(cause) = released {
                self.failed(Some(busid), &cause, "release");
                result = Err(ExtensionError::Release {
                    busid: busid.into(),
                    cause,
                });
            }
        }
        self.book().forget(busid);
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
                let departed = self.book().handle(&busid).is_some_and(|h| h.departed());
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
        let Some(taken) = self.book().left(busid) else {
            return;
        };
        self.exports.remove(busid);
        super::sessions::end_sessions(taken.sessions).await;
        if let Some(handle) = taken.handle {
            handle.unplugged(); // the device is gone: nothing to give back
        }
        let record = taken.record;
        warn!(busid, vid_pid = %vid_pid(&record), transition = "claimed -> released", "{why}; claim released, waiting for it to return");
        self.emit(EventKind::Gone, &record);
    }

    async fn arrived(&self, dev: BusDevice) {
        let Some(back) = self.book().returned(&dev) else {
            return;
        };
        info!(busid = %dev.busid, vid_pid = %dev.vid_pid(), transition = "requested -> claiming", "bound device is back");
        let _ = self.claim_into_slot(&dev.busid, EventKind::Reclaimed).await;
        if back.moved_from.is_some() {
            let _ = self.persist_or_error().await;
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }
}
