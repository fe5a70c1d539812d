//! The I/O Registry as the macOS leaves read it (IOKitLib.h through io-kit-sys): services of a
//! class, their properties, and a property looked up through a service's ancestors. Shared by
//! `capture` (the USB device of a busid) and `disk_arbitration` (the disks on that device).

use std::ffi::CStr;

use core_foundation::base::{CFType, TCFType};
use core_foundation::number::CFNumber;
use core_foundation::string::CFString;
use core_foundation_sys::base::kCFAllocatorDefault;
use core_foundation_sys::dictionary::CFDictionaryRef;

use super::ffi;
use crate::platform::busid::macos_busid;
use crate::platform::os_error::{ioreturn, HostError, HostErrorKind};

/// An I/O Registry object we hold a reference to.
pub struct Object(pub ffi::io_object_t);

impl Drop for Object {
    fn drop(&mut self) {
        // SAFETY: a reference we own, released once.
        unsafe { ffi::IOObjectRelease(self.0) };
    }
}

pub fn check(what: &str, code: ffi::IOReturn) -> Result<(), HostError> {
    if code == ffi::kIOReturnSuccess {
        return Ok(());
    }
    let code = code as u32;
    Err(HostError {
        kind: ioreturn::kind(code),
        message: format!("{what} failed"),
        os_code: Some(code),
    })
}

/// Every registered service of an IOKit class (`IOUSBHostDevice`, `IOMedia`).
pub fn services_of(class: &CStr) -> Result<Vec<Object>, HostError> {
    // SAFETY: a NUL-terminated class name; the dictionary is consumed by the next call.
    let matching = unsafe { ffi::IOServiceMatching(class.as_ptr()) };
    if matching.is_null() {
        return Err(HostError::new(
            HostErrorKind::Other,
            "IOServiceMatching failed",
        ));
    }
    let mut iterator: ffi::io_iterator_t = 0;
    // SAFETY: out-param; `matching` is handed over.
    check("IOServiceGetMatchingServices", unsafe {
        ffi::IOServiceGetMatchingServices(
            ffi::MAIN_PORT_DEFAULT,
            matching as CFDictionaryRef,
            &mut iterator,
        )
    })?;
    let iterator = Object(iterator);
    let mut out = Vec::new();
    loop {
        // SAFETY: a valid iterator; 0 ends it.
        let next = unsafe { ffi::IOIteratorNext(iterator.0) };
        if next == 0 {
            return Ok(out);
        }
        out.push(Object(next));
    }
}

/// A property of the service itself, or with `ancestors` the nearest one up the service plane.
pub fn property(service: &Object, key: &str, ancestors: bool) -> Option<CFType> {
    let key = CFString::new(key);
    // SAFETY: a valid registry entry, key and plane name; the result follows the create rule.
    let value = unsafe {
        if ancestors {
            ffi::IORegistryEntrySearchCFProperty(
                service.0,
                ffi::kIOServicePlane,
                key.as_concrete_TypeRef(),
                kCFAllocatorDefault,
                ffi::kIORegistryIterateRecursively | ffi::kIORegistryIterateParents,
            )
        } else {
            ffi::IORegistryEntryCreateCFProperty(
                service.0,
                key.as_concrete_TypeRef(),
                kCFAllocatorDefault,
                0,
            )
        }
    };
    if value.is_null() {
        return None;
    }
    // SAFETY: non-null, created for us.
    Some(unsafe { CFType::wrap_under_create_rule(value) })
}

/// The busid of the USB device `service` is (or, with `ancestors`, sits on): from its
/// `locationID`, an SInt32 in the registry whose bits are kept.
pub fn busid(service: &Object, ancestors: bool) -> Option<String> {
    let id = property(service, "locationID", ancestors)?
        .downcast::<CFNumber>()?
        .to_i64()?;
    macos_busid(id as u32)
}

/// A string property of the service.
pub fn string(service: &Object, key: &str) -> Option<String> {
    Some(
        property(service, key, false)?
            .downcast::<CFString>()?
            .to_string(),
    )
}
