//! Exports the bound host devices, and keeps that set right: at start, when a device is
//! plugged or unplugged, and when `usbipd bind`/`unbind` change the bindings.
//!
//! This is fallback mode: the server opens the device itself when a client imports it. A
//! device that is not bound is never exported, and so never opened.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tracing::{info, warn};

use crate::bindings::Bindings;
use crate::device::host::{HostBackend, HostDevice, HostDeviceInfo};
use crate::device::registry::Registry;

/// A host device as `usbipd list` shows it.
#[derive(Debug, Clone)]
pub struct HostListing {
    pub info: HostDeviceInfo,
    pub bound: bool,
}

pub struct HostExports {
    backend: Arc<dyn HostBackend>,
    registry: Arc<Registry>,
    bindings_path: PathBuf,
    /// Every host device seen at the last refresh, and whether it is bound (so exported).
    known: Mutex<BTreeMap<String, HostListing>>,
}

impl HostExports {
    pub fn new(
        backend: Arc<dyn HostBackend>,
        registry: Arc<Registry>,
        bindings_path: PathBuf,
    ) -> Arc<HostExports> {
        Arc::new(HostExports {
            backend,
            registry,
            bindings_path,
            known: Mutex::default(),
        })
    }

    /// Re-reads the bindings and the host's devices and exports exactly the bound ones that
    /// are present. A device that went away or was unbound stops being exported, which ends
    /// its client's session. Blocks (enumeration): call it off the async executor.
    pub fn refresh(&self) -> anyhow::Result<()> {
        let bindings = Bindings::load(&self.bindings_path)?;
        let devices = self.backend.list()?;
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        let now: BTreeMap<String, HostListing> = devices
            .into_iter()
            .map(|info| {
                let bound = bindings.is_bound(&info);
                (info.busid.clone(), HostListing { info, bound })
            })
            .collect();
        for (busid, before) in known.iter() {
            let still = now.get(busid);
            let keep = still.is_some_and(|n| n.bound && n.info == before.info);
            if before.bound && !keep {
                info!(%busid, "host device no longer shared (unplugged or unbound)");
                self.registry.remove(busid);
            }
        }
        for (busid, listing) in &now {
            let was = known.get(busid);
            let unchanged = was.is_some_and(|w| w.bound && w.info == listing.info);
            if listing.bound && !unchanged {
                info!(%busid, vid_pid = %format!("{:04x}:{:04x}", listing.info.vendor_id, listing.info.product_id), "sharing host device");
                self.registry.add(Arc::new(HostDevice::new(
                    self.backend.clone(),
                    listing.info.clone(),
                )));
            }
        }
        *known = now;
        Ok(())
    }

    /// The host devices seen at the last refresh.
    pub fn listing(&self) -> Vec<HostListing> {
        self.known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Refreshes off the executor and logs a failure instead of returning it.
    pub async fn refresh_logged(self: &Arc<Self>) {
        let me = self.clone();
        match tokio::task::spawn_blocking(move || me.refresh()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %e, "host devices not refreshed"),
            Err(e) => warn!(error = %e, "host device refresh failed"),
        }
    }
}

/// Refreshes on every hotplug event until the watcher ends.
#[cfg(host_usb)]
pub async fn follow_hotplug(exports: Arc<HostExports>) {
    let watch = match tokio::task::spawn_blocking(crate::device::host::HotplugWatch::new).await {
        Ok(Ok(w)) => w,
        // Without a source (logged by the watch): devices plugged in later need a restart or
        // `usbipd bind`.
        Ok(Err(_)) | Err(_) => return,
    };
    let mut watch = watch;
    while watch.next().await.is_some() {
        exports.refresh_logged().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::Binding;
    use crate::device::host::{ClaimError, HostDeviceOps, HostError, HostErrorKind};

    #[derive(Default)]
    struct FakeBus {
        devices: Mutex<Vec<HostDeviceInfo>>,
    }

    impl HostBackend for FakeBus {
        fn list(&self) -> Result<Vec<HostDeviceInfo>, HostError> {
            Ok(self.devices.lock().unwrap().clone())
        }

        fn open(&self, busid: &str) -> Result<Box<dyn HostDeviceOps>, ClaimError> {
            Err(ClaimError::new(
                busid,
                None,
                HostError::new(HostErrorKind::NotFound, "fake"),
            ))
        }
    }

    fn info(busid: &str, vid: u16) -> HostDeviceInfo {
        crate::device::host::double::sample_info(busid, vid, 1)
    }

    #[test]
    fn exports_exactly_the_bound_present_devices() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bindings.json");
        let bus = Arc::new(FakeBus::default());
        *bus.devices.lock().unwrap() = vec![info("1-1", 0x1111), info("1-2", 0x2222)];
        let registry = Registry::new();
        let exports = HostExports::new(bus.clone(), registry.clone(), path.clone());

        exports.refresh().unwrap();
        assert!(
            registry.busids().is_empty(),
            "nothing bound, nothing exported"
        );
        assert_eq!(exports.listing().len(), 2);

        let mut b = Bindings::default();
        b.add(Binding::Busid("1-2".into()));
        b.add(Binding::HardwareId {
            vid: 0x3333,
            pid: 1,
        });
        b.save(&path).unwrap();
        exports.refresh().unwrap();
        assert_eq!(registry.busids(), vec!["1-2".to_string()]);

        // A bound hardware id plugged in later is exported; an unplugged device is not.
        *bus.devices.lock().unwrap() = vec![info("1-1", 0x1111), info("2-4", 0x3333)];
        exports.refresh().unwrap();
        assert_eq!(registry.busids(), vec!["2-4".to_string()]);

        // Unbinding stops the export.
        b.remove(&Binding::HardwareId {
            vid: 0x3333,
            pid: 1,
        });
        b.save(&path).unwrap();
        exports.refresh().unwrap();
        assert!(registry.busids().is_empty());
    }

    #[test]
    fn unbinding_revokes_the_session_of_an_attached_client() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bindings.json");
        let bus = Arc::new(FakeBus::default());
        *bus.devices.lock().unwrap() = vec![info("1-1", 0x1111)];
        let registry = Registry::new();
        let exports = HostExports::new(bus, registry.clone(), path.clone());
        let mut b = Bindings::default();
        b.add(Binding::Busid("1-1".into()));
        b.save(&path).unwrap();
        exports.refresh().unwrap();
        let claim = registry
            .claim("1-1", "127.0.0.1:9".parse().unwrap())
            .unwrap();
        let revoked = claim.revoked();
        assert!(!*revoked.borrow());
        Bindings::default().save(&path).unwrap();
        exports.refresh().unwrap();
        assert!(*revoked.borrow());
    }
}
