//! Code signatures through the Security framework: this program's Team ID, and whether the
//! process behind a socket's audit token satisfies a code requirement. The policy is
//! `ipc::signature`.

use std::ffi::c_void;
use std::os::fd::BorrowedFd;
use std::ptr;

use core_foundation::base::{CFType, TCFType};
use core_foundation::data::CFData;
use core_foundation::dictionary::CFDictionary;
use core_foundation::string::CFString;
use core_foundation_sys::base::{CFRelease, OSStatus};
use core_foundation_sys::dictionary::CFDictionaryRef;

use super::{ffi, peer};
use crate::ipc::signature::{SignatureError, SignatureReader};

/// The Security framework as a [`SignatureReader`].
pub struct CodeSignatures;

/// A Security object we own (create rule), released on drop.
struct Owned(*mut c_void);

impl Drop for Owned {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: a reference we own, released once.
            unsafe { CFRelease(self.0 as *const c_void) }
        }
    }
}

fn status(what: &'static str, code: OSStatus) -> Result<(), SignatureError> {
    match code {
        0 => Ok(()),
        code => Err(SignatureError { what, code }),
    }
}

impl SignatureReader for CodeSignatures {
    fn own_team(&self) -> Result<Option<String>, SignatureError> {
        let mut code: ffi::SecCodeRef = ptr::null_mut();
        // SAFETY: out-param; the code object is ours to release.
        status("SecCodeCopySelf", unsafe {
            ffi::SecCodeCopySelf(ffi::kSecCSDefaultFlags, &mut code)
        })?;
        let code = Owned(code);
        // Only a signature that holds says who we are (SecCode.h: information may be partial
        // for code that was not validated).
        // SAFETY: a live code object; no requirement.
        match unsafe { ffi::SecCodeCheckValidity(code.0, ffi::kSecCSDefaultFlags, ptr::null_mut()) }
        {
            0 => {}
            ffi::errSecCSUnsigned => return Ok(None),
            code => {
                return Err(SignatureError {
                    what: "SecCodeCheckValidity(self)",
                    code,
                })
            }
        }
        let mut on_disk: ffi::SecStaticCodeRef = ptr::null_mut();
        // SAFETY: as above.
        status("SecCodeCopyStaticCode", unsafe {
            ffi::SecCodeCopyStaticCode(code.0, ffi::kSecCSDefaultFlags, &mut on_disk)
        })?;
        let on_disk = Owned(on_disk);
        let mut info: CFDictionaryRef = ptr::null();
        // SAFETY: as above; the dictionary follows the create rule.
        match unsafe {
            ffi::SecCodeCopySigningInformation(on_disk.0, ffi::kSecCSSigningInformation, &mut info)
        } {
            0 => {}
            ffi::errSecCSUnsigned => return Ok(None),
            code => {
                return Err(SignatureError {
                    what: "SecCodeCopySigningInformation",
                    code,
                })
            }
        }
        if info.is_null() {
            return Ok(None);
        }
        // SAFETY: a non-null dictionary created for us.
        let info: CFDictionary<CFType, CFType> =
            unsafe { CFDictionary::wrap_under_create_rule(info) };
        // SAFETY: a constant string of the framework (get rule).
        let key = unsafe { CFString::wrap_under_get_rule(ffi::kSecCodeInfoTeamIdentifier) };
        // Ad-hoc and unsigned code has no team entry.
        Ok(info
            .find(key.as_CFType())
            .and_then(|v| v.downcast::<CFString>())
            .map(|team| team.to_string()))
    }

    fn peer_satisfies(
        &self,
        socket: BorrowedFd<'_>,
        requirement: &str,
    ) -> Result<bool, SignatureError> {
        let token = peer::audit_token(socket).map_err(|e| SignatureError {
            what: "getsockopt(LOCAL_PEERTOKEN)",
            code: e.raw_os_error().unwrap_or(-1),
        })?;
        let bytes: Vec<u8> = token.val.iter().flat_map(|w| w.to_ne_bytes()).collect();
        // SAFETY: a constant string of the framework (get rule).
        let key = unsafe { CFString::wrap_under_get_rule(ffi::kSecGuestAttributeAudit) };
        let attributes = CFDictionary::from_CFType_pairs(&[(
            key.as_CFType(),
            CFData::from_buffer(&bytes).as_CFType(),
        )]);
        let mut guest: ffi::SecCodeRef = ptr::null_mut();
        // SAFETY: no host (the kernel is the root of trust); out-param ours to release.
        status("SecCodeCopyGuestWithAttributes", unsafe {
            ffi::SecCodeCopyGuestWithAttributes(
                ptr::null_mut(),
                attributes.as_concrete_TypeRef(),
                ffi::kSecCSDefaultFlags,
                &mut guest,
            )
        })?;
        let guest = Owned(guest);
        let text = CFString::new(requirement);
        let mut compiled: ffi::SecRequirementRef = ptr::null_mut();
        // SAFETY: out-param ours to release.
        status("SecRequirementCreateWithString", unsafe {
            ffi::SecRequirementCreateWithString(
                text.as_concrete_TypeRef(),
                ffi::kSecCSDefaultFlags,
                &mut compiled,
            )
        })?;
        let compiled = Owned(compiled);
        // SAFETY: both objects are alive for the call.
        match unsafe { ffi::SecCodeCheckValidity(guest.0, ffi::kSecCSDefaultFlags, compiled.0) } {
            0 => Ok(true),
            ffi::errSecCSReqFailed | ffi::errSecCSUnsigned => Ok(false),
            code => Err(SignatureError {
                what: "SecCodeCheckValidity",
                code,
            }),
        }
    }
}
