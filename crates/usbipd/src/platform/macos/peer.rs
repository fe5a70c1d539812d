//! Who is at the other end of a Unix socket, as the kernel says: `getpeereid` for uid/gid,
//! `LOCAL_PEERCRED` for its groups, `LOCAL_PEERPID` for the pid, `LOCAL_PEERTOKEN` for the
//! audit token, which names the process image (pid and pid version) of the peer's last user of
//! the socket at the time of the query. The calls, constants and `struct xucred` come from nix
//! and libc; only `audit_token_t` is ours (`ffi`).

use std::ffi::c_void;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use nix::libc;
use nix::sys::socket::{getsockopt, sockopt::LocalPeerPid};

use super::ffi;
use crate::platform::PeerCred;

/// uid, gid, groups and (if the kernel tells) pid of the peer.
pub fn peer_cred(fd: BorrowedFd<'_>) -> io::Result<PeerCred> {
    let (uid, gid) = nix::unistd::getpeereid(fd)?;
    let pid = getsockopt(&fd, LocalPeerPid).unwrap_or(-1);
    Ok(PeerCred {
        pid,
        uid: uid.as_raw(),
        gid: gid.as_raw(),
        groups: groups(fd)?,
    })
}

/// The peer's groups from `LOCAL_PEERCRED`: at most the first 16 (macOS's `NGROUPS`), the
/// effective gid first. Read here rather than through nix's `LocalPeerCred`, whose `groups()`
/// returns all 16 slots whatever `cr_ngroups` says: the unused ones read as gid 0.
fn groups(fd: BorrowedFd<'_>) -> io::Result<Vec<u32>> {
    let mut cred = libc::xucred {
        cr_version: 0,
        cr_uid: 0,
        cr_ngroups: 0,
        cr_groups: [0; 16],
    };
    get_option(fd, libc::LOCAL_PEERCRED, &mut cred)?;
    if cred.cr_version != libc::XUCRED_VERSION {
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
    get_option(fd, libc::LOCAL_PEERTOKEN, &mut token)?;
    Ok(token)
}

/// Plain old data: every bit pattern of the type's size is a valid value (integers, and
/// `#[repr(C)]` structs and arrays of them, whose padding is never read; no pointers,
/// references, `bool`, enums or niches), so the kernel may fill one with whatever bytes an
/// option has.
///
/// # Safety
/// Implement only for types that are plain old data as above.
unsafe trait PlainOldData: Sized {}

// SAFETY: #[repr(C)] (libc), integer fields only; whatever the kernel writes into the two
// bytes of padding after `cr_ngroups` is never read as a value.
unsafe impl PlainOldData for libc::xucred {}
// SAFETY: #[repr(C)], eight u32 and nothing else (32 bytes, no padding: asserted in ffi.rs).
unsafe impl PlainOldData for ffi::audit_token_t {}

/// A `SOL_LOCAL` option whose value is exactly a `T`. Sound because `T` can only be plain old
/// data: the bytes the kernel writes, whatever they are, make a valid `T`.
fn get_option<T: PlainOldData>(fd: BorrowedFd<'_>, name: i32, value: &mut T) -> io::Result<()> {
    let size = std::mem::size_of::<T>() as libc::socklen_t;
    let mut len = size;
    // SAFETY: value is an exclusive out-param of `len` bytes, valid for the call; the kernel
    // writes at most `len` bytes, and any bytes are a valid `T` (PlainOldData).
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_LOCAL,
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
