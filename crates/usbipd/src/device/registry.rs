//! The export registry: which devices this server offers, and which client holds each one.
//!
//! An import takes a [`Claim`]; while it lives, every other import of that busid answers
//! DEV_BUSY. Dropping the claim (the client disconnected) frees the device for the next import.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;
use usbip_proto::{ExportedDevice, OpStatus};

use super::allowlist::Allowlist;
use super::{Device, DeviceNames};

struct Entry {
    device: Arc<dyn Device>,
    user: Option<SocketAddr>,
    allow: Allowlist,
    /// Set to true when the device stops being exported, to end its session.
    revoked: watch::Sender<bool>,
}

/// What `usbipd list` and status show for one exported device.
#[derive(Debug, Clone)]
pub struct ExportState {
    pub device: ExportedDevice,
    pub names: DeviceNames,
    pub user: Option<SocketAddr>,
}

#[derive(Default)]
pub struct Registry {
    entries: Mutex<BTreeMap<String, Entry>>,
}

impl Registry {
    pub fn new() -> Arc<Registry> {
        Arc::new(Registry::default())
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Entry>> {
        // A panic while holding this short, I/O-free lock leaves the map consistent.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Exports a device under the busid it describes itself with, replacing any previous one.
    pub fn add(&self, device: Arc<dyn Device>) {
        self.add_with_allowlist(device, Allowlist::default());
    }

    /// Exports a device to the client networks in `allow` only.
    pub fn add_with_allowlist(&self, device: Arc<dyn Device>, allow: Allowlist) {
        let busid = device.describe().record.busid;
        self.lock().insert(
            busid,
            Entry {
                device,
                user: None,
                allow,
                revoked: watch::Sender::new(false),
            },
        );
    }

    /// Stops exporting a device; a client using it is disconnected, as when it is unplugged.
    pub fn remove(&self, busid: &str) -> bool {
        match self.lock().remove(busid) {
            Some(entry) => {
                entry.revoked.send_replace(true);
                true
            }
            None => false,
        }
    }

    /// Busids exported now.
    /// Ends the session of whoever imported `busid` (server-side detach); the device stays
    /// exported and can be imported again at once. Returns the client's address, or `None`
    /// when nobody had it imported.
    pub fn detach(&self, busid: &str) -> Option<SocketAddr> {
        let mut entries = self.lock();
        let entry = entries.get_mut(busid)?;
        let client = entry.user?;
        // The session watches the sender it was given; the next import gets a fresh one.
        let old = std::mem::replace(&mut entry.revoked, watch::Sender::new(false));
        old.send_replace(true);
        Some(client)
    }

    /// [`Registry::detach`] for every imported device: `(busid, client)` of each.
    pub fn detach_all(&self) -> Vec<(String, SocketAddr)> {
        let busids = self.busids();
        busids
            .into_iter()
            .filter_map(|b| self.detach(&b).map(|c| (b, c)))
            .collect()
    }

    pub fn busids(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// Whether `busid` is exported here.
    pub fn contains(&self, busid: &str) -> bool {
        self.lock().contains_key(busid)
    }

    /// The device list `client` may see, in busid order.
    pub fn list_for(&self, client: IpAddr) -> Vec<ExportedDevice> {
        let devices: Vec<Arc<dyn Device>> = self
            .lock()
            .values()
            .filter(|e| e.allow.permits(client))
            .map(|e| e.device.clone())
            .collect();
        devices.iter().map(|d| d.describe()).collect()
    }

    /// The device list with who uses each device.
    pub fn states(&self) -> Vec<ExportState> {
        let entries: Vec<(Arc<dyn Device>, Option<SocketAddr>)> = self
            .lock()
            .values()
            .map(|e| (e.device.clone(), e.user))
            .collect();
        entries
            .into_iter()
            .map(|(d, user)| ExportState {
                device: d.describe(),
                names: d.names(),
                user,
            })
            .collect()
    }

    /// Reserves `busid` for `client`: NODEV if no such device is exported (as the kernel's
    /// usbipd answers), NA if it is not exported to this client, DEV_BUSY if another client
    /// has it.
    pub fn claim(self: &Arc<Self>, busid: &str, client: SocketAddr) -> Result<Claim, OpStatus> {
        let mut entries = self.lock();
        let entry = entries.get_mut(busid).ok_or(OpStatus::NoDev)?;
        if !entry.allow.permits(client.ip()) {
            return Err(OpStatus::Na);
        }
        if entry.user.is_some() {
            return Err(OpStatus::DevBusy);
        }
        entry.user = Some(client);
        Ok(Claim {
            registry: self.clone(),
            busid: busid.to_string(),
            device: entry.device.clone(),
            revoked: entry.revoked.subscribe(),
        })
    }
}

/// One client's hold on one device; released on drop.
pub struct Claim {
    registry: Arc<Registry>,
    busid: String,
    device: Arc<dyn Device>,
    revoked: watch::Receiver<bool>,
}

impl Claim {
    /// Becomes true when the device is no longer exported (unplugged or unbound).
    pub fn revoked(&self) -> watch::Receiver<bool> {
        self.revoked.clone()
    }

    pub fn device(&self) -> &Arc<dyn Device> {
        &self.device
    }

    pub fn busid(&self) -> &str {
        &self.busid
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut entries = self.registry.lock();
        if let Some(entry) = entries.get_mut(&self.busid) {
            // The entry may have been replaced by a new device under the same busid.
            if Arc::ptr_eq(&entry.device, &self.device) {
                entry.user = None;
            }
        }
    }
}
