//! Who is at the other end of a Unix socket, as the Linux kernel says: SO_PEERCRED for pid, uid
//! and gid, SO_PEERGROUPS for the supplementary groups.

use std::io;
use std::os::fd::BorrowedFd;

use crate::platform::PeerCred;

/// Linux: SO_PEERCRED, the credentials of the process that connected, and SO_PEERGROUPS, its
/// supplementary groups.
pub fn peer_cred(fd: BorrowedFd<'_>) -> io::Result<PeerCred> {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    let c = getsockopt(&fd, PeerCredentials)?;
    Ok(PeerCred {
        pid: c.pid(),
        uid: c.uid(),
        gid: c.gid(),
        groups: peer_groups(fd)?,
    })
}

/// SO_PEERGROUPS (Linux 4.13): the peer's supplementary groups when it connected. The kernel
/// says how much room it needs (ERANGE) when the buffer is too small.
fn peer_groups(fd: BorrowedFd<'_>) -> io::Result<Vec<u32>> {
    use std::os::fd::AsRawFd;
    /// From asm-generic/socket.h (x86_64 and aarch64 alike); the libc crate does not export it.
    const SO_PEERGROUPS: nix::libc::c_int = 59;
    let mut groups: Vec<nix::libc::gid_t> = vec![0; 64];
    loop {
        let mut len =
            (groups.len() * std::mem::size_of::<nix::libc::gid_t>()) as nix::libc::socklen_t;
        // SAFETY: fd is a valid socket for the borrow; `groups` has room for `len` bytes.
        let rc = unsafe {
            nix::libc::getsockopt(
                fd.as_raw_fd(),
                nix::libc::SOL_SOCKET,
                SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let count = len as usize / std::mem::size_of::<nix::libc::gid_t>();
        if rc == 0 {
            groups.truncate(count);
            return Ok(groups);
        }
        let e = io::Error::last_os_error();
        // NGROUPS_MAX is 65536: a bigger demand is not a group list.
        if e.raw_os_error() != Some(nix::libc::ERANGE) || count <= groups.len() || count > 65536 {
            return Err(e);
        }
        groups.resize(count, 0);
    }
}
