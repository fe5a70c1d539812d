//! Peer authentication of IPC connections: who is at the other end (kernel credentials), and
//! whether that peer may talk to the extension (root, the extension's own user, or the
//! configured daemon user or group; on macOS, when the extension is signed, also signed by the
//! same team: see `signature`).
//!
//! It never trusts anything the peer says about itself; only what the kernel reports.

#[cfg(target_os = "linux")]
use std::io;
#[cfg(target_os = "linux")]
use std::os::fd::BorrowedFd;

use super::signature::SignaturePolicy;
use super::socket::PeerCred;

/// Linux: SO_PEERCRED, the credentials of the process that connected, and SO_PEERGROUPS, its
/// supplementary groups.
#[cfg(target_os = "linux")]
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
#[cfg(target_os = "linux")]
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

#[cfg(target_os = "macos")]
pub use crate::platform::macos::peer_cred;

/// Who may use the extension. Root always passes the uid/gid check: root can do everything
/// the extension can anyway. The signature check, where there is one, applies to every peer.
#[derive(Debug, Clone, Default)]
pub struct PeerPolicy {
    pub uids: Vec<u32>,
    pub gids: Vec<u32>,
    pub signature: SignaturePolicy,
}

impl PeerPolicy {
    /// Root, the extension's own user, and `uids`/`gids` (the daemon's user or group).
    pub fn with_self(mut uids: Vec<u32>, gids: Vec<u32>) -> PeerPolicy {
        uids.push(nix::unistd::geteuid().as_raw());
        PeerPolicy {
            uids,
            gids,
            signature: SignaturePolicy::NotChecked,
        }
    }

    pub fn permits(&self, peer: &PeerCred) -> bool {
        peer.uid == 0
            || self.uids.contains(&peer.uid)
            || self.gids.contains(&peer.gid)
            || peer.groups.iter().any(|g| self.gids.contains(g))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cred(uid: u32, gid: u32) -> PeerCred {
        PeerCred {
            pid: 1,
            uid,
            gid,
            groups: vec![],
        }
    }

    #[test]
    fn root_configured_user_and_group_only() {
        let p = PeerPolicy {
            uids: vec![1000],
            gids: vec![977],
            ..PeerPolicy::default()
        };
        assert!(p.permits(&cred(0, 0)));
        assert!(p.permits(&cred(1000, 1000)));
        assert!(p.permits(&cred(1234, 977)));
        assert!(!p.permits(&cred(1234, 1234)));
        assert!(!PeerPolicy::default().permits(&cred(1000, 1000)));
        // A supplementary group counts as much as the primary one.
        let member = PeerCred {
            groups: vec![100, 977],
            ..cred(1234, 1234)
        };
        assert!(p.permits(&member));
        let other = PeerCred {
            groups: vec![100],
            ..cred(1234, 1234)
        };
        assert!(!p.permits(&other));
    }
}
