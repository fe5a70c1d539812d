//! The state file: `ActivationState` as versioned JSON, written atomically (temp file, fsync,
//! rename, fsync of the directory) so a crash leaves the old or the new state, never half of one.
//!
//! It must never fail the daemon: an unreadable or foreign file reads as "not attempted".

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use tracing::warn;

use super::state::{ActivationState, STATE_VERSION};

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
        let bytes = match fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return ActivationState::default(),
            Err(e) => {
                warn!(path = %self.path.display(), error = %e, "activation state unreadable; starting afresh");
                return ActivationState::default();
            }
        };
        match serde_json::from_slice::<ActivationState>(&bytes) {
            Ok(s) if s.version == STATE_VERSION => s,
            Ok(s) => {
                warn!(path = %self.path.display(), version = s.version, "activation state of another version; starting afresh");
                ActivationState::default()
            }
            Err(e) => {
                warn!(path = %self.path.display(), error = %e, "activation state corrupt; starting afresh");
                ActivationState::default()
            }
        }
    }

    pub fn save(&self, state: &ActivationState) -> io::Result<()> {
        let mut json = serde_json::to_vec_pretty(state).map_err(io::Error::other)?;
        json.push(b'\n');
        crate::persist::write_atomically(&self.path, &json, 0o644)
    }
}

#[cfg(test)]
mod tests {
    use super::super::state::{InstallStatus, Outcome};
    use super::*;

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
