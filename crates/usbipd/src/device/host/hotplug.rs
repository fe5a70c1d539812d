//! Where hotplug events come from. On Linux, the kernel's own uevents (no udevd needed:
//! containers, mdev systems), else nusb's watcher (udevd's events on Linux, IOKit on macOS).
//! Which one is used is logged once at start, and so is having none.
//!
//! It only reports; what an event means is its subscribers' business.

use tracing::{info, warn};

use super::backend::{HostBackend, HotplugEvent};
use super::errors::HostError;
use super::nusb_backend::{NusbBackend, NusbHotplugWatch};
use crate::platform::kernel_events::{KernelUsbEvent, KernelUsbEvents};

/// Arrivals and departures of host devices.
pub struct HotplugWatch {
    source: Source,
}

enum Source {
    Kernel(KernelUsbEvents),
    Nusb(NusbHotplugWatch),
}

impl HotplugWatch {
    /// Starts watching and logs the source. Needs a tokio runtime; blocks briefly. `Err` (with
    /// a warning logged) when no source is available.
    pub fn new() -> Result<HotplugWatch, HostError> {
        match KernelUsbEvents::open() {
            Some(Ok(kernel)) => {
                info!("hotplug: following the kernel's uevents (works with or without udevd)");
                return Ok(HotplugWatch {
                    source: Source::Kernel(kernel),
                });
            }
            Some(Err(e)) => {
                warn!(error = %e, "hotplug: kernel uevent socket unavailable; trying udevd's events")
            }
            None => {}
        }
        match NusbHotplugWatch::new() {
            Ok(watch) => {
                info!("hotplug: following the USB library's hotplug events");
                Ok(HotplugWatch {
                    source: Source::Nusb(watch),
                })
            }
            Err(e) => {
                warn!(
                    error = %e,
                    "no hotplug source available: an unplugged device is noticed only when its \
                     transfers fail (ENODEV), and a bound device that returns is not claimed \
                     again until `usbipd bind` or a restart"
                );
                Err(e)
            }
        }
    }

    /// The next arrival or departure of a device that has a busid (root hubs are skipped);
    /// `None` when the source fails for good.
    pub async fn next(&mut self) -> Option<HotplugEvent> {
        match &mut self.source {
            Source::Kernel(kernel) => next_from_kernel(kernel).await,
            Source::Nusb(watch) => watch.next().await,
        }
    }
}

/// A device counts as arrived at its `bind` uevent: at `add` the kernel has not configured it
/// yet (no interfaces to claim); at `bind` its configuration is set and its interfaces exist.
/// The kernel's events carry no descriptors: an arrival is read back through the library.
async fn next_from_kernel(kernel: &mut KernelUsbEvents) -> Option<HotplugEvent> {
    loop {
        let busid = match kernel.next().await? {
            KernelUsbEvent::Left { busid } => {
                return Some(HotplugEvent::Left { busid: Some(busid) })
            }
            KernelUsbEvent::Arrived { busid } => busid,
        };
        // The device's attributes are in sysfs by now; read them as at enumeration.
        let listed = tokio::task::spawn_blocking(|| NusbBackend.list()).await;
        match listed {
            Ok(Ok(devices)) => {
                if let Some(info) = devices.into_iter().find(|d| d.busid == busid) {
                    return Some(HotplugEvent::Arrived(info));
                }
            }
            Ok(Err(e)) => warn!(%busid, error = %e, "hotplug: arrived device not read"),
            Err(_) => return None,
        }
    }
}
