//! Which host devices are shared: the persistent list `usbipd bind` and `unbind` edit.
//!
//! Only devices that match a binding are ever exported (and so ever opened). The file is a
//! [`versioned`] JSON file: written atomically, an unknown future version refused, not guessed at.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::device::host::HostDeviceInfo;
use crate::persist::versioned::{self, FileError, Versioned};

/// Readable by all: the bindings say which devices are shared, nothing secret.
const MODE: u32 = 0o644;

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

/// Why the bindings could not be read or written (the policy of [`persist::versioned`]).
pub type BindingsError = FileError;

impl Versioned for Bindings {
    const VERSION: u32 = 1;
    const WHAT: &'static str = "bindings file";
    fn version(&self) -> u32 {
        self.version
    }
    fn set_version(&mut self, version: u32) {
        self.version = version;
    }
}

impl Bindings {
    /// Loads the bindings; a missing file means none.
    pub fn load(path: &Path) -> Result<Bindings, BindingsError> {
        versioned::load(path)
    }

    pub fn save(&self, path: &Path) -> Result<(), BindingsError> {
        versioned::save(path, &mut self.clone(), MODE)
    }

    /// Loads, changes and saves the bindings under an exclusive lock (`<path>.lock`), so that
    /// concurrent `usbipd bind` runs each add their binding instead of overwriting each other.
    /// `change` returns whether it changed anything; nothing is written when it did not.
    pub fn update<T>(
        path: &Path,
        change: impl FnOnce(&mut Bindings) -> (bool, T),
    ) -> Result<T, BindingsError> {
        versioned::update(path, MODE, change)
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

    /// Concurrent `usbipd bind` runs (here: threads, each with its own lock file description, as
    /// processes have) each keep their binding; a slow read-change-write in between loses none.
    #[test]
    fn concurrent_updates_lose_no_binding() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bindings.json");
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let path = path.clone();
                std::thread::spawn(move || {
                    Bindings::update(&path, |b| {
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        (b.add(Binding::Busid(format!("1-{i}"))), ())
                    })
                    .unwrap()
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let saved = Bindings::load(&path).unwrap();
        assert_eq!(saved.entries.len(), 8, "{:?}", saved.entries);
        let unchanged = Bindings::update(&path, |b| (false, b.entries.len())).unwrap();
        assert_eq!(unchanged, 8);
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
