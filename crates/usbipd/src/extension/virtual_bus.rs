//! A host bus made of virtual devices that look like host devices: Gadget Zero functions at
//! host busids, optionally "held by a kernel driver", with scripted plug/unplug and injected
//! faults. It stands in for usbfs/IOKit in tests, in-process or in a real extension process
//! (`usbipd extension run --virtual-bus SPEC`).
//!
//! In a process, the spec file is the test's hand on the cable (edit `plugged`, the bus
//! notices) and `<spec>.kernel.json` is the "kernel": which driver holds which device, and which
//! process has it open. A holder that died holds nothing, as when the kernel closes a dead
//! process's usbfs file. It never touches real hardware.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::warn;
use usbip_proto::{errno, ExportedDevice};

use super::bus::{BusClaim, BusDevice, BusError, BusEvent, HostBus, Stage};
use crate::device::r#virtual::{gadget_zero, BusPosition, VirtualDevice};
use crate::device::{Completer, Device, DeviceSession, OpenError, Urb, UrbCompletion};

/// One virtual device on the bus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VirtualDeviceSpec {
    pub busid: String,
    #[serde(default = "default_vid")]
    pub vid: u16,
    #[serde(default = "default_pid")]
    pub pid: u16,
    #[serde(default)]
    pub serial: Option<String>,
    /// The kernel driver that binds when the device is plugged in.
    #[serde(default)]
    pub driver: Option<String>,
    #[serde(default = "yes")]
    pub plugged: bool,
    /// Claiming fails with this errno at this stage.
    #[serde(default)]
    pub fail_claim: Option<Fault>,
    /// Another program has the device open: claims fail with EBUSY.
    #[serde(default)]
    pub held_by_program: bool,
    /// The process aborts while giving the device back (a crash in the middle of an unbind).
    #[serde(default)]
    pub crash_on_release: bool,
    /// No hotplug source hears this device leave: its unplug sends no `Left`, and a claim
    /// learns of it only when its transfers fail with ENODEV (then `Departed`).
    #[serde(default)]
    pub unplug_unheard: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    pub stage: FaultStage,
    pub errno: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultStage {
    Open,
    Detach,
    Claim,
}

fn default_vid() -> u16 {
    gadget_zero::VENDOR_ID
}
fn default_pid() -> u16 {
    gadget_zero::PRODUCT_ID
}
fn yes() -> bool {
    true
}

impl VirtualDeviceSpec {
    /// A plugged Gadget Zero at `busid` without serial or kernel driver.
    pub fn new(busid: &str) -> VirtualDeviceSpec {
        VirtualDeviceSpec {
            busid: busid.into(),
            vid: default_vid(),
            pid: default_pid(),
            serial: None,
            driver: None,
            plugged: true,
            fail_claim: None,
            held_by_program: false,
            crash_on_release: false,
            unplug_unheard: false,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VirtualBusSpec {
    pub devices: Vec<VirtualDeviceSpec>,
}

impl VirtualBusSpec {
    /// Writes the spec atomically, so that a watching bus never reads half of it.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        write_atomic(path, &serde_json::to_vec_pretty(self)?)
    }

    pub fn load(path: &Path) -> std::io::Result<VirtualBusSpec> {
        serde_json::from_slice(&std::fs::read(path)?).map_err(std::io::Error::other)
    }
}

/// What the "kernel" knows of one plugged device.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KernelDevice {
    pub driver: Option<String>,
    /// The pid that has the device open exclusively.
    pub holder: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KernelState {
    pub devices: BTreeMap<String, KernelDevice>,
}

impl KernelState {
    /// The kernel file of a spec file.
    pub fn path_for(spec: &Path) -> PathBuf {
        let mut p = spec.as_os_str().to_owned();
        p.push(".kernel.json");
        PathBuf::from(p)
    }

    pub fn load(path: &Path) -> std::io::Result<KernelState> {
        serde_json::from_slice(&std::fs::read(path)?).map_err(std::io::Error::other)
    }
}

/// Through the one crash-safe write, readable by the test processes that watch it.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    crate::persist::write_atomically(path, bytes, 0o644)
}

fn alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

struct State {
    specs: BTreeMap<String, VirtualDeviceSpec>,
    kernel: KernelState,
    live: BTreeMap<String, Arc<HostLikeDevice>>,
    subscribers: Vec<mpsc::UnboundedSender<BusEvent>>,
    next_devnum: u32,
}

/// The virtual host bus.
pub struct VirtualBus {
    state: Arc<Mutex<State>>,
    kernel_file: Option<PathBuf>,
    pid: u32,
}

impl VirtualBus {
    /// An in-memory bus.
    pub fn new(spec: VirtualBusSpec) -> Arc<VirtualBus> {
        Arc::new(VirtualBus::build(spec, KernelState::default(), None))
    }

    /// A bus whose cable is the spec file at `path` (watched for changes) and whose kernel
    /// state lives in `<path>.kernel.json`, surviving the process.
    pub fn open(path: &Path) -> std::io::Result<Arc<VirtualBus>> {
        let spec = VirtualBusSpec::load(path)?;
        let kernel_file = KernelState::path_for(path);
        let mut kernel = KernelState::load(&kernel_file).unwrap_or_default();
        for k in kernel.devices.values_mut() {
            if k.holder.is_some_and(|pid| !alive(pid)) {
                k.holder = None; // the kernel closed the dead process's file
            }
        }
        let bus = Arc::new(VirtualBus::build(spec, kernel, Some(kernel_file)));
        bus.persist(&bus.lock());
        let weak = Arc::downgrade(&bus);
        let path = path.to_path_buf();
        std::thread::Builder::new()
            .name("virtual-bus-watch".into())
            .spawn(move || watch(weak, path))?;
        Ok(bus)
    }

    fn build(
        spec: VirtualBusSpec,
        kernel: KernelState,
        kernel_file: Option<PathBuf>,
    ) -> VirtualBus {
        let mut state = State {
            specs: BTreeMap::new(),
            kernel,
            live: BTreeMap::new(),
            subscribers: Vec::new(),
            next_devnum: 2,
        };
        for d in spec.devices {
            let plugged = d.plugged;
            let busid = d.busid.clone();
            state.specs.insert(busid.clone(), d);
            if plugged {
                plug_locked(&mut state, &busid, false);
            } else {
                state.kernel.devices.remove(&busid);
            }
        }
        VirtualBus {
            state: Arc::new(Mutex::new(state)),
            kernel_file,
            pid: std::process::id(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn persist(&self, state: &State) {
        if let Some(path) = &self.kernel_file {
            let bytes = serde_json::to_vec_pretty(&state.kernel).unwrap_or_default();
            if let Err(e) = write_atomic(path, &bytes) {
                warn!(error = %e, "virtual bus: kernel state not written");
            }
        }
    }

    /// Plugs in the device of `spec` (replacing the spec of that busid).
    pub fn plug(&self, spec: VirtualDeviceSpec) {
        let mut state = self.lock();
        let busid = spec.busid.clone();
        state.specs.insert(busid.clone(), spec);
        plug_locked(&mut state, &busid, true);
        self.persist(&state);
    }

    /// Pulls the cable of `busid`.
    pub fn unplug(&self, busid: &str) {
        let mut state = self.lock();
        unplug_locked(&mut state, busid);
        self.persist(&state);
    }

    /// What the kernel says about `busid` (`None`: not plugged).
    pub fn kernel(&self, busid: &str) -> Option<KernelDevice> {
        self.lock().kernel.devices.get(busid).cloned()
    }

    /// Changes the faults of a plugged device without replugging it.
    pub fn set_fault(&self, busid: &str, fault: Option<Fault>) {
        if let Some(s) = self.lock().specs.get_mut(busid) {
            s.fail_claim = fault;
        }
    }

    /// Applies a changed spec file: plugs and unplugs what differs.
    fn apply(&self, spec: VirtualBusSpec) {
        let mut state = self.lock();
        for d in spec.devices {
            let busid = d.busid.clone();
            let was = state.live.contains_key(&busid);
            let plugged = d.plugged;
            state.specs.insert(busid.clone(), d);
            match (was, plugged) {
                (false, true) => plug_locked(&mut state, &busid, true),
                (true, false) => unplug_locked(&mut state, &busid),
                _ => {}
            }
        }
        self.persist(&state);
    }
}

fn plug_locked(state: &mut State, busid: &str, notify: bool) {
    let Some(spec) = state.specs.get(busid).cloned() else {
        return;
    };
    if let Some(old) = state.live.remove(busid) {
        old.present.store(false, Ordering::SeqCst);
    }
    let devnum = state.next_devnum;
    state.next_devnum += 1;
    let busnum = busid
        .split('-')
        .next()
        .and_then(|b| b.parse().ok())
        .unwrap_or(1);
    let device = Arc::new(HostLikeDevice {
        inner: gadget_zero::new(BusPosition {
            busid: busid.to_string(),
            busnum,
            devnum,
        }),
        vid: spec.vid,
        pid: spec.pid,
        present: Arc::new(AtomicBool::new(true)),
        departed: Arc::new(Departure {
            busid: busid.to_string(),
            reported: AtomicBool::new(false),
            subscribers: std::sync::Mutex::new(Vec::new()),
        }),
    });
    // A claim of this device reports its departure (seen as ENODEV) to today's subscribers.
    if let Ok(mut subscribers) = device.departed.subscribers.lock() {
        *subscribers = state.subscribers.clone();
    }
    state.live.insert(busid.to_string(), device);
    // A device restored from the kernel file keeps its state; a new plug gets its driver.
    if notify || !state.kernel.devices.contains_key(busid) {
        state.kernel.devices.insert(
            busid.to_string(),
            KernelDevice {
                driver: spec.driver.clone(),
                holder: None,
            },
        );
    }
    if notify {
        let dev = bus_device(&spec, &state.kernel);
        state
            .subscribers
            .retain(|s| s.send(BusEvent::Arrived(dev.clone())).is_ok());
    }
}

fn unplug_locked(state: &mut State, busid: &str) {
    let mut heard = true;
    if let Some(s) = state.specs.get_mut(busid) {
        s.plugged = false;
        heard = !s.unplug_unheard;
    }
    if let Some(old) = state.live.remove(busid) {
        old.present.store(false, Ordering::SeqCst);
        state.kernel.devices.remove(busid);
        if !heard {
            return;
        }
        let busid = busid.to_string();
        state.subscribers.retain(|s| {
            s.send(BusEvent::Left {
                busid: busid.clone(),
            })
            .is_ok()
        });
    }
}

fn bus_device(spec: &VirtualDeviceSpec, kernel: &KernelState) -> BusDevice {
    BusDevice {
        busid: spec.busid.clone(),
        vid: spec.vid,
        pid: spec.pid,
        serial: spec.serial.clone(),
        driver: kernel
            .devices
            .get(&spec.busid)
            .and_then(|k| k.driver.clone()),
    }
}

/// Polls the spec file (the test's cable) until the bus is dropped.
fn watch(bus: Weak<VirtualBus>, path: PathBuf) {
    let mut last = std::fs::read(&path).unwrap_or_default();
    loop {
        std::thread::sleep(Duration::from_millis(20));
        let Some(bus) = bus.upgrade() else { return };
        let Ok(now) = std::fs::read(&path) else {
            continue;
        };
        if now != last {
            if let Ok(spec) = serde_json::from_slice::<VirtualBusSpec>(&now) {
                bus.apply(spec);
            }
            last = now;
        }
    }
}

impl HostBus for VirtualBus {
    fn kind(&self) -> &'static str {
        "virtual"
    }

    fn devices(&self) -> Vec<BusDevice> {
        let state = self.lock();
        state
            .live
            .keys()
            .filter_map(|b| state.specs.get(b))
            .map(|s| bus_device(s, &state.kernel))
            .collect()
    }

    fn claim(&self, busid: &str) -> Result<Box<dyn BusClaim>, BusError> {
        let mut state = self.lock();
        let (Some(spec), Some(device)) = (
            state.specs.get(busid).cloned(),
            state.live.get(busid).cloned(),
        ) else {
            return Err(BusError::from_errno(
                Stage::Open,
                nix::errno::Errno::ENODEV as i32,
            ));
        };
        if let Some(f) = spec.fail_claim {
            let stage = match f.stage {
                FaultStage::Open => Stage::Open,
                FaultStage::Detach => Stage::Detach,
                FaultStage::Claim => Stage::Claim,
            };
            return Err(BusError::from_errno(stage, f.errno));
        }
        let own = self.pid;
        let kernel = state.kernel.devices.entry(busid.to_string()).or_default();
        if spec.held_by_program || kernel.holder.is_some_and(|p| p != own && alive(p)) {
            return Err(BusError::from_errno(
                Stage::Claim,
                nix::errno::Errno::EBUSY as i32,
            ));
        }
        let detached = kernel.driver.take();
        kernel.holder = Some(own);
        self.persist(&state);
        Ok(Box::new(VirtualClaim {
            state: self.state.clone(),
            kernel_file: self.kernel_file.clone(),
            busid: busid.to_string(),
            device,
            detached,
            crash_on_release: spec.crash_on_release,
        }))
    }

    fn reattach(&self, busid: &str) -> Result<(), BusError> {
        let mut state = self.lock();
        let driver = state.specs.get(busid).and_then(|s| s.driver.clone());
        let Some(k) = state.kernel.devices.get_mut(busid) else {
            return Err(BusError::from_errno(
                Stage::Release,
                nix::errno::Errno::ENODEV as i32,
            ));
        };
        if k.holder.is_none() && k.driver.is_none() {
            k.driver = driver;
        }
        self.persist(&state);
        Ok(())
    }

    fn subscribe(&self) -> mpsc::UnboundedReceiver<BusEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut state = self.lock();
        for device in state.live.values() {
            if let Ok(mut subscribers) = device.departed.subscribers.lock() {
                subscribers.push(tx.clone());
            }
        }
        state.subscribers.push(tx);
        rx
    }
}

struct VirtualClaim {
    state: Arc<Mutex<State>>,
    kernel_file: Option<PathBuf>,
    busid: String,
    device: Arc<HostLikeDevice>,
    detached: Option<String>,
    crash_on_release: bool,
}

impl VirtualClaim {
    /// Closes the device; with `give_back` its kernel driver binds again.
    fn close(&self, give_back: bool) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let same = state
            .live
            .get(&self.busid)
            .is_some_and(|d| Arc::ptr_eq(d, &self.device));
        let driver = state.specs.get(&self.busid).and_then(|s| s.driver.clone());
        if let (true, Some(k)) = (same, state.kernel.devices.get_mut(&self.busid)) {
            k.holder = None;
            if give_back {
                k.driver = self.detached.clone().or(driver);
            }
        }
        if let Some(path) = &self.kernel_file {
            let bytes = serde_json::to_vec_pretty(&state.kernel).unwrap_or_default();
            let _ = write_atomic(path, &bytes);
        }
    }
}

impl BusClaim for VirtualClaim {
    fn device(&self) -> Arc<dyn Device> {
        self.device.clone()
    }

    fn detached_driver(&self) -> Option<String> {
        self.detached.clone()
    }

    fn departed(&self) -> bool {
        self.device.departed.reported.load(Ordering::SeqCst)
    }

    fn release(self: Box<Self>) -> Result<(), BusError> {
        if self.crash_on_release {
            // The injected fault: die as a crash would, with no cleanup at all.
            std::process::abort();
        }
        self.close(true);
        Ok(())
    }
}

impl Drop for VirtualClaim {
    fn drop(&mut self) {
        self.close(false);
    }
}

/// A Gadget Zero posing as a host device: it stops working the moment it is unplugged.
pub struct HostLikeDevice {
    inner: VirtualDevice<gadget_zero::GadgetZero>,
    vid: u16,
    pid: u16,
    present: Arc<AtomicBool>,
    departed: Arc<Departure>,
}

/// What a host claim does when its device's transfers fail with ENODEV after an unplug:
/// publish `Departed` once (see `UsbHostBus`).
struct Departure {
    busid: String,
    reported: AtomicBool,
    subscribers: std::sync::Mutex<Vec<mpsc::UnboundedSender<BusEvent>>>,
}

impl Departure {
    fn report(&self) {
        if self.reported.swap(true, Ordering::SeqCst) {
            return;
        }
        let subscribers = self
            .subscribers
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default();
        for s in subscribers {
            let _ = s.send(BusEvent::Departed {
                busid: self.busid.clone(),
            });
        }
    }
}

impl Device for HostLikeDevice {
    fn describe(&self) -> ExportedDevice {
        let mut d = self.inner.describe();
        d.record.id_vendor = self.vid;
        d.record.id_product = self.pid;
        d.record.path = format!("/sys/bus/usb/devices/{}", d.record.busid);
        d
    }

    fn open(&self, completer: Completer) -> Result<Box<dyn DeviceSession>, OpenError> {
        if !self.present.load(Ordering::SeqCst) {
            return Err(OpenError::Gone);
        }
        Ok(Box::new(HostLikeSession {
            inner: self.inner.open(completer.clone())?,
            completer,
            present: self.present.clone(),
            departed: self.departed.clone(),
        }))
    }
}

struct HostLikeSession {
    inner: Box<dyn DeviceSession>,
    completer: Completer,
    present: Arc<AtomicBool>,
    departed: Arc<Departure>,
}

impl DeviceSession for HostLikeSession {
    fn submit(&mut self, urb: Urb) {
        if !self.present.load(Ordering::SeqCst) {
            self.completer
                .complete(UrbCompletion::error(urb.seqnum, errno::ENODEV));
            self.departed.report();
            return;
        }
        self.inner.submit(urb);
    }

    fn cancel(&mut self, seqnum: u32) {
        self.inner.cancel(seqnum);
    }
}
