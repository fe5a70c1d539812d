//! The state file: `ActivationState` as a [`versioned`] JSON file, written atomically so a crash
//! leaves the old or the new state, never half of one.
//!
//! It must never fail the daemon: an unreadable or foreign file reads as "not attempted".

use std::io;
use std::path::{Path, PathBuf};

use tracing::warn;

use super::state::{ActivationState, STATE_VERSION};
use crate::persist::versioned::{self, Versioned};

/// The state file at one path.
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    pub fn new(path: impl Into<PathBuf>) -> StateFile {
        StateFile { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the state; a missing, unreadable, corrupt or other-version file gives the default.
    pub fn load(&self) -> ActivationState {
        match versioned::load(&self.path) {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "activation state not usable; starting afresh");
                ActivationState::default()
            }
        }
    }

    pub fn save(&self, state: &ActivationState) -> io::Result<()> {
        versioned::save(&self.path, &mut state.clone(), 0o644).map_err(io::Error::other)
    }
}

/// Only this version is read: an older layout reads as "not attempted", like a newer one.
impl Versioned for ActivationState {
    const VERSION: u32 = STATE_VERSION;
    const OLDEST: u32 = STATE_VERSION;
    const WHAT: &'static str = "activation state";
    fn version(&self) -> u32 {
        self.version
    }
    fn set_version(&mut self, version: u32) {
        self.version = version;
    }
}

#[cfg(test)]
mod tests {
    use super::super::state::{InstallStatus, Outcome};
    use super::*;
    use std::fs;

    #[test]
    fn round_trip_and_no_temp_left() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::new(dir.path().join("sub/activation.json"));
        assert_eq!(file.load(), ActivationState::default());
        let mut s = ActivationState::default();
        s.begin_attempt(42);
        s.finish(Outcome::Failed("x".into()));
        file.save(&s).unwrap();
        assert_eq!(file.load(), s);
        let names: Vec<_> = fs::read_dir(dir.path().join("sub"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("activation.json")]);
    }

    #[test]
    fn corrupt_or_foreign_versions_read_as_default() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        let file = StateFile::new(&path);
        fs::write(&path, b"{not json").unwrap();
        assert_eq!(file.load().status, InstallStatus::NotAttempted);
        fs::write(&path, br#"{"version":99,"status":"completed","last_attempt":null,"service":null,"signed":null}"#).unwrap();
        assert_eq!(file.load().status, InstallStatus::NotAttempted);
    }
}
