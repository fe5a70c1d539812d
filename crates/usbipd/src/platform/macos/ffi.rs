//! The C declarations the macOS leaves call, in one place: what maintained crates declare is
//! re-exported from them (IOKitLib.h from io-kit-sys; Core Foundation from core-foundation-sys;
//! the socket calls of `peer` come from nix and libc), and the rest is written from Apple's SDK
//! header named beside it, to compare with that header: IOKit's plug-in and USB user-client
//! interface (IOCFPlugIn.h, IOUSBLib.h, USB.h), the two Security calls that read the Team ID
//! (security-framework lacks them; the rest of code signing is its `code_signing` module), and
//! libproc's `proc_listpidspath` (libproc.h). DiskArbitration comes from objc2-disk-arbitration.

#![allow(non_snake_case, non_upper_case_globals, non_camel_case_types)]
#![allow(clippy::upper_case_acronyms)] // the SDK's names, to compare with its headers

use std::ffi::c_void;

use core_foundation_sys::base::OSStatus;
use core_foundation_sys::dictionary::CFDictionaryRef;
use core_foundation_sys::string::CFStringRef;
use core_foundation_sys::uuid::{CFUUIDBytes, CFUUIDRef};

// ---- mach/message.h -------------------------------------------------------------------------
// (The socket calls, `getpeereid`, `LOCAL_PEER*` and `struct xucred` come from nix and libc.)

/// `audit_token_t` (mach/message.h; libc does not declare it): eight 32-bit words naming one
/// process image (pid and its version).
#[repr(C)]
#[derive(Default)]
pub struct audit_token_t {
    pub val: [u32; 8],
}

// ---- IOKit: IOKitLib.h and IOReturn.h from io-kit-sys ----------------------------------------

pub use io_kit_sys::keys::kIOServicePlane;
pub use io_kit_sys::ret::{kIOReturnSuccess, IOReturn};
pub use io_kit_sys::types::{io_iterator_t, io_object_t, io_service_t};
pub use io_kit_sys::{
    kIORegistryIterateParents, kIORegistryIterateRecursively, IOIteratorNext, IOObjectRelease,
    IORegistryEntryCreateCFProperty, IORegistryEntrySearchCFProperty, IOServiceGetMatchingServices,
    IOServiceMatching,
};

/// mach/port.h (what io-kit-sys's `IOServiceGetMatchingServices` takes).
pub type mach_port_t = io_object_t;
/// mach/kern_return.h
pub type kern_return_t = IOReturn;

// ---- IOKit: IOCFPlugIn.h, IOUSBLib.h, USB.h (no maintained binding declares them) ----------
/// CFPlugInCOM.h
pub type HRESULT = i32;
pub type ULONG = u32;

/// `kIOMainPortDefault` (IOKitLib.h): MACH_PORT_NULL, which asks for the default main port.
pub const MAIN_PORT_DEFAULT: mach_port_t = 0;

/// USB.h: re-enumerate the device captured: no driver matches it until it is re-enumerated
/// again without this bit. Needs root (or the com.apple.vm.device-access entitlement); with it
/// (and with the release bit) the device need not be open (IOUSBLib.h). It does not take
/// mass-storage interfaces from their driver (USB.h).
pub const kUSBReEnumerateCaptureDeviceMask: u32 = 1 << 30;
/// USB.h: re-enumerate a captured device released, so its drivers match it again.
pub const kUSBReEnumerateReleaseDeviceMask: u32 = 1 << 29;

/// `kIOUSBDeviceUserClientTypeID` 9DC7B780-9EC0-11D4-A54F-000A27052861.
pub const kIOUSBDeviceUserClientTypeID: [u8; 16] = [
    0x9d, 0xc7, 0xb7, 0x80, 0x9e, 0xc0, 0x11, 0xd4, 0xa5, 0x4f, 0x00, 0x0a, 0x27, 0x05, 0x28, 0x61,
];
/// `kIOCFPlugInInterfaceID` C244E858-109C-11D4-91D4-0050E4C6426F.
pub const kIOCFPlugInInterfaceID: [u8; 16] = [
    0xc2, 0x44, 0xe8, 0x58, 0x10, 0x9c, 0x11, 0xd4, 0x91, 0xd4, 0x00, 0x50, 0xe4, 0xc6, 0x42, 0x6f,
];
/// `kIOUSBDeviceInterfaceID650` 4AAC1B2E-24C2-476A-964D-91333534F2CC (what nusb and libusb use).
pub const kIOUSBDeviceInterfaceID650: [u8; 16] = [
    0x4a, 0xac, 0x1b, 0x2e, 0x24, 0xc2, 0x47, 0x6a, 0x96, 0x4d, 0x91, 0x33, 0x35, 0x34, 0xf2, 0xcc,
];

#[link(name = "IOKit", kind = "framework")]
unsafe extern "C" {
    /// IOCFPlugIn.h
    pub fn IOCreatePlugInInterfaceForService(
        service: io_service_t,
        plugin_type: CFUUIDRef,
        interface_type: CFUUIDRef,
        the_interface: *mut *mut *mut IOCFPlugInInterface,
        the_score: *mut i32,
    ) -> kern_return_t;
}

/// `IOCFPlugInInterface` up to `Release` (IUNKNOWN_C_GUTS); nothing after it is used.
#[repr(C)]
pub struct IOCFPlugInInterface {
    _reserved: *mut c_void,
    pub QueryInterface:
        unsafe extern "C" fn(this: *mut c_void, iid: CFUUIDBytes, ppv: *mut *mut c_void) -> HRESULT,
    pub AddRef: unsafe extern "C" fn(this: *mut c_void) -> ULONG,
    pub Release: unsafe extern "C" fn(this: *mut c_void) -> ULONG,
}

/// `IOUSBDeviceInterface` (the same slots in every version from 187 to 650) up to
/// `USBDeviceReEnumerate`, slot 37; the slots not used here are left opaque.
#[repr(C)]
pub struct IOUSBDeviceInterface {
    _reserved: *mut c_void,
    pub QueryInterface:
        unsafe extern "C" fn(this: *mut c_void, iid: CFUUIDBytes, ppv: *mut *mut c_void) -> HRESULT,
    pub AddRef: unsafe extern "C" fn(this: *mut c_void) -> ULONG,
    pub Release: unsafe extern "C" fn(this: *mut c_void) -> ULONG,
    /// Create/GetDeviceAsyncEventSource, Create/GetDeviceAsyncPort.
    _slots_4_to_7: [*const c_void; 4],
    /// Slot 8.
    pub USBDeviceOpen: unsafe extern "C" fn(this: *mut c_void) -> IOReturn,
    /// Slot 9.
    pub USBDeviceClose: unsafe extern "C" fn(this: *mut c_void) -> IOReturn,
    /// GetDeviceClass .. GetBusFrameNumber.
    _slots_10_to_24: [*const c_void; 15],
    /// Slot 25: a port reset that keeps a capture (a plain re-enumeration loses it).
    pub ResetDevice: unsafe extern "C" fn(this: *mut c_void) -> IOReturn,
    /// DeviceRequest, DeviceRequestAsync, CreateInterfaceIterator.
    _slots_26_to_28: [*const c_void; 3],
    /// Slot 29: open, asking a kernel client that has the device open to give it up.
    pub USBDeviceOpenSeize: unsafe extern "C" fn(this: *mut c_void) -> IOReturn,
    /// DeviceRequestTO .. USBGetSerialNumberStringIndex.
    _slots_30_to_36: [*const c_void; 7],
    /// Slot 37.
    pub USBDeviceReEnumerate: unsafe extern "C" fn(this: *mut c_void, options: u32) -> IOReturn,
}

// The slots this layout depends on, checked wherever it compiles (the Apple type-check too).
const SLOT: usize = std::mem::size_of::<*const c_void>();
const _: () = {
    use std::mem::offset_of;
    assert!(offset_of!(IOUSBDeviceInterface, USBDeviceOpen) == 8 * SLOT);
    assert!(offset_of!(IOUSBDeviceInterface, USBDeviceClose) == 9 * SLOT);
    assert!(offset_of!(IOUSBDeviceInterface, ResetDevice) == 25 * SLOT);
    assert!(offset_of!(IOUSBDeviceInterface, USBDeviceOpenSeize) == 29 * SLOT);
    assert!(offset_of!(IOUSBDeviceInterface, USBDeviceReEnumerate) == 37 * SLOT);
    assert!(offset_of!(IOCFPlugInInterface, Release) == 3 * SLOT);
    assert!(std::mem::size_of::<audit_token_t>() == 32);
    assert!(std::mem::size_of::<CFUUIDBytes>() == 16);
};

// ---- libproc.h, sys/proc_info.h (libc declares neither) ----------------------------------

/// `PROC_ALL_PIDS` (sys/proc_info.h).
pub const PROC_ALL_PIDS: u32 = 1;
/// `PROC_LISTPIDSPATH_PATH_IS_VOLUME` (sys/proc_info.h): every process with a file open on the
/// volume that `path` is on.
pub const PROC_LISTPIDSPATH_PATH_IS_VOLUME: u32 = 1;
/// `PROC_LISTPIDSPATH_EXCLUDE_EVTONLY` (sys/proc_info.h): not those that only watch it.
pub const PROC_LISTPIDSPATH_EXCLUDE_EVTONLY: u32 = 2;

unsafe extern "C" {
    /// libproc.h: fills `buffer` with pids, returns the bytes used (or -1).
    pub fn proc_listpidspath(
        kind: u32,
        typeinfo: u32,
        path: *const std::ffi::c_char,
        pathflags: u32,
        buffer: *mut c_void,
        buffersize: i32,
    ) -> i32;
}

// ---- Security: SecCode.h, CSCommon.h (what security-framework does not declare) ------------
// SecCode, SecRequirement, guest lookup and validity checks come from security-framework.

pub type SecCodeRef = *mut c_void;
pub type SecStaticCodeRef = *mut c_void;

pub const kSecCSDefaultFlags: u32 = 0;
/// Ask SecCodeCopySigningInformation for the signing certificates and team.
pub const kSecCSSigningInformation: u32 = 1 << 1;
/// The code is not signed.
pub const errSecCSUnsigned: OSStatus = -67062;
/// The code does not satisfy the requirement.
pub const errSecCSReqFailed: OSStatus = -67050;

#[link(name = "Security", kind = "framework")]
unsafe extern "C" {
    pub static kSecCodeInfoTeamIdentifier: CFStringRef;
    pub fn SecCodeCopyStaticCode(
        code: SecCodeRef,
        flags: u32,
        static_code: *mut SecStaticCodeRef,
    ) -> OSStatus;
    pub fn SecCodeCopySigningInformation(
        code: SecStaticCodeRef,
        flags: u32,
        information: *mut CFDictionaryRef,
    ) -> OSStatus;
}
