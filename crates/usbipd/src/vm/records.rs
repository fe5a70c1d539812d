//! Which busids `usbipd attach --lima/--docker` attached, and where: `vm-attachments.json` in the
//! state directory, so that `usbipd detach --busid` (or `--all`) knows what to stop in the VM.
//! A [`versioned`] JSON file, written atomically; one entry per busid (a new attach replaces the old).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::plan::Attachment;
use crate::persist::versioned::{self, FileError, Versioned};

const VERSION: u32 = 1;

#[derive(Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachments {
    version: u32,
    pub entries: Vec<Attachment>,
}

#[derive(Debug, thiserror::Error)]
pub enum RecordsError {
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("{0} is not a valid attachments file: {1}")]
    Parse(PathBuf, serde_json::Error),
    #[error("{0} has version {1}, newer than this usbipd understands ({VERSION})")]
    Version(PathBuf, u32),
    #[error("cannot write {0}: {1}")]
    Write(PathBuf, std::io::Error),
}

/// This file's wording of the shared policy's errors.
impl From<FileError> for RecordsError {
    fn from(e: FileError) -> RecordsError {
        match e {
            FileError::Read { path, source } => RecordsError::Read(path, source),
            FileError::Parse { path, source, .. } | FileError::Encode { path, source, .. } => {
                RecordsError::Parse(path, source)
            }
            FileError::FutureVersion { path, found, .. }
            | FileError::OldVersion { path, found, .. } => RecordsError::Version(path, found),
            FileError::Write { path, source } | FileError::Lock { path, source } => {
                RecordsError::Write(path, source)
            }
        }
    }
}

impl Versioned for Attachments {
    const VERSION: u32 = VERSION;
    const WHAT: &'static str = "attachments file";
    fn version(&self) -> u32 {
        self.version
    }
    fn set_version(&mut self, version: u32) {
        self.version = version;
    }
}

/// The file in `state_dir`.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("vm-attachments.json")
}

impl Attachments {
    /// The file's entries; none when it does not exist.
    pub fn load(path: &Path) -> Result<Attachments, RecordsError> {
        Ok(versioned::load(path)?)
    }

    pub fn save(&self, path: &Path) -> Result<(), RecordsError> {
        let mut out = Attachments {
            version: VERSION,
            entries: self.entries.clone(),
        };
        Ok(versioned::save(path, &mut out, 0o600)?)
    }

    /// Records `a`, replacing an earlier entry for its busid.
    pub fn put(&mut self, a: Attachment) {
        self.entries.retain(|e| e.busid != a.busid);
        self.entries.push(a);
    }

    /// Takes the entries for `busid` (every entry for `None`).
    pub fn take(&mut self, busid: Option<&str>) -> Vec<Attachment> {
        let (taken, kept) = std::mem::take(&mut self.entries)
            .into_iter()
            .partition(|e| busid.is_none_or(|b| e.busid == b));
        self.entries = kept;
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::plan::Vm;

    fn a(busid: &str, auto: bool) -> Attachment {
        Attachment {
            busid: busid.into(),
            vm: Vm::Docker {
                image: "alpine".into(),
            },
            remote: "host.docker.internal".into(),
            auto,
        }
    }

    #[test]
    fn entries_survive_a_save_and_a_new_attach_replaces_the_old() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path());
        assert!(Attachments::load(&p).unwrap().entries.is_empty());
        let mut all = Attachments::load(&p).unwrap();
        all.put(a("0-3", false));
        all.put(a("1-2", false));
        all.put(a("0-3", true));
        all.save(&p).unwrap();
        let mut back = Attachments::load(&p).unwrap();
        assert_eq!(back.entries, [a("1-2", false), a("0-3", true)]);
        assert_eq!(back.take(Some("0-3")), [a("0-3", true)]);
        assert_eq!(back.take(Some("0-3")), []);
        assert_eq!(back.take(None), [a("1-2", false)]);
        assert!(back.entries.is_empty());
    }

    #[test]
    fn a_damaged_or_newer_file_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path());
        std::fs::write(&p, "{not json").unwrap();
        let e = Attachments::load(&p).unwrap_err().to_string();
        assert!(e.contains("vm-attachments.json"), "{e}");
        std::fs::write(&p, r#"{"version": 9, "entries": []}"#).unwrap();
        assert!(matches!(
            Attachments::load(&p),
            Err(RecordsError::Version(_, 9))
        ));
    }
}
