//! Peer authentication of IPC connections: who is at the other end (kernel credentials), and
//! whether that peer may talk to the extension (root, the extension's own user, or the
//! configured daemon user or group; on macOS, when the extension is signed, also signed by the
//! same team: see `signature`).
//!
//! It never trusts anything the peer says about itself; only what the kernel reports.

use super::signature::SignaturePolicy;
use crate::platform::PeerCred;

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
