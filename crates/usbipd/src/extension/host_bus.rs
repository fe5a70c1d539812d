//! The extension's [`HostBus`] over the host backend (`device::host`: nusb on usbfs/IOKit):
//! list with kernel drivers from sysfs, claim (open, detach and claim every interface) and keep
//! the claim across client sessions, release so kernel drivers bind again, hotplug.
//!
//! It never opens a device except in `claim` and `reattach`, which the extension calls only for
//! bound devices.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::bus::{BusClaim, BusDevice, BusError, BusEvent, HostBus, Stage};
use crate::device::host::capture::OwnReenumerations;
use crate::device::host::{
    self, ClaimReason, ClaimedHostDevice, HostBackend, HostDeviceInfo, HostErrorKind, HotplugEvent,
};
use crate::device::Device;
use crate::ipc::{ErrorCode, OsCode};
use crate::platform::{Os, OS};

/// Where Linux shows a device's interfaces and their drivers.
pub const SYSFS_USB_DEVICES: &str = "/sys/bus/usb/devices";

/// How long a release waits for a session that is ending to give the device back.
const SESSION_RETURN: Duration = Duration::from_secs(5);

/// The same on a stop: the sessions were just ended.
const STOP_RETURN: Duration = Duration::from_millis(500);

/// After a transfer failed with `Disconnected`: how long the device may take to leave the
/// bus's list (the kernel removes it from sysfs a moment after failing its transfers), and how
/// often to look.
const DEPARTURE_CHECK: Duration = Duration::from_secs(2);
const DEPARTURE_POLL: Duration = Duration::from_millis(50);

/// The host's bus as the extension sees it.
pub struct UsbHostBus {
    /// Itself, for the departure checks its claims start.
    me: Weak<UsbHostBus>,
    backend: Arc<dyn HostBackend>,
    /// `/sys/bus/usb/devices` on Linux; `None` where drivers cannot be read.
    sysfs: Option<PathBuf>,
    kind: &'static str,
    subscribers: Mutex<Vec<mpsc::UnboundedSender<BusEvent>>>,
    /// Re-enumerations the backend makes itself (macOS capture), whose departures are not
    /// unplugs.
    own_reenumerations: Option<Arc<OwnReenumerations>>,
}

impl UsbHostBus {
    /// A bus over `backend`; `sysfs` is where interface drivers are read (Linux).
    pub fn new(
        backend: Arc<dyn HostBackend>,
        sysfs: Option<PathBuf>,
        kind: &'static str,
    ) -> Arc<UsbHostBus> {
        UsbHostBus::with_own_reenumerations(backend, sysfs, kind, None)
    }

    /// As [`Self::new`], over a backend that re-enumerates devices itself (a capturing one).
    pub fn with_own_reenumerations(
        backend: Arc<dyn HostBackend>,
        sysfs: Option<PathBuf>,
        kind: &'static str,
        own_reenumerations: Option<Arc<OwnReenumerations>>,
    ) -> Arc<UsbHostBus> {
        Arc::new_cyclic(|me| UsbHostBus {
            me: me.clone(),
            backend,
            sysfs,
            kind,
            subscribers: Mutex::new(Vec::new()),
            own_reenumerations,
        })
    }

    /// The real bus (nusb), with its hotplug watch feeding [`Self::hotplug`]. Needs a tokio
    /// runtime; blocks briefly (lists the devices). A machine without a USB bus (no
    /// `/sys/bus/usb`) gets an empty bus and a warning, not a failure: the extension still
    /// serves, and says so.
    #[cfg(host_usb)]
    pub fn system() -> Arc<UsbHostBus> {
        let (sysfs, kind) = if OS == Os::Linux {
            (Some(PathBuf::from(SYSFS_USB_DEVICES)), "usbfs")
        } else {
            (None, "iokit")
        };
        let bus = match crate::platform::device_capture() {
            // Linux: nusb on usbfs, which detaches kernel drivers interface by interface.
            None => UsbHostBus::new(Arc::new(host::NusbBackend), sysfs, kind),
            // macOS: nusb on IOKit, capturing a device from its drivers when they hold it,
            // after unmounting the volumes of a mass-storage device.
            Some(capture) => {
                let capturer =
                    host::unmount::UnmountingCapturer::new(capture.capturer, capture.volumes);
                let backend = host::capture::CapturingBackend::new(
                    Arc::new(host::NusbBackend),
                    Arc::new(capturer),
                );
                let own = backend.own_reenumerations();
                UsbHostBus::with_own_reenumerations(Arc::new(backend), sysfs, kind, Some(own))
            }
        };
        let mut watch = match host::HotplugWatch::new() {
            Ok(w) => w,
            // No source (the watch logged it): unplugs are noticed by failed transfers only.
            Err(_) => return bus,
        };
        let weak = Arc::downgrade(&bus);
        tokio::spawn(async move {
            while let Some(event) = watch.next().await {
                let Some(bus) = weak.upgrade() else { return };
                bus.hotplug(event);
            }
            warn!("host hotplug watch ended: plug and unplug are no longer followed");
        });
        bus
    }

    /// Passes a hotplug event on to the subscribers, except the departure of a device that
    /// the backend is re-enumerating itself.
    pub fn hotplug(&self, event: HotplugEvent) {
        let event = match event {
            HotplugEvent::Left { busid: Some(busid) }
                if self
                    .own_reenumerations
                    .as_ref()
                    .is_some_and(|own| own.explains(&busid)) =>
            {
                debug!(busid = %busid, "left during our own re-enumeration: not an unplug");
                return;
            }
            HotplugEvent::Arrived(info) => BusEvent::Arrived(self.bus_device(&info)),
            HotplugEvent::Left { busid: Some(busid) } => BusEvent::Left { busid },
            HotplugEvent::Left { busid: None } => {
                debug!("a device without a known busid left");
                return;
            }
        };
        self.publish(event);
    }

    fn publish(&self, event: BusEvent) {
        let mut subscribers = self.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        subscribers.retain(|s| s.send(event.clone()).is_ok());
    }

    /// The hook a claim calls when its device's transfers fail with `Disconnected`: checks (on
    /// a thread of its own, one check at a time) that the device really left the bus, then
    /// marks the claim departed and publishes [`BusEvent::Departed`].
    fn departure_hook(
        &self,
        info: &HostDeviceInfo,
        departed: Arc<AtomicBool>,
    ) -> host::claimed::OnDisconnect {
        let bus = self.me.clone();
        let checking = Arc::new(AtomicBool::new(false));
        let (busid, devnum) = (info.busid.clone(), info.devnum);
        Arc::new(move || {
            if departed.load(Ordering::SeqCst) || checking.swap(true, Ordering::SeqCst) {
                return;
            }
            let (bus, busid, departed, checking) = (
                bus.clone(),
                busid.clone(),
                departed.clone(),
                checking.clone(),
            );
            let spawned = std::thread::Builder::new()
                .name("usb-departure".into())
                .spawn(move || {
                    let Some(bus) = bus.upgrade() else { return };
                    if bus.left_the_bus(&busid, devnum) {
                        departed.store(true, Ordering::SeqCst);
                        bus.publish(BusEvent::Departed { busid });
                    } else {
                        debug!(%busid, "a transfer failed as disconnected, but the device is still there");
                        checking.store(false, Ordering::SeqCst);
                    }
                });
            if let Err(e) = spawned {
                warn!(error = %e, "departure check not started");
            }
        })
    }

    /// Whether the device `busid` with address `devnum` is gone from the bus (gone, or another
    /// device at its port), waiting up to [`DEPARTURE_CHECK`] for the OS to remove it.
    fn left_the_bus(&self, busid: &str, devnum: u32) -> bool {
        let deadline = Instant::now() + DEPARTURE_CHECK;
        loop {
            let still = match self.backend.list() {
                Ok(list) => list.iter().any(|d| d.busid == busid && d.devnum == devnum),
                Err(_) => true,
            };
            if !still {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(DEPARTURE_POLL);
        }
    }

    fn bus_device(&self, info: &HostDeviceInfo) -> BusDevice {
        BusDevice {
            busid: info.busid.clone(),
            vid: info.vendor_id,
            pid: info.product_id,
            serial: info.serial.clone(),
            driver: self
                .sysfs
                .as_deref()
                .and_then(|root| interface_driver(root, &info.busid, info.configuration_value)),
        }
    }

    fn find(&self, busid: &str) -> Result<HostDeviceInfo, BusError> {
        let listed = self.backend.list().map_err(|e| {
            let mut err = BusError::new(ErrorCode::ClaimFailed);
            err.os = e.os_code.map(os_code);
            err
        })?;
        listed
            .into_iter()
            .find(|d| d.busid == busid)
            .ok_or_else(|| BusError::new(ErrorCode::DeviceGone))
    }
}

/// The driver bound to the interfaces of `busid`'s active configuration, from the
/// `<busid>:<config>.<interface>/driver` links. A kernel driver is preferred over `usbfs`
/// (which means a program, maybe we, holds an interface).
pub fn interface_driver(sysfs: &Path, busid: &str, configuration: u8) -> Option<String> {
    let prefix = format!("{busid}:{configuration}.");
    let mut drivers: Vec<(String, String)> = std::fs::read_dir(sysfs)
        .ok()?
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            let rest = name.strip_prefix(&prefix)?;
            if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let link = std::fs::read_link(sysfs.join(&name).join("driver")).ok()?;
            let driver = link.file_name()?.to_str()?.to_string();
            Some((name, driver))
        })
        .collect();
    drivers.sort();
    drivers
        .iter()
        .find(|(_, d)| d != "usbfs")
        .or_else(|| drivers.first())
        .map(|(_, d)| d.clone())
}

fn os_code(code: u32) -> OsCode {
    if OS == Os::Macos {
        OsCode::IoReturn(code)
    } else {
        OsCode::Errno(code as i32)
    }
}

/// The stable code of a failed open or claim of the host backend, with its OS code.
pub fn claim_error(e: &host::ClaimError, stage: Stage) -> BusError {
    // On Linux the OS code is the errno of the usbfs call: classify it like every other.
    if let (true, Some(errno)) = (OS == Os::Linux, e.error.os_code) {
        if let Ok(errno) = i32::try_from(errno) {
            if errno > 0 {
                return BusError::from_errno(stage, errno);
            }
        }
    }
    let code = match (e.reason, stage) {
        (ClaimReason::Gone, _) => ErrorCode::DeviceGone,
        (_, Stage::Release) => ErrorCode::ReleaseFailed,
        (ClaimReason::PermissionDenied, _) => ErrorCode::AccessDenied,
        (ClaimReason::HeldByDriver, _) => ErrorCode::DeviceBusy,
        (ClaimReason::Other, _) => ErrorCode::ClaimFailed,
    };
    BusError {
        code,
        os: e.error.os_code.map(os_code),
    }
}

fn host_error(e: &host::HostError, stage: Stage) -> BusError {
    let reason = match e.kind {
        HostErrorKind::Disconnected | HostErrorKind::NotFound => ClaimReason::Gone,
        HostErrorKind::PermissionDenied => ClaimReason::PermissionDenied,
        HostErrorKind::Busy => ClaimReason::HeldByDriver,
        _ => ClaimReason::Other,
    };
    claim_error(
        &host::ClaimError {
            busid: String::new(),
            interface: None,
            reason,
            error: e.clone(),
        },
        stage,
    )
}

impl HostBus for UsbHostBus {
    fn kind(&self) -> &'static str {
        self.kind
    }

    fn devices(&self) -> Vec<BusDevice> {
        match self.backend.list() {
            Ok(list) => list.iter().map(|d| self.bus_device(d)).collect(),
            Err(e) => {
                warn!(error = %e, "host devices not listed");
                Vec::new()
            }
        }
    }

    fn claim(&self, busid: &str) -> Result<Box<dyn BusClaim>, BusError> {
        let info = self.find(busid)?;
        let driver = self
            .sysfs
            .as_deref()
            .and_then(|root| interface_driver(root, busid, info.configuration_value))
            .filter(|d| d != "usbfs");
        let mut ops = self
            .backend
            .open(busid)
            .map_err(|e| claim_error(&e, Stage::Open))?;
        if let Err(e) = ops.claim_interfaces() {
            // The interfaces that were claimed go back to their drivers.
            ops.release_interfaces();
            return Err(claim_error(&e, Stage::Claim));
        }
        let sysfs_dir = self.sysfs.as_ref().map(|_| PathBuf::from(&info.path));
        let departed = Arc::new(AtomicBool::new(false));
        let devnum = info.devnum;
        let device = Arc::new(ClaimedHostDevice::new(info, ops));
        device.on_disconnect(self.departure_hook(device.info(), departed.clone()));
        Ok(Box::new(HostClaim {
            device,
            detached: driver,
            sysfs_dir,
            devnum,
            departed,
        }))
    }

    fn reattach(&self, busid: &str) -> Result<(), BusError> {
        let mut ops = self
            .backend
            .open(busid)
            .map_err(|e| claim_error(&e, Stage::Release))?;
        ops.attach_kernel_drivers()
            .map_err(|e| host_error(&e, Stage::Release))
    }

    fn subscribe(&self) -> mpsc::UnboundedReceiver<BusEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.subscribers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(tx);
        rx
    }
}

/// A claimed host device.
struct HostClaim {
    device: Arc<ClaimedHostDevice>,
    detached: Option<String>,
    /// The device's sysfs directory (Linux), to tell a stop from an unplug on drop.
    sysfs_dir: Option<PathBuf>,
    /// Its address: a device at the same port with another one is another device.
    devnum: u32,
    /// Its transfers failed as disconnected and it left the bus.
    departed: Arc<AtomicBool>,
}

impl HostClaim {
    /// The claimed device is still plugged in (Linux: its sysfs directory is there with its
    /// address; where unreadable, assumed present).
    fn present(&self) -> bool {
        if self.departed.load(Ordering::SeqCst) {
            return false;
        }
        let Some(dir) = self.sysfs_dir.as_ref().filter(|d| d.exists()) else {
            return false;
        };
        match std::fs::read_to_string(dir.join("devnum")) {
            Ok(n) => n.trim().parse::<u32>().map_or(true, |n| n == self.devnum),
            Err(_) => true,
        }
    }
}

impl BusClaim for HostClaim {
    fn device(&self) -> Arc<dyn Device> {
        self.device.clone()
    }

    fn detached_driver(&self) -> Option<String> {
        self.detached.clone()
    }

    fn release(self: Box<Self>) -> Result<(), BusError> {
        let Some(mut ops) = self.device.take(SESSION_RETURN) else {
            return Err(BusError::new(ErrorCode::ReleaseFailed));
        };
        // Dropping nusb's interfaces releases them and reconnects the drivers it detached;
        // the explicit connect covers interfaces claimed after a configuration change.
        ops.release_interfaces();
        let attached = ops.attach_kernel_drivers();
        drop(ops);
        attached.map_err(|e| host_error(&e, Stage::Release))
    }

    fn departed(&self) -> bool {
        self.departed.load(Ordering::SeqCst)
    }

    fn unplugged(self: Box<Self>) {
        self.departed.store(true, Ordering::SeqCst);
    }
}

impl Drop for HostClaim {
    fn drop(&mut self) {
        // Not released (the extension stops, or the device left). A present device keeps its
        // claim until the process exits, as after a crash: its kernel driver gets it back only
        // at unbind (the next start claims it again). A gone device is simply closed.
        // (The unplug event can precede the removal of the sysfs directory by a moment: such a
        // handle is kept open too, a small leak on a rare race, never a device given back.)
        if self.present() {
            if let Some(ops) = self.device.take(STOP_RETURN) {
                std::mem::forget(ops);
            }
        }
    }
}

#[cfg(test)]
mod tests;
