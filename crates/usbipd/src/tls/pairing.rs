//! One-time pairing codes (`usbipd pair`): a client that gives a valid code once, over a TLS
//! connection in which it presented its key, gets that key trusted. Codes live in
//! `pairing.json` in the state directory (0600) as SHA-256 hashes with an expiry; a code is
//! removed when used, and after [`MAX_FAILURES`] wrong codes every pending code is void, so
//! guessing a 50-bit code is not an option.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::trust::now;
use crate::persist::versioned::{self, FileError, Versioned};

pub const FILE: &str = "pairing.json";
/// How long a code stays valid.
pub const TTL_SECS: u64 = 600;
/// Wrong codes tolerated before all pending codes are voided.
pub const MAX_FAILURES: u32 = 5;
/// Crockford's base32: no I, L, O, U to misread.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Pending {
    version: u32,
    codes: Vec<PendingCode>,
    failures: u32,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PendingCode {
    /// Hex SHA-256 of the normalised code.
    sha256: String,
    expires: u64,
}

impl Versioned for Pending {
    const VERSION: u32 = 1;
    const WHAT: &'static str = "pairing code file";
    fn version(&self) -> u32 {
        self.version
    }
    fn set_version(&mut self, version: u32) {
        self.version = version;
    }
}

/// The outcome of a code a client gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Redeemed {
    /// Valid: it is used up now.
    Accepted,
    /// Wrong or expired; `voided` when this failure voided every pending code.
    Refused { voided: bool },
}

pub struct Pairing {
    path: PathBuf,
}

impl Pairing {
    pub fn new(state_dir: &Path) -> Pairing {
        Pairing {
            path: state_dir.join(FILE),
        }
    }

    /// Makes a new code, valid for [`TTL_SECS`], and returns it (`XXXXX-XXXXX`).
    pub fn issue(&self) -> Result<String, FileError> {
        self.issue_at(now())
    }

    fn issue_at(&self, now: u64) -> Result<String, FileError> {
        let code = random_code().map_err(|e| FileError::Write {
            path: self.path.clone(),
            source: e,
        })?;
        let sha256 = hash(&code);
        versioned::update(&self.path, 0o600, |p: &mut Pending| {
            p.codes.retain(|c| c.expires > now);
            p.codes.push(PendingCode {
                sha256,
                expires: now + TTL_SECS,
            });
            (true, ())
        })?;
        Ok(code)
    }

    /// Checks `code` and uses it up when valid.
    pub fn redeem(&self, code: &str) -> Result<Redeemed, FileError> {
        self.redeem_at(code, now())
    }

    fn redeem_at(&self, code: &str, now: u64) -> Result<Redeemed, FileError> {
        let sha256 = hash(&normalise(code));
        versioned::update(&self.path, 0o600, |p: &mut Pending| {
            p.codes.retain(|c| c.expires > now);
            if let Some(i) = p.codes.iter().position(|c| c.sha256 == sha256) {
                p.codes.remove(i);
                return (true, Redeemed::Accepted);
            }
            p.failures += 1;
            let voided = p.failures >= MAX_FAILURES && !p.codes.is_empty();
            if p.failures >= MAX_FAILURES {
                p.codes.clear();
                p.failures = 0;
            }
            (true, Redeemed::Refused { voided })
        })
    }
}

fn random_code() -> std::io::Result<String> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 10];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| std::io::Error::other("the system's random number generator failed"))?;
    let chars: String = bytes
        .iter()
        .map(|b| ALPHABET[(b & 31) as usize] as char)
        .collect();
    Ok(format!("{}-{}", &chars[..5], &chars[5..]))
}

/// Upper case, no dashes or spaces: what a person typed compares equal to what was printed.
fn normalise(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect::<String>()
}

fn hash(code: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, normalise(code).as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_works_once_and_not_after_it_expires() {
        let dir = tempfile::tempdir().unwrap();
        let pairing = Pairing::new(dir.path());
        let code = pairing.issue_at(1000).unwrap();
        assert_eq!(code.len(), 11);
        assert!(code
            .chars()
            .all(|c| c == '-' || ALPHABET.contains(&(c as u8))));
        let text = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert!(!text.contains(&code[..5]), "the code itself is not stored");
        assert_eq!(
            pairing.redeem_at(&code.to_lowercase(), 1001).unwrap(),
            Redeemed::Accepted
        );
        assert_eq!(
            pairing.redeem_at(&code, 1002).unwrap(),
            Redeemed::Refused { voided: false }
        );
        let late = pairing.issue_at(2000).unwrap();
        assert_eq!(
            pairing.redeem_at(&late, 2000 + TTL_SECS).unwrap(),
            Redeemed::Refused { voided: false }
        );
    }

    #[test]
    fn too_many_wrong_codes_void_the_pending_ones() {
        let dir = tempfile::tempdir().unwrap();
        let pairing = Pairing::new(dir.path());
        let code = pairing.issue_at(1000).unwrap();
        for _ in 1..MAX_FAILURES {
            assert_eq!(
                pairing.redeem_at("AAAAA-AAAAA", 1001).unwrap(),
                Redeemed::Refused { voided: false }
            );
        }
        assert_eq!(
            pairing.redeem_at("AAAAA-AAAAA", 1001).unwrap(),
            Redeemed::Refused { voided: true }
        );
        assert_eq!(
            pairing.redeem_at(&code, 1002).unwrap(),
            Redeemed::Refused { voided: false }
        );
    }
}
