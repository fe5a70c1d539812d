//! The one versioned-file policy: a small JSON state file with a `version` field, loaded
//! (missing = empty), refused when it comes from a newer usbipd (judged on the version alone,
//! before the rest of the content), saved through the one atomic write, and changed under an
//! exclusive lock so that two processes (a CLI and the server) never lose each other's change.
//! Every versioned state file uses it: bindings, the claim registry, the activation state, VM
//! attachments, the TLS trust store, pairing codes and known servers.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// A file's content type: its version is checked on load and set on save.
pub trait Versioned: Serialize + DeserializeOwned + Default {
    /// The version this usbipd writes.
    const VERSION: u32;
    /// The oldest version this usbipd still reads; older files are refused
    /// ([`FileError::OldVersion`]).
    const OLDEST: u32 = 0;
    /// What the file says it is (`"the trust store"`), for messages.
    const WHAT: &'static str;
    fn version(&self) -> u32;
    fn set_version(&mut self, version: u32);
}

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid {what}: {source}")]
    Parse {
        path: PathBuf,
        what: &'static str,
        source: serde_json::Error,
    },
    #[error(
        "{path} has version {found}, newer than this usbipd understands ({known}); upgrade usbipd"
    )]
    FutureVersion {
        path: PathBuf,
        found: u32,
        known: u32,
    },
    #[error("{path} has version {found}, older than this usbipd reads ({oldest})")]
    OldVersion {
        path: PathBuf,
        found: u32,
        oldest: u32,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot encode {what} for {path}: {source}")]
    Encode {
        path: PathBuf,
        what: &'static str,
        source: serde_json::Error,
    },
    #[error("cannot lock {path}: {source}")]
    Lock {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Loads `path`; a missing file is the default (empty) content.
pub fn load<T: Versioned>(path: &Path) -> Result<T, FileError> {
    if let Some(dir) = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty() && d.exists())
    {
        // A file planted in a directory someone else controls is not ours.
        super::private_dir::check_dir(dir, false).map_err(|e| FileError::Read {
            path: path.to_owned(),
            source: e.into(),
        })?;
    }
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(T::default()),
        Err(source) => {
            return Err(FileError::Read {
                path: path.to_owned(),
                source,
            })
        }
    };
    let parse_err = |source| FileError::Parse {
        path: path.to_owned(),
        what: T::WHAT,
        source,
    };
    // The version first: a newer usbipd may have changed everything else.
    #[derive(serde::Deserialize)]
    struct Version {
        version: u32,
    }
    let found = serde_json::from_slice::<Version>(&text)
        .map_err(parse_err)?
        .version;
    if found > T::VERSION {
        return Err(FileError::FutureVersion {
            path: path.to_owned(),
            found,
            known: T::VERSION,
        });
    }
    if found < T::OLDEST {
        return Err(FileError::OldVersion {
            path: path.to_owned(),
            found,
            oldest: T::OLDEST,
        });
    }
    serde_json::from_slice(&text).map_err(parse_err)
}

/// Saves `value` (as pretty JSON ending in a newline) atomically with permissions `mode`.
/// A value that cannot be encoded writes nothing: never an empty file in place of the old one.
pub fn save<T: Versioned>(path: &Path, value: &mut T, mode: u32) -> Result<(), FileError> {
    value.set_version(T::VERSION);
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|source| FileError::Encode {
        path: path.to_owned(),
        what: T::WHAT,
        source,
    })?;
    bytes.push(b'\n');
    super::write_atomically(path, &bytes, mode).map_err(|source| FileError::Write {
        path: path.to_owned(),
        source,
    })
}

/// Loads, changes and saves `path` under an exclusive lock (`<path>.lock`); `change` returns
/// whether it changed anything (nothing is written otherwise) and a result.
pub fn update<T: Versioned, R>(
    path: &Path,
    mode: u32,
    change: impl FnOnce(&mut T) -> (bool, R),
) -> Result<R, FileError> {
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock_path = PathBuf::from(lock_path);
    // Held until `_lock` drops at the end of this function: load, change and save are one step.
    let _lock = super::lock::lock_exclusive(&lock_path, true).map_err(|e| FileError::Lock {
        path: lock_path.clone(),
        source: match e {
            super::lock::LockError::Io(e) => e,
            // Only a non-waiting lock reports a holder.
            super::lock::LockError::Held(_) => std::io::ErrorKind::WouldBlock.into(),
        },
    })?;
    let mut value: T = load(path)?;
    let (changed, result) = change(&mut value);
    if changed {
        save(path, &mut value, mode)?;
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct List {
        version: u32,
        items: Vec<String>,
    }

    impl Versioned for List {
        const VERSION: u32 = 1;
        const WHAT: &'static str = "test list";
        fn version(&self) -> u32 {
            self.version
        }
        fn set_version(&mut self, version: u32) {
            self.version = version;
        }
    }

    #[test]
    fn missing_is_empty_updates_persist_and_future_versions_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("list.json");
        assert_eq!(load::<List>(&path).unwrap(), List::default());
        let added = update(&path, 0o600, |l: &mut List| {
            l.items.push("a".into());
            (true, l.items.len())
        })
        .unwrap();
        assert_eq!(added, 1);
        let loaded: List = load(&path).unwrap();
        assert_eq!((loaded.version, loaded.items), (1, vec!["a".to_string()]));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::write(&path, r#"{"version": 7, "items": []}"#).unwrap();
        assert!(matches!(
            load::<List>(&path),
            Err(FileError::FutureVersion { found: 7, .. })
        ));
        std::fs::write(&path, "{").unwrap();
        assert!(matches!(load::<List>(&path), Err(FileError::Parse { .. })));
        // A newer usbipd may change more than the version: judged on the version alone.
        std::fs::write(&path, r#"{"version": 2, "entries": {}}"#).unwrap();
        assert!(matches!(
            load::<List>(&path),
            Err(FileError::FutureVersion { found: 2, .. })
        ));
    }

    #[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
    struct OnlyCurrent {
        version: u32,
    }

    impl Versioned for OnlyCurrent {
        const VERSION: u32 = 3;
        const OLDEST: u32 = 3;
        const WHAT: &'static str = "test state";
        fn version(&self) -> u32 {
            self.version
        }
        fn set_version(&mut self, version: u32) {
            self.version = version;
        }
    }

    #[test]
    fn older_versions_are_refused_when_oldest_says_so_and_saves_end_in_a_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, r#"{"version": 2}"#).unwrap();
        assert!(matches!(
            load::<OnlyCurrent>(&path),
            Err(FileError::OldVersion {
                found: 2,
                oldest: 3,
                ..
            })
        ));
        save(&path, &mut OnlyCurrent::default(), 0o644).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.ends_with("}\n"), "{text:?}");
        assert_eq!(load::<OnlyCurrent>(&path).unwrap().version, 3);
    }
}
