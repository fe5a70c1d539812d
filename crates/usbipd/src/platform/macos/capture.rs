//! Capture of a USB device from its macOS drivers, as libusb detaches a kernel driver there: as
//! root, open the device's IOKit user client and re-enumerate it with
//! `kUSBReEnumerateCaptureDeviceMask`, after which no driver matches it; re-enumerate it plainly
//! to give it back. The sequence around it (close our handles first, wait for the device,
//! reopen, claim, give back, hotplug events of our own making) is `device::host::capture`.

use std::ffi::c_void;
use std::ptr;

use core_foundation_sys::uuid::{CFUUIDBytes, CFUUIDGetConstantUUIDWithBytes, CFUUIDRef};
use tracing::debug;

use super::ffi;
use super::registry::{self, check, Object};
use crate::platform::capturer::Capturer;
use crate::platform::os_error::{ioreturn, HostError, HostErrorKind};

/// IOKit capture as a [`Capturer`].
pub struct IoKitCapturer;

impl Capturer for IoKitCapturer {
    fn capture(&self, busid: &str) -> Result<(), HostError> {
        // Without root (or an entitlement we do not have) IOKit refuses the capture.
        if !nix::unistd::geteuid().is_root() {
            return Err(HostError {
                kind: HostErrorKind::PermissionDenied,
                message: "capturing a device from its drivers needs root".into(),
                os_code: Some(ioreturn::NOT_PRIVILEGED),
            });
        }
        with_device(busid, |device, _| {
            device.reenumerate(ffi::kUSBReEnumerateCaptureDeviceMask)
        })
    }

    fn give_back(&self, busid: &str) -> Result<(), HostError> {
        with_device(busid, |device, opened| {
            // libusb's way (a plain re-enumeration) needs the device open; the release bit
            // does not, where something else has it open.
            let options = if opened {
                0
            } else {
                ffi::kUSBReEnumerateReleaseDeviceMask
            };
            device.reenumerate(options)
        })
    }

    fn reset(&self, busid: &str) -> Result<(), HostError> {
        with_device(busid, |device, opened| {
            if !opened {
                return Err(HostError {
                    kind: HostErrorKind::Busy,
                    message: "the device is open elsewhere: not reset".into(),
                    os_code: Some(ioreturn::EXCLUSIVE_ACCESS),
                });
            }
            device.reset()
        })
    }
}

/// Runs `f` on the device that has `busid`, opened if possible (`true`): a driver that holds
/// it may refuse the open (exclusive access), which a capture or release does not need.
fn with_device(
    busid: &str,
    f: impl FnOnce(&DeviceInterface, bool) -> Result<(), HostError>,
) -> Result<(), HostError> {
    let service = find_service(busid)?;
    let device = DeviceInterface::new(&service)?;
    let opened = match device.open_seize() {
        Ok(()) => true,
        Err(e) if e.os_code == Some(ioreturn::EXCLUSIVE_ACCESS) => false,
        Err(e) => return Err(e),
    };
    let result = f(&device, opened);
    if opened {
        device.close();
    }
    result
}

/// The USB device service whose location id gives `busid`.
fn find_service(busid: &str) -> Result<Object, HostError> {
    // kIOUSBDeviceClassName (IOUSBLib.h).
    registry::services_of(c"IOUSBDevice")?
        .into_iter()
        .find(|service| registry::busid(service, false).as_deref() == Some(busid))
        .ok_or_else(|| {
            HostError::new(
                HostErrorKind::NotFound,
                format!("no USB device has busid {busid}"),
            )
        })
}

fn uuid(bytes: &[u8; 16]) -> CFUUIDRef {
    let b = bytes;
    // SAFETY: returns a constant UUID object that is never released.
    unsafe {
        CFUUIDGetConstantUUIDWithBytes(
            ptr::null(),
            b[0],
            b[1],
            b[2],
            b[3],
            b[4],
            b[5],
            b[6],
            b[7],
            b[8],
            b[9],
            b[10],
            b[11],
            b[12],
            b[13],
            b[14],
            b[15],
        )
    }
}

fn uuid_bytes(b: &[u8; 16]) -> CFUUIDBytes {
    CFUUIDBytes {
        byte0: b[0],
        byte1: b[1],
        byte2: b[2],
        byte3: b[3],
        byte4: b[4],
        byte5: b[5],
        byte6: b[6],
        byte7: b[7],
        byte8: b[8],
        byte9: b[9],
        byte10: b[10],
        byte11: b[11],
        byte12: b[12],
        byte13: b[13],
        byte14: b[14],
        byte15: b[15],
    }
}

/// The device's IOUSBDeviceInterface650 (a COM object we hold one reference to).
struct DeviceInterface(*mut *mut ffi::IOUSBDeviceInterface);

impl DeviceInterface {
    fn new(service: &Object) -> Result<DeviceInterface, HostError> {
        let mut plugin: *mut *mut ffi::IOCFPlugInInterface = ptr::null_mut();
        let mut score = 0i32;
        // IOKit answers kIOReturnNoResources now and then while a device settles; libusb
        // retries too.
        let mut attempts = 0;
        loop {
            // SAFETY: a valid service; out-params.
            let code = unsafe {
                ffi::IOCreatePlugInInterfaceForService(
                    service.0,
                    uuid(&ffi::kIOUSBDeviceUserClientTypeID),
                    uuid(&ffi::kIOCFPlugInInterfaceID),
                    &mut plugin,
                    &mut score,
                )
            };
            attempts += 1;
            if code as u32 != ioreturn::NO_RESOURCES || attempts == 5 {
                check("IOCreatePlugInInterfaceForService", code)?;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        if plugin.is_null() {
            return Err(HostError::new(
                HostErrorKind::Other,
                "no IOKit plug-in for the device",
            ));
        }
        let mut device: *mut c_void = ptr::null_mut();
        // SAFETY: `plugin` is a live COM object; QueryInterface gives a referenced interface.
        // The plug-in is released, not destroyed (IODestroyPlugInInterface would stop the
        // device's services).
        let result = unsafe {
            let query = ((**plugin).QueryInterface)(
                plugin as *mut c_void,
                uuid_bytes(&ffi::kIOUSBDeviceInterfaceID650),
                &mut device,
            );
            ((**plugin).Release)(plugin as *mut c_void);
            query
        };
        if result != 0 || device.is_null() {
            return Err(HostError::new(
                HostErrorKind::Other,
                format!("QueryInterface(IOUSBDeviceInterface650) failed: {result:#x}"),
            ));
        }
        Ok(DeviceInterface(
            device as *mut *mut ffi::IOUSBDeviceInterface,
        ))
    }

    fn vtable(&self) -> &ffi::IOUSBDeviceInterface {
        // SAFETY: a live interface (we hold a reference until drop).
        unsafe { &**self.0 }
    }

    fn this(&self) -> *mut c_void {
        self.0 as *mut c_void
    }

    /// Opens the device, asking a kernel client that has it open to let go (as libusb does).
    fn open_seize(&self) -> Result<(), HostError> {
        // SAFETY: a live interface.
        check("USBDeviceOpenSeize", unsafe {
            (self.vtable().USBDeviceOpenSeize)(self.this())
        })
    }

    fn reset(&self) -> Result<(), HostError> {
        // SAFETY: a live, open interface.
        check("ResetDevice", unsafe {
            (self.vtable().ResetDevice)(self.this())
        })
    }

    fn reenumerate(&self, options: u32) -> Result<(), HostError> {
        // SAFETY: a live, open interface.
        check("USBDeviceReEnumerate", unsafe {
            (self.vtable().USBDeviceReEnumerate)(self.this(), options)
        })
    }

    fn close(&self) {
        // SAFETY: a live interface. After a re-enumeration the device may be gone already.
        let code = unsafe { (self.vtable().USBDeviceClose)(self.this()) };
        if code != ffi::kIOReturnSuccess {
            debug!(
                code = format_args!("{:#010x}", code as u32),
                "USBDeviceClose"
            );
        }
    }
}

impl Drop for DeviceInterface {
    fn drop(&mut self) {
        // SAFETY: releases the one reference QueryInterface gave us.
        unsafe { (self.vtable().Release)(self.this()) };
    }
}
