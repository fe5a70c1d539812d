//! macOS leaves, not compiled on the Linux machines this project is built and tested on: peer
//! credentials of a Unix socket (getpeereid, LOCAL_PEERPID) and, next, the peer's code
//! signature from its audit token (LOCAL_PEERTOKEN + Security framework). The policy that
//! uses them (`ipc::peer::PeerPolicy`) is tested on Linux.
//!
//! It must stay a thin layer: FFI calls and conversions, no decisions.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use crate::ipc::socket::PeerCred;

/// `getpeereid` for uid/gid, `LOCAL_PEERPID` for the pid.
pub fn peer_cred(fd: BorrowedFd<'_>) -> io::Result<PeerCred> {
    let mut uid: nix::libc::uid_t = 0;
    let mut gid: nix::libc::gid_t = 0;
    // SAFETY: fd is a valid socket for the duration of the borrow; uid and gid are out-params.
    if unsafe { nix::libc::getpeereid(fd.as_raw_fd(), &mut uid, &mut gid) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut pid: nix::libc::pid_t = 0;
    let mut len = std::mem::size_of::<nix::libc::pid_t>() as nix::libc::socklen_t;
    // SAFETY: as above; pid is an out-param of the size given in len.
    let rc = unsafe {
        nix::libc::getsockopt(
            fd.as_raw_fd(),
            nix::libc::SOL_LOCAL,
            nix::libc::LOCAL_PEERPID,
            &mut pid as *mut nix::libc::pid_t as *mut nix::libc::c_void,
            &mut len,
        )
    };
    if rc != 0 {
        pid = -1;
    }
    Ok(PeerCred { pid, uid, gid })
}
