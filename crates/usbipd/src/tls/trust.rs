//! The server's list of client keys it admits over TLS (`trusted_clients.json` in the state
//! directory, 0600): fingerprints with a name and when they were added. `usbipd trust add`,
//! `trust list`, `trust remove` and a used pairing code edit it; the TLS listener reads it at
//! every handshake, so a change counts from the next connection without a restart.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::identity::{Fingerprint, PublicKey};
use crate::persist::versioned::{self, FileError, Versioned};

/// File name in the state directory.
pub const FILE: &str = "trusted_clients.json";

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustStore {
    version: u32,
    pub clients: Vec<TrustedClient>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedClient {
    pub fingerprint: Fingerprint,
    /// What the user called it (a key line's comment, `--name`, or "paired from ADDR").
    pub name: String,
    /// Seconds since the epoch.
    pub added: u64,
}

impl Versioned for TrustStore {
    const VERSION: u32 = 1;
    const WHAT: &'static str = "trusted client list";
    fn version(&self) -> u32 {
        self.version
    }
    fn set_version(&mut self, version: u32) {
        self.version = version;
    }
}

/// What `trust add` was given: a fingerprint, a public key line, or a file holding either.
pub fn parse_key_argument(arg: &str) -> Result<(Fingerprint, String), String> {
    let text = arg.trim();
    if let Ok(fp) = text.parse::<Fingerprint>() {
        return Ok((fp, String::new()));
    }
    if text.starts_with(super::identity::KEY_PREFIX) {
        let (key, comment) = PublicKey::parse_line(text)?;
        return Ok((key.fingerprint(), comment));
    }
    let path = Path::new(text);
    let content = std::fs::read_to_string(path).map_err(|e| {
        format!("`{arg}` is neither a fingerprint (SHA256:...), a key line (usbipd-key ...) nor a readable file: {e}")
    })?;
    let line = content
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .ok_or_else(|| format!("{} holds no key", path.display()))?;
    parse_key_argument(line).map_err(|e| format!("{}: {e}", path.display()))
}

/// The trusted clients of the server whose state directory holds `path`.
#[derive(Debug)]
pub struct Trust {
    path: PathBuf,
}

impl Trust {
    pub fn new(state_dir: &Path) -> Trust {
        Trust {
            path: state_dir.join(FILE),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn list(&self) -> Result<Vec<TrustedClient>, FileError> {
        Ok(versioned::load::<TrustStore>(&self.path)?.clients)
    }

    /// Whether `fingerprint` is trusted now (read from the file each time).
    pub fn contains(&self, fingerprint: &Fingerprint) -> Result<bool, FileError> {
        Ok(self.list()?.iter().any(|c| c.fingerprint == *fingerprint))
    }

    /// Adds a key; false when it was trusted already (its name is kept).
    pub fn add(&self, fingerprint: Fingerprint, name: &str) -> Result<bool, FileError> {
        versioned::update(&self.path, 0o600, |store: &mut TrustStore| {
            if store.clients.iter().any(|c| c.fingerprint == fingerprint) {
                return (false, false);
            }
            store.clients.push(TrustedClient {
                fingerprint,
                name: name.to_owned(),
                added: now(),
            });
            (true, true)
        })
    }

    /// Removes a key; false when it was not trusted.
    pub fn remove(&self, fingerprint: &Fingerprint) -> Result<bool, FileError> {
        versioned::update(&self.path, 0o600, |store: &mut TrustStore| {
            let before = store.clients.len();
            store.clients.retain(|c| c.fingerprint != *fingerprint);
            let removed = store.clients.len() != before;
            (removed, removed)
        })
    }
}

pub(crate) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::identity::Identity;

    #[test]
    fn add_list_remove_and_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let trust = Trust::new(dir.path());
        let a = Identity::ephemeral().unwrap().fingerprint();
        let b = Identity::ephemeral().unwrap().fingerprint();
        assert!(!trust.contains(&a).unwrap());
        assert!(trust.add(a, "vm-a").unwrap());
        assert!(!trust.add(a, "again").unwrap());
        assert!(trust.add(b, "").unwrap());
        let list = trust.list().unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!((list[0].fingerprint, list[0].name.as_str()), (a, "vm-a"));
        assert!(trust.contains(&b).unwrap());
        assert!(trust.remove(&a).unwrap());
        assert!(!trust.remove(&a).unwrap());
        assert!(!trust.contains(&a).unwrap());
        assert!(trust.contains(&b).unwrap());
    }

    #[test]
    fn keys_are_given_as_fingerprint_line_or_file() {
        let dir = tempfile::tempdir().unwrap();
        let id = Identity::ephemeral().unwrap();
        let fp = id.fingerprint();
        assert_eq!(parse_key_argument(&fp.to_string()).unwrap().0, fp);
        let line = id.public_key().to_line("my vm");
        assert_eq!(parse_key_argument(&line).unwrap(), (fp, "my vm".into()));
        let file = dir.path().join("client.pub");
        std::fs::write(&file, format!("# a comment\n{line}\n")).unwrap();
        assert_eq!(
            parse_key_argument(file.to_str().unwrap()).unwrap(),
            (fp, "my vm".into())
        );
        let err = parse_key_argument("nonsense").unwrap_err();
        assert!(err.contains("neither a fingerprint"), "{err}");
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        assert!(parse_key_argument(empty.to_str().unwrap()).is_err());
    }
}
