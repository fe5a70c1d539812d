//! The claim registry on disk: which devices are bound, what kernel driver each had, and which
//! are half-way through an unbind. A [`versioned`] JSON file: written atomically, so that a crash
//! leaves the old or the new file, never a torn one, and a file from a future version is refused
//! with a clear error, never guessed at.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::persist::versioned::{self, FileError, Versioned};

/// The format this build writes and reads.
pub const STATE_VERSION: u32 = 1;

/// Where a bound device is in its life, as far as a restart needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Bound: claim it at every start and whenever it comes back.
    Bound,
    /// An unbind started: at the next start, give it back to its kernel driver and forget it.
    Releasing,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimRecord {
    /// Where it was last seen. A device with a serial is recognised by VID:PID:serial even on
    /// another port; one without is recognised by its port (busid) and VID:PID.
    pub busid: String,
    pub vid: u16,
    pub pid: u16,
    pub serial: Option<String>,
    pub detached_driver: Option<String>,
    pub phase: Phase,
}

impl ClaimRecord {
    /// Whether `(busid, vid, pid, serial)` is this record's device.
    pub fn matches(&self, busid: &str, vid: u16, pid: u16, serial: Option<&str>) -> bool {
        if (self.vid, self.pid) != (vid, pid) {
            return false;
        }
        match (&self.serial, serial) {
            (Some(mine), Some(theirs)) => mine == theirs,
            (None, None) => self.busid == busid,
            _ => false,
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct StateFile {
    version: u32,
    claims: Vec<ClaimRecord>,
}

impl Versioned for StateFile {
    const VERSION: u32 = STATE_VERSION;
    const WHAT: &'static str = "claim registry";
    fn version(&self) -> u32 {
        self.version
    }
    fn set_version(&mut self, version: u32) {
        self.version = version;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("claim registry {path}: written by a newer usbipd (format version {found}, this one reads up to {STATE_VERSION}); upgrade usbipd or move the file away")]
    FutureVersion { path: PathBuf, found: u32 },
    #[error("claim registry {path} is unreadable: {reason}; fix or move the file away (the claims it lists are then forgotten)")]
    Corrupt { path: PathBuf, reason: String },
    #[error("claim registry {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The registry file.
#[derive(Debug, Clone)]
pub struct ClaimStore {
    path: PathBuf,
}

impl ClaimStore {
    pub fn new(path: PathBuf) -> ClaimStore {
        ClaimStore { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The saved claims; none if the file does not exist yet.
    pub fn load(&self) -> Result<Vec<ClaimRecord>, StoreError> {
        Ok(versioned::load::<StateFile>(&self.path)?.claims)
    }

    /// Replaces the saved claims, atomically and durably; 0600: the registry is the
    /// extension's own business.
    pub fn save(&self, claims: &[ClaimRecord]) -> Result<(), StoreError> {
        let mut file = StateFile {
            version: STATE_VERSION,
            claims: claims.to_vec(),
        };
        Ok(versioned::save(&self.path, &mut file, 0o600)?)
    }
}

/// The registry's own wording of the shared policy's errors.
impl From<FileError> for StoreError {
    fn from(e: FileError) -> StoreError {
        match e {
            FileError::FutureVersion { path, found, .. } => {
                StoreError::FutureVersion { path, found }
            }
            FileError::Parse { path, source, .. } => StoreError::Corrupt {
                path,
                reason: source.to_string(),
            },
            FileError::Encode { path, source, .. } => StoreError::Io {
                path,
                source: source.into(),
            },
            FileError::OldVersion {
                path,
                found,
                oldest,
            } => StoreError::Corrupt {
                path,
                reason: format!("format version {found}, older than {oldest}"),
            },
            FileError::Read { path, source }
            | FileError::Write { path, source }
            | FileError::Lock { path, source } => StoreError::Io { path, source },
        }
    }
}

/// A record of device 1234:5678, detached from usbhid, for tests.
#[cfg(test)]
pub(crate) fn sample_record(busid: &str, serial: Option<&str>, phase: Phase) -> ClaimRecord {
    ClaimRecord {
        busid: busid.into(),
        vid: 0x1234,
        pid: 0x5678,
        serial: serial.map(Into::into),
        detached_driver: Some("usbhid".into()),
        phase,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(busid: &str, serial: Option<&str>) -> ClaimRecord {
        sample_record(busid, serial, Phase::Bound)
    }

    #[test]
    fn saves_and_loads_versioned_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = ClaimStore::new(dir.path().join("sub/claims.json"));
        assert_eq!(store.load().unwrap(), vec![]);
        let claims = vec![record("1-2", Some("A1")), record("3-1.4", None)];
        store.save(&claims).unwrap();
        assert_eq!(store.load().unwrap(), claims);
        let raw: serde_json::Value =
            serde_json::from_slice(&std::fs::read(store.path()).unwrap()).unwrap();
        assert_eq!(raw["version"], 1);
        let names: Vec<_> = std::fs::read_dir(dir.path().join("sub"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("claims.json")]);
    }

    #[test]
    fn refuses_a_future_version_and_a_torn_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = ClaimStore::new(dir.path().join("claims.json"));
        std::fs::write(store.path(), r#"{"version":2,"claims":[],"more":1}"#).unwrap();
        let e = store.load().unwrap_err();
        assert!(
            matches!(e, StoreError::FutureVersion { found: 2, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("newer usbipd"));
        std::fs::write(store.path(), r#"{"version":1,"claims":[{"bus"#).unwrap();
        assert!(matches!(store.load(), Err(StoreError::Corrupt { .. })));
    }

    #[test]
    fn a_device_is_recognised_by_serial_anywhere_or_by_port_without_one() {
        let with = record("1-2", Some("A1"));
        assert!(with.matches("4-1", 0x1234, 0x5678, Some("A1")));
        assert!(!with.matches("1-2", 0x1234, 0x5678, Some("B2")));
        assert!(!with.matches("1-2", 0x1234, 0x9999, Some("A1")));
        let without = record("1-2", None);
        assert!(without.matches("1-2", 0x1234, 0x5678, None));
        assert!(!without.matches("1-3", 0x1234, 0x5678, None));
    }
}
