//! The client's pinned server keys (`known_servers.json` in its state directory, 0600), as
//! SSH's known_hosts: the first connection to an address records the key it presented (trust
//! on first use, fingerprint shown), or `--fingerprint` pins it up front; from then on a
//! different key is refused, showing the old and the new fingerprint.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::identity::Fingerprint;
use super::trust::now;
use crate::persist::versioned::{self, FileError, Versioned};

pub const FILE: &str = "known_servers.json";

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Known {
    version: u32,
    servers: Vec<KnownServer>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KnownServer {
    /// `HOST:PORT` as the user gave it.
    address: String,
    fingerprint: Fingerprint,
    added: u64,
}

impl Versioned for Known {
    const VERSION: u32 = 1;
    const WHAT: &'static str = "known server list";
    fn version(&self) -> u32 {
        self.version
    }
    fn set_version(&mut self, version: u32) {
        self.version = version;
    }
}

/// What the client expects of a server's key before it connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// `--fingerprint`: exactly this key.
    Pinned(Fingerprint),
    /// Recorded at an earlier connection: this key, else the server's key changed.
    Known(Fingerprint),
    /// Never seen: any key, recorded once the handshake succeeded.
    FirstUse,
}

impl Expect {
    /// Whether a server presenting `seen` is accepted.
    pub fn admits(&self, seen: &Fingerprint) -> bool {
        match self {
            Expect::Pinned(fp) | Expect::Known(fp) => fp == seen,
            Expect::FirstUse => true,
        }
    }
}

pub struct KnownServers {
    path: PathBuf,
}

impl KnownServers {
    pub fn new(state_dir: &Path) -> KnownServers {
        KnownServers {
            path: state_dir.join(FILE),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What to expect of `address`: the pin when given (it wins over the record), else the
    /// recorded key, else first use.
    pub fn expect(&self, address: &str, pin: Option<Fingerprint>) -> Result<Expect, FileError> {
        if let Some(pin) = pin {
            return Ok(Expect::Pinned(pin));
        }
        let known: Known = versioned::load(&self.path)?;
        Ok(known
            .servers
            .iter()
            .find(|s| s.address == address)
            .map_or(Expect::FirstUse, |s| Expect::Known(s.fingerprint)))
    }

    /// Records (or, after a successful pinned connection, replaces) the key of `address`.
    pub fn record(&self, address: &str, fingerprint: Fingerprint) -> Result<(), FileError> {
        versioned::update(&self.path, 0o600, |k: &mut Known| {
            if let Some(s) = k.servers.iter_mut().find(|s| s.address == address) {
                if s.fingerprint == fingerprint {
                    return (false, ());
                }
                s.fingerprint = fingerprint;
                s.added = now();
            } else {
                k.servers.push(KnownServer {
                    address: address.to_owned(),
                    fingerprint,
                    added: now(),
                });
            }
            (true, ())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::identity::Identity;

    #[test]
    fn first_use_then_known_and_a_pin_wins() {
        let dir = tempfile::tempdir().unwrap();
        let known = KnownServers::new(dir.path());
        let a = Identity::ephemeral().unwrap().fingerprint();
        let b = Identity::ephemeral().unwrap().fingerprint();
        assert_eq!(known.expect("h:3241", None).unwrap(), Expect::FirstUse);
        assert!(Expect::FirstUse.admits(&b));
        known.record("h:3241", a).unwrap();
        let expect = known.expect("h:3241", None).unwrap();
        assert_eq!(expect, Expect::Known(a));
        assert!(expect.admits(&a) && !expect.admits(&b));
        assert_eq!(known.expect("other:3241", None).unwrap(), Expect::FirstUse);
        assert_eq!(known.expect("h:3241", Some(b)).unwrap(), Expect::Pinned(b));
        known.record("h:3241", b).unwrap();
        assert_eq!(known.expect("h:3241", None).unwrap(), Expect::Known(b));
    }
}
