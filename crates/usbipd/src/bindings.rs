//! Which host devices are shared: the persistent list `usbipd bind` and `unbind` edit.
//!
//! Only devices that match a binding are ever exported (and so ever opened). The file is JSON
//! with a version, written atomically; an unknown future version is refused, not guessed at.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::device::host::HostDeviceInfo;
use crate::persist;

const VERSION: u32 = 1;

/// One binding: a port (busid), or every device with a VID:PID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Binding {
    Busid(String),
    HardwareId { vid: u16, pid: u16 },
}

impl Binding {
    pub fn matches(&self, device: &HostDeviceInfo) -> bool {
        match self {
            Binding::Busid(b) => *b == device.busid,
            Binding::HardwareId { vid, pid } => {
                (*vid, *pid) == (device.vendor_id, device.product_id)
            }
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bindings {
    version: u32,
    pub entries: Vec<Binding>,
}

#[derive(Debug, thiserror::Error)]
pub enum BindingsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid bindings file: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path} has version {found}, newer than this usbipd understands ({VERSION}); upgrade usbipd")]
    FutureVersion { path: PathBuf, found: u32 },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Bindings {
    pub fn default_path() -> PathBuf {
        persist::state_dir().join("bindings.json")
    }

    /// Loads the bindings; a missing file means none.
    pub fn load(path: &Path) -> Result<Bindings, BindingsError> {
        let text = match std::fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Bindings::default()),
            Err(source) => {
                return Err(BindingsError::Read {
                    path: path.to_owned(),
                    source,
                })
            }
        };
        let bindings: Bindings =
            serde_json::from_slice(&text).map_err(|source| BindingsError::Parse {
                path: path.to_owned(),
                source,
            })?;
        if bindings.version > VERSION {
            return Err(BindingsError::FutureVersion {
                path: path.to_owned(),
                found: bindings.version,
            });
        }
        Ok(bindings)
    }

    pub fn save(&self, path: &Path) -> Result<(), BindingsError> {
        let mut out = self.clone();
        out.version = VERSION;
        let bytes = serde_json::to_vec_pretty(&out).unwrap_or_default();
        persist::write_atomically(path, &bytes, 0o644).map_err(|source| BindingsError::Write {
            path: path.to_owned(),
            source,
        })
    }

    pub fn is_bound(&self, device: &HostDeviceInfo) -> bool {
        self.entries.iter().any(|b| b.matches(device))
    }

    /// Adds a binding unless it is there already. Returns whether it was added.
    pub fn add(&mut self, binding: Binding) -> bool {
        if self.entries.contains(&binding) {
            return false;
        }
        self.entries.push(binding);
        true
    }

    /// Removes a binding. Returns whether it was there.
    pub fn remove(&mut self, binding: &Binding) -> bool {
        let before = self.entries.len();
        self.entries.retain(|b| b != binding);
        before != self.entries.len()
    }
}

/// Parses `VID:PID` in hex, e.g. `0525:a4a0`.
pub fn parse_hardware_id(s: &str) -> Option<Binding> {
    let (v, p) = s.split_once(':')?;
    let parse = |x: &str| {
        (x.len() == 4)
            .then(|| u16::from_str_radix(x, 16).ok())
            .flatten()
    };
    Some(Binding::HardwareId {
        vid: parse(v)?,
        pid: parse(p)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::device::host::double::sample_info as info;

    #[test]
    fn bindings_match_by_port_or_hardware_id() {
        let mut b = Bindings::default();
        assert!(b.add(Binding::Busid("1-2".into())));
        assert!(!b.add(Binding::Busid("1-2".into())));
        b.add(parse_hardware_id("0525:a4a0").unwrap());
        assert!(b.is_bound(&info("1-2", 1, 1)));
        assert!(b.is_bound(&info("3-1", 0x0525, 0xa4a0)));
        assert!(!b.is_bound(&info("1-3", 1, 1)));
        assert!(b.remove(&Binding::Busid("1-2".into())));
        assert!(!b.is_bound(&info("1-2", 1, 1)));
    }

    #[test]
    fn hardware_ids_are_four_hex_digits_each() {
        assert_eq!(
            parse_hardware_id("1209:0001"),
            Some(Binding::HardwareId {
                vid: 0x1209,
                pid: 1
            })
        );
        assert_eq!(parse_hardware_id("1209-0001"), None);
        assert_eq!(parse_hardware_id("12:1"), None);
        assert_eq!(parse_hardware_id("zzzz:0001"), None);
    }

    #[test]
    fn persists_and_refuses_future_versions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bindings.json");
        assert_eq!(Bindings::load(&path).unwrap(), Bindings::default());
        let mut b = Bindings::default();
        b.add(Binding::Busid("2-1.4".into()));
        b.save(&path).unwrap();
        let loaded = Bindings::load(&path).unwrap();
        assert_eq!(loaded.entries, b.entries);
        std::fs::write(&path, r#"{"version": 99, "entries": []}"#).unwrap();
        assert!(matches!(
            Bindings::load(&path),
            Err(BindingsError::FutureVersion { found: 99, .. })
        ));
        std::fs::write(&path, "not json").unwrap();
        assert!(matches!(
            Bindings::load(&path),
            Err(BindingsError::Parse { .. })
        ));
    }
}
