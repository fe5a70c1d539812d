//! USB devices arriving and leaving as the kernel itself announces them, where the OS has such
//! a source that needs no daemon (Linux: uevents, see `linux::uevent`). Elsewhere there is none
//! and [`KernelUsbEvents::open`] says so; the caller then uses the USB library's watcher.
//!
//! An arrival is reported once the device is configured (its `bind` uevent: its interfaces
//! exist); root hubs are left out. Lost events and a failed socket are logged here.

#[cfg(target_os = "linux")]
use tracing::warn;

/// A USB device's arrival or departure, by busid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelUsbEvent {
    Arrived { busid: String },
    Left { busid: String },
}

/// The kernel's USB device events.
pub struct KernelUsbEvents {
    #[cfg(target_os = "linux")]
    inner: super::linux::uevent::KernelUevents,
    #[cfg(not(target_os = "linux"))]
    never: std::convert::Infallible,
}

impl KernelUsbEvents {
    /// Opens the source; `None` where the OS has none. Needs a tokio runtime with I/O enabled.
    pub fn open() -> Option<std::io::Result<KernelUsbEvents>> {
        #[cfg(target_os = "linux")]
        return Some(
            super::linux::uevent::KernelUevents::open().map(|inner| KernelUsbEvents { inner }),
        );
        #[cfg(not(target_os = "linux"))]
        None
    }

    /// The next arrival or departure; `None` when the source fails for good (logged).
    #[cfg(target_os = "linux")]
    pub async fn next(&mut self) -> Option<KernelUsbEvent> {
        use super::linux::uevent::UeventAction;
        loop {
            let event = match self.inner.next().await {
                Ok(event) => event,
                Err(e) if e.raw_os_error() == Some(nix::errno::Errno::ENOBUFS as i32) => {
                    warn!("hotplug: kernel uevents were lost (receive queue overrun)");
                    continue;
                }
                Err(e) => {
                    warn!(error = %e, "hotplug: kernel uevent socket failed");
                    return None;
                }
            };
            let Some(busid) = event.busid().map(str::to_string) else {
                continue;
            };
            match event.action {
                UeventAction::Remove => return Some(KernelUsbEvent::Left { busid }),
                UeventAction::Bind => return Some(KernelUsbEvent::Arrived { busid }),
                _ => {}
            }
        }
    }

    #[cfg(not(target_os = "linux"))]
    pub async fn next(&mut self) -> Option<KernelUsbEvent> {
        let never = self.never;
        match never {}
    }
}
