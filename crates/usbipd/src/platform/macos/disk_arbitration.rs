//! DiskArbitration (through objc2-disk-arbitration) as a [`VolumeUnmounter`]: the whole disks
//! on a USB device are the `IOMedia` objects below it in the I/O Registry; their volumes are
//! described, unmounted (`DADiskUnmount`, kDADiskUnmountOptionWhole) and mounted
//! (`DADiskMount`, kDADiskMountOptionWhole) by disk arbitration, whose answer (a dissenter or
//! none) arrives on this thread's run loop; the processes keeping a volume busy come from
//! libproc. The sequence that uses it is `device::host::unmount`, tested on Linux.

use std::ffi::{c_void, CString};
use std::path::Path;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use core_foundation::base::CFType;
use core_foundation::boolean::CFBoolean;
use objc2_core_foundation::{kCFRunLoopDefaultMode, CFRetained, CFRunLoop, CFString, CFURL};
use objc2_disk_arbitration::{
    kDADiskDescriptionVolumeNameKey, kDADiskDescriptionVolumePathKey, kDADiskMountOptionWhole,
    kDADiskUnmountOptionWhole, kDAReturnError, DADisk, DADissenter, DASession,
};

use super::{ffi, registry};
use crate::platform::volumes::{Disk, Dissent, Holder, Volume, VolumeUnmounter};

/// How long disk arbitration may take to answer an unmount or mount (it asks every approval
/// callback, and a file system flushes on unmount).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// DiskArbitration as a [`VolumeUnmounter`].
pub struct DiskArbitration;

fn failure(message: &str) -> Dissent {
    Dissent {
        status: kDAReturnError,
        message: Some(message.to_string()),
    }
}

/// A session scheduled on this thread's run loop, so its callbacks run while we wait.
struct Session {
    session: CFRetained<DASession>,
    run_loop: CFRetained<CFRunLoop>,
}

impl Session {
    fn new() -> Result<Session, Dissent> {
        // SAFETY: the default allocator.
        let session =
            unsafe { DASession::new(None) }.ok_or_else(|| failure("DASessionCreate failed"))?;
        let run_loop = CFRunLoop::current().ok_or_else(|| failure("no run loop"))?;
        // SAFETY: a constant of the framework.
        let mode = unsafe { kCFRunLoopDefaultMode }.ok_or_else(|| failure("no run-loop mode"))?;
        // SAFETY: both objects are alive; undone in drop.
        unsafe { session.schedule_with_run_loop(&run_loop, mode) };
        Ok(Session { session, run_loop })
    }

    fn disk(&self, bsd_name: &str) -> Result<CFRetained<DADisk>, Dissent> {
        let name = CString::new(bsd_name).map_err(|_| failure("a BSD name with a NUL"))?;
        // SAFETY: a NUL-terminated name that outlives the call.
        unsafe {
            DADisk::from_bsd_name(
                None,
                &self.session,
                NonNull::new_unchecked(name.as_ptr() as *mut _),
            )
        }
        .ok_or_else(|| failure(&format!("no disk {bsd_name}")))
    }

    /// Runs the run loop until the callback delivered its answer.
    fn wait(&self, answer: &Answer) -> Result<(), Dissent> {
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        loop {
            if let Some(result) = answer.lock().unwrap_or_else(|e| e.into_inner()).take() {
                return result;
            }
            if Instant::now() >= deadline {
                return Err(failure("disk arbitration did not answer in 30 s"));
            }
            // SAFETY: a constant of the framework.
            let mode = unsafe { kCFRunLoopDefaultMode };
            CFRunLoop::run_in_mode(mode, 0.25, true);
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // SAFETY: as scheduled in `new`; no callback of this session runs after this.
        if let Some(mode) = unsafe { kCFRunLoopDefaultMode } {
            unsafe { self.session.unschedule_from_run_loop(&self.run_loop, mode) };
        }
    }
}

/// Where a callback leaves its answer.
type Answer = Mutex<Option<Result<(), Dissent>>>;

/// The callback of `DADiskUnmount` and `DADiskMount`: no dissenter means success.
unsafe extern "C-unwind" fn answered(
    _disk: NonNull<DADisk>,
    dissenter: *const DADissenter,
    context: *mut c_void,
) {
    // SAFETY: the reference `Arc::into_raw` gave the call; consumed once, here.
    let answer = unsafe { Arc::from_raw(context as *const Answer) };
    // SAFETY: null or a dissenter alive for the callback.
    let result = match unsafe { dissenter.as_ref() } {
        None => Ok(()),
        Some(d) => Err(Dissent {
            // SAFETY: a live dissenter.
            status: unsafe { d.status() },
            message: unsafe { d.status_string() }.map(|s| s.to_string()),
        }),
    };
    *answer.lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
}

/// The context handed to a call: one reference, which the callback takes back. Should the
/// callback never come (timeout), that reference leaks, which is what keeps a late callback safe.
fn context(answer: &Arc<Answer>) -> *mut c_void {
    Arc::into_raw(answer.clone()) as *mut c_void
}

/// A volume's name and mount point, as disk arbitration describes it.
fn describe(session: &Session, bsd_name: &str) -> Volume {
    let mut volume = Volume {
        bsd_name: bsd_name.to_string(),
        name: None,
        mount_point: None,
    };
    let Ok(disk) = session.disk(bsd_name) else {
        return volume;
    };
    // SAFETY: a live disk; the description is ours.
    let Some(description) = (unsafe { disk.description() }) else {
        return volume;
    };
    // SAFETY: framework constants used as keys; the values' types are those DADisk.h gives
    // the keys (a CFURL and a CFString), alive as long as the description.
    unsafe {
        let path = description
            .value(kDADiskDescriptionVolumePathKey as *const CFString as *const c_void)
            as *const CFURL;
        volume.mount_point = path.as_ref().and_then(|url| url.to_file_path());
        let name = description
            .value(kDADiskDescriptionVolumeNameKey as *const CFString as *const c_void)
            as *const CFString;
        volume.name = name.as_ref().map(|n| n.to_string());
    }
    volume
}

impl VolumeUnmounter for DiskArbitration {
    fn disks(&self, busid: &str) -> std::io::Result<Vec<Disk>> {
        let io = |e: String| std::io::Error::other(e);
        let media = registry::services_of(c"IOMedia").map_err(|e| io(e.to_string()))?;
        let mut wholes = Vec::new();
        let mut parts = Vec::new();
        for m in &media {
            if registry::busid(m, true).as_deref() != Some(busid) {
                continue;
            }
            let Some(name) = registry::string(m, "BSD Name") else {
                continue;
            };
            let whole = registry::property(m, "Whole", false)
                .and_then(|v: CFType| v.downcast::<CFBoolean>())
                .is_some_and(bool::from);
            if whole {
                wholes.push(name);
            } else {
                parts.push(name);
            }
        }
        if wholes.is_empty() {
            return Ok(Vec::new());
        }
        let session = Session::new().map_err(|d| io(d.to_string()))?;
        Ok(wholes
            .into_iter()
            .map(|whole| {
                let prefix = format!("{whole}s");
                // A file system may sit on the whole disk itself (no partition table).
                let volumes = std::iter::once(whole.as_str())
                    .chain(
                        parts
                            .iter()
                            .filter(|p| p.starts_with(&prefix))
                            .map(String::as_str),
                    )
                    .map(|name| describe(&session, name))
                    .filter(|v| v.bsd_name != whole || v.mount_point.is_some())
                    .collect();
                Disk {
                    bsd_name: whole,
                    volumes,
                }
            })
            .collect())
    }

    fn unmount_whole(&self, disk: &str) -> Result<(), Dissent> {
        let session = Session::new()?;
        let target = session.disk(disk)?;
        let answer = Arc::new(Mutex::new(None));
        // SAFETY: a live disk; the callback takes the context's reference back.
        unsafe { target.unmount(kDADiskUnmountOptionWhole, Some(answered), context(&answer)) };
        session.wait(&answer)
    }

    fn mount_whole(&self, disk: &str) -> Result<(), Dissent> {
        let session = Session::new()?;
        let target = session.disk(disk)?;
        let answer = Arc::new(Mutex::new(None));
        // SAFETY: as above; no path: each volume goes where disk arbitration mounts it.
        unsafe {
            target.mount(
                None,
                kDADiskMountOptionWhole,
                Some(answered),
                context(&answer),
            )
        };
        session.wait(&answer)
    }

    fn holders(&self, mount_point: &Path) -> Vec<Holder> {
        let Ok(path) = CString::new(mount_point.as_os_str().as_encoded_bytes()) else {
            return Vec::new();
        };
        let mut pids = vec![0i32; 4096];
        // SAFETY: a NUL-terminated path and a buffer of the size given.
        let used = unsafe {
            ffi::proc_listpidspath(
                ffi::PROC_ALL_PIDS,
                0,
                path.as_ptr(),
                ffi::PROC_LISTPIDSPATH_PATH_IS_VOLUME | ffi::PROC_LISTPIDSPATH_EXCLUDE_EVTONLY,
                pids.as_mut_ptr() as *mut c_void,
                (pids.len() * std::mem::size_of::<i32>()) as i32,
            )
        };
        if used <= 0 {
            return Vec::new();
        }
        pids.truncate(used as usize / std::mem::size_of::<i32>());
        pids.into_iter()
            .filter(|&pid| pid > 0)
            .map(|pid| Holder {
                pid,
                name: process_name(pid),
            })
            .collect()
    }
}

/// The process's name (`proc_name`), or its pid's number when it is gone.
fn process_name(pid: i32) -> String {
    let mut buf = [0u8; 256];
    // SAFETY: a buffer of the size given.
    let n = unsafe { nix::libc::proc_name(pid, buf.as_mut_ptr() as *mut c_void, buf.len() as u32) };
    if n <= 0 {
        return format!("process {pid}");
    }
    String::from_utf8_lossy(&buf[..n as usize]).into_owned()
}
