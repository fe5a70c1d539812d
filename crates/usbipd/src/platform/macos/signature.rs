//! Code signatures through the Security framework: this program's Team ID, and whether the
//! process behind a socket's audit token satisfies a code requirement. The guest lookup by
//! audit token, the requirement and the validity checks are security-framework's
//! (`os::macos::code_signing`); only the signing-information call that reads the Team ID,
//! which it lacks, is declared in `ffi` from SecCode.h. The policy is `ipc::signature`.

use std::os::fd::BorrowedFd;
use std::ptr;
use std::str::FromStr;

use core_foundation::base::{CFType, TCFType};
use core_foundation::data::CFData;
use core_foundation::dictionary::CFDictionary;
use core_foundation::string::CFString;
use core_foundation_sys::dictionary::CFDictionaryRef;
use security_framework::os::macos::code_signing::{
    Flags, GuestAttributes, SecCode, SecRequirement,
};

use super::{ffi, peer};
use crate::platform::signatures::{SignatureError, SignatureReader};

/// The Security framework as a [`SignatureReader`].
pub struct CodeSignatures;

fn error(what: &'static str) -> impl Fn(security_framework::base::Error) -> SignatureError {
    move |e| SignatureError {
        what,
        code: e.code(),
    }
}

/// The requirement every validly signed code satisfies (the requirement language's `always`):
/// checking against it checks the signature alone.
fn any_signature() -> Result<SecRequirement, SignatureError> {
    SecRequirement::from_str("always").map_err(error("SecRequirementCreateWithString"))
}

impl SignatureReader for CodeSignatures {
    fn own_team(&self) -> Result<Option<String>, SignatureError> {
        let code = SecCode::for_self(Flags::NONE).map_err(error("SecCodeCopySelf"))?;
        // Only a signature that holds says who we are (SecCode.h: information may be partial
        // for code that was not validated).
        match code.check_validity(Flags::NONE, &any_signature()?) {
            Ok(()) => {}
            Err(e) if e.code() == ffi::errSecCSUnsigned => return Ok(None),
            Err(e) => return Err(error("SecCodeCheckValidity(self)")(e)),
        }
        let mut on_disk: ffi::SecStaticCodeRef = ptr::null_mut();
        // SAFETY: a live code object; out-param, ours to release.
        let status = unsafe {
            ffi::SecCodeCopyStaticCode(
                code.as_concrete_TypeRef() as ffi::SecCodeRef,
                ffi::kSecCSDefaultFlags,
                &mut on_disk,
            )
        };
        if status != 0 {
            return Err(SignatureError {
                what: "SecCodeCopyStaticCode",
                code: status,
            });
        }
        // SAFETY: a SecStaticCode created for us (create rule); released with the CFType.
        let on_disk = unsafe { CFType::wrap_under_create_rule(on_disk as _) };
        let mut info: CFDictionaryRef = ptr::null();
        // SAFETY: as above; the dictionary follows the create rule.
        match unsafe {
            ffi::SecCodeCopySigningInformation(
                on_disk.as_CFTypeRef() as ffi::SecStaticCodeRef,
                ffi::kSecCSSigningInformation,
                &mut info,
            )
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
        let token = CFData::from_buffer(&bytes);
        let mut attributes = GuestAttributes::new();
        attributes.set_audit_token(token.as_concrete_TypeRef());
        // No host: the kernel is the root of trust.
        let guest = SecCode::copy_guest_with_attribues(None, &attributes, Flags::NONE)
            .map_err(error("SecCodeCopyGuestWithAttributes"))?;
        let requirement = SecRequirement::from_str(requirement)
            .map_err(error("SecRequirementCreateWithString"))?;
        match guest.check_validity(Flags::NONE, &requirement) {
            Ok(()) => Ok(true),
            Err(e) if matches!(e.code(), ffi::errSecCSReqFailed | ffi::errSecCSUnsigned) => {
                Ok(false)
            }
            Err(e) => Err(error("SecCodeCheckValidity")(e)),
        }
    }
}
