//! Mass storage before a capture (macOS): a capture re-enumerates the device away from its
//! drivers, and the OS must not lose a mounted file system under it, so IOKit refuses to take
//! a device whose volumes are mounted. [`UnmountingCapturer`] wraps a [`Capturer`]: before the
//! capture it unmounts every whole disk of the device that has a mounted volume, through
//! [`VolumeUnmounter`] (DiskArbitration on macOS). When disk arbitration dissents it puts back
//! what it had unmounted and refuses the capture naming the volume and the processes holding
//! it. A failed capture mounts the volumes again; a device given back is re-enumerated without
//! the capture, so the OS finds its disks anew and mounts them itself.
//!
//! Everything here is tested on Linux against a double of disk arbitration (`unmount_tests.rs`).

use std::sync::Arc;

use tracing::{info, warn};

use super::capture::Capturer;
use super::errors::{HostError, HostErrorKind};
use crate::platform::volumes::{Disk, Dissent, VolumeUnmounter};

/// A [`Capturer`] that unmounts a mass-storage device's volumes first.
pub struct UnmountingCapturer {
    inner: Arc<dyn Capturer>,
    volumes: Arc<dyn VolumeUnmounter>,
}

impl UnmountingCapturer {
    pub fn new(inner: Arc<dyn Capturer>, volumes: Arc<dyn VolumeUnmounter>) -> Self {
        UnmountingCapturer { inner, volumes }
    }

    /// Mounts again the disks this capture had unmounted (best effort: each failure is logged).
    fn remount(&self, busid: &str, disks: &[Disk]) {
        for disk in disks {
            if let Err(e) = self.volumes.mount_whole(&disk.bsd_name) {
                warn!(busid, disk = %disk.bsd_name, error = %e, "volumes not mounted again");
            }
        }
    }

    /// The refusal of a capture because `disk` could not be unmounted.
    fn refusal(&self, disk: &Disk, dissent: &Dissent) -> HostError {
        let mut held = Vec::new();
        let mut free = Vec::new();
        for volume in disk.mounted() {
            let Some(at) = &volume.mount_point else {
                continue;
            };
            let what = match &volume.name {
                Some(name) => format!(
                    "volume \"{name}\" ({} at {})",
                    volume.bsd_name,
                    at.display()
                ),
                None => format!("volume {} at {}", volume.bsd_name, at.display()),
            };
            let holders = self.volumes.holders(at);
            if holders.is_empty() {
                free.push(what);
            } else {
                let who: Vec<String> = holders
                    .iter()
                    .map(|h| format!("{} (pid {})", h.name, h.pid))
                    .collect();
                held.push(format!("{what} is in use by {}", who.join(", ")));
            }
        }
        let subject = if held.is_empty() {
            // Nobody has a file open: disk arbitration (or an approval callback) refused.
            format!("{} could not be unmounted", free.join(", "))
        } else {
            held.join("; ")
        };
        HostError::new(
            HostErrorKind::Busy,
            format!(
                "{subject}: macOS refused to unmount {} ({dissent}); close the files or eject \
                 the disk in Finder, then bind again",
                disk.bsd_name
            ),
        )
    }
}

impl Capturer for UnmountingCapturer {
    fn capture(&self, busid: &str) -> Result<(), HostError> {
        let disks = self.volumes.disks(busid).map_err(|e| {
            HostError::new(
                HostErrorKind::Other,
                format!("cannot list the volumes of {busid}: {e}"),
            )
        })?;
        let mut unmounted: Vec<Disk> = Vec::new();
        for disk in disks.iter().filter(|d| d.mounted().next().is_some()) {
            // Counted before asking: volumes may go before one dissents, and must come back.
            unmounted.push(disk.clone());
            if let Err(dissent) = self.volumes.unmount_whole(&disk.bsd_name) {
                let refusal = self.refusal(disk, &dissent);
                self.remount(busid, &unmounted);
                return Err(refusal);
            }
            let names: Vec<&str> = disk
                .mounted()
                .map(|v| v.name.as_deref().unwrap_or(&v.bsd_name))
                .collect();
            info!(busid, disk = %disk.bsd_name, volumes = ?names, "volumes unmounted for the capture");
        }
        if let Err(e) = self.inner.capture(busid) {
            self.remount(busid, &unmounted);
            return Err(e);
        }
        Ok(())
    }

    fn give_back(&self, busid: &str) -> Result<(), HostError> {
        // The re-enumeration without the capture lets the storage driver match again; its
        // disks appear anew and disk arbitration mounts their volumes as for any new disk.
        self.inner.give_back(busid)
    }

    fn reset(&self, busid: &str) -> Result<(), HostError> {
        self.inner.reset(busid)
    }
}

#[cfg(test)]
#[path = "unmount_tests.rs"]
mod tests;
