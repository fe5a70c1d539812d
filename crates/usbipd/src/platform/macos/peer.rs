//! Who is at the other end of a Unix socket, as the kernel says: `getpeereid` for uid/gid,
//! `LOCAL_PEERCRED` for its groups, `LOCAL_PEERPID` for the pid, `LOCAL_PEERTOKEN` for the audit token, which names the process
//! image (pid and pid version) of the peer's last user of the socket at the time of the query.

use std::ffi::c_void;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use super::ffi;
use crate::ipc::socket::PeerCred;

/// uid, gid, groups and (if the kernel tells) pid of the peer.
pub fn peer_cred(fd: BorrowedFd<'_>) -> io::Result<PeerCred> {
    let (mut uid, mut gid) = (0u32, 0u32);
    // SAFETY: fd is a valid socket for the duration of the borrow; uid and gid are out-params.
    if unsafe { ffi::getpeereid(fd.as_raw_fd(), &mut uid, &mut gid) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut pid: i32 = -1;
    if get_option(fd, ffi::LOCAL_PEERPID, &mut pid).is_err() {
        pid = -1;
    }
    Ok(PeerCred {
        pid,
        uid,
        gid,
        groups: groups(fd)?,
    })
}

/// The peer's groups from `LOCAL_PEERCRED`: at most the first 16 (macOS's `NGROUPS`), the
/// effective gid first.
fn groups(fd: BorrowedFd<'_>) -> io::Result<Vec<u32>> {
    let mut cred = ffi::xucred::default();
    get_option(fd, ffi::LOCAL_PEERCRED, &mut cred)?;
    if cred.cr_version != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("LOCAL_PEERCRED: xucred version {}", cred.cr_version),
        ));
    }
    let n = usize::try_from(cred.cr_ngroups)
        .unwrap_or(0)
        .min(cred.cr_groups.len());
    Ok(cred.cr_groups[..n].to_vec())
}

/// The audit token of the peer.
pub fn audit_token(fd: BorrowedFd<'_>) -> io::Result<ffi::audit_token_t> {
    let mut token = ffi::audit_token_t::default();
    get_option(fd, ffi::LOCAL_PEERTOKEN, &mut token)?;
    Ok(token)
}

/// Plain old data: every bit pattern of the type's size is a valid value (integers, and
/// `#[repr(C)]` structs and arrays of them without padding; no pointers, references, `bool`,
/// enums or niches), so the kernel may fill one with whatever bytes an option has.
///
/// # Safety
/// Implement only for types that are plain old data as above.
unsafe trait PlainOldData: Sized {}

// SAFETY: any 4 bytes are an i32.
unsafe impl PlainOldData for i32 {}
// SAFETY: #[repr(C)], integer fields only, the C padding named as a field (76 bytes: asserted
// in ffi.rs).
unsafe impl PlainOldData for ffi::xucred {}
// SAFETY: #[repr(C)], eight u32 and nothing else (32 bytes, no padding: asserted in ffi.rs).
unsafe impl PlainOldData for ffi::audit_token_t {}

/// A `SOL_LOCAL` option whose value is exactly a `T`. Sound because `T` can only be plain old
/// data: the bytes the kernel writes, whatever they are, make a valid `T`.
fn get_option<T: PlainOldData>(fd: BorrowedFd<'_>, name: i32, value: &mut T) -> io::Result<()> {
    let size = std::mem::size_of::<T>() as u32;
    let mut len = size;
    // SAFETY: value is an exclusive out-param of `len` bytes, valid for the call; the kernel
    // writes at most `len` bytes, and any bytes are a valid `T` (PlainOldData).
    let rc = unsafe {
        ffi::getsockopt(
            fd.as_raw_fd(),
            ffi::SOL_LOCAL,
            name,
            value as *mut T as *mut c_void,
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if len != size {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("socket option {name:#x}: {len} bytes, expected {size}"),
        ));
    }
    Ok(())
}
