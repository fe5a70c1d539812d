//! A TLS identity as SSH has one: an Ed25519 key pair in a private file (created on first use,
//! 0600), its public key as one line of text (`usbipd-key <base64 SPKI> [comment]`) and its
//! fingerprint (`SHA256:<base64>` of the SubjectPublicKeyInfo), which is what peers pin and
//! trust. Keys are made by ring and used through rustls as raw public keys (RFC 7250): there
//! is no certificate, no CA and no hand-written cryptography here.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::{CertifiedKey, SigningKey};

use crate::persist;

/// The first word of a public key line.
pub const KEY_PREFIX: &str = "usbipd-key";

/// A key pair: the signing key for rustls, and its public half.
#[derive(Debug, Clone)]
pub struct Identity {
    key: Arc<dyn SigningKey>,
    public: PublicKey,
}

/// A public key: the DER SubjectPublicKeyInfo, as a raw-public-key peer presents it.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey(Vec<u8>);

/// SHA-256 of a public key's SubjectPublicKeyInfo.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot read the key file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the key file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a usable private key: {why}")]
    Invalid { path: PathBuf, why: String },
    #[error("{path} may be read by others (mode {mode:o}); make it 0600: chmod 600 {path}")]
    Exposed { path: PathBuf, mode: u32 },
}

impl Identity {
    /// Loads the key in `path`, creating it (0600) when there is none. The bool says whether
    /// it was created now.
    pub fn load_or_create(path: &Path) -> Result<(Identity, bool), IdentityError> {
        let write_err = |source| IdentityError::Write {
            path: path.to_owned(),
            source,
        };
        if path.exists() {
            return Ok((Identity::load(path)?, false));
        }
        // Two first starts at once (the server and `usbipd pair`) must not make two keys.
        let mut lock_path = path.as_os_str().to_owned();
        lock_path.push(".lock");
        let _lock = persist::lock::lock_exclusive(Path::new(&lock_path), true).map_err(|e| {
            write_err(match e {
                persist::lock::LockError::Io(e) => e,
                persist::lock::LockError::Held(_) => std::io::ErrorKind::WouldBlock.into(),
            })
        })?;
        if path.exists() {
            return Ok((Identity::load(path)?, false));
        }
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| {
            IdentityError::Invalid {
                path: path.to_owned(),
                why: "the system's random number generator failed".into(),
            }
        })?;
        persist::write_atomically(path, pem("PRIVATE KEY", pkcs8.as_ref()).as_bytes(), 0o600)
            .map_err(write_err)?;
        Ok((Identity::load(path)?, true))
    }

    /// Loads the key in `path`; refuses one that others may read.
    pub fn load(path: &Path) -> Result<Identity, IdentityError> {
        use std::os::unix::fs::PermissionsExt;
        let read_err = |source| IdentityError::Read {
            path: path.to_owned(),
            source,
        };
        let mode = std::fs::metadata(path)
            .map_err(read_err)?
            .permissions()
            .mode()
            & 0o777;
        if mode & 0o077 != 0 {
            return Err(IdentityError::Exposed {
                path: path.to_owned(),
                mode,
            });
        }
        let text = std::fs::read(path).map_err(read_err)?;
        let invalid = |why: String| IdentityError::Invalid {
            path: path.to_owned(),
            why,
        };
        let der = PrivatePkcs8KeyDer::from_pem_slice(&text).map_err(|e| invalid(e.to_string()))?;
        Identity::from_pkcs8(der).map_err(invalid)
    }

    fn from_pkcs8(der: PrivatePkcs8KeyDer<'_>) -> Result<Identity, String> {
        let key = rustls::crypto::ring::sign::any_supported_type(&PrivateKeyDer::Pkcs8(der))
            .map_err(|e| e.to_string())?;
        let spki = key
            .public_key()
            .ok_or("the key's public half cannot be encoded")?
            .as_ref()
            .to_vec();
        Ok(Identity {
            key,
            public: PublicKey(spki),
        })
    }

    /// A fresh key held only in memory (tests).
    pub fn ephemeral() -> Result<Identity, String> {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|_| "the system's random number generator failed")?;
        Identity::from_pkcs8(PrivatePkcs8KeyDer::from(pkcs8.as_ref().to_vec()))
    }

    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    pub fn fingerprint(&self) -> Fingerprint {
        self.public.fingerprint()
    }

    /// What rustls presents: the raw public key and its signing key.
    pub fn certified_key(&self) -> Arc<CertifiedKey> {
        Arc::new(CertifiedKey::new(
            vec![CertificateDer::from(self.public.0.clone())],
            self.key.clone(),
        ))
    }
}

impl PublicKey {
    pub fn from_spki(der: &[u8]) -> PublicKey {
        PublicKey(der.to_vec())
    }

    pub fn spki(&self) -> &[u8] {
        &self.0
    }

    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(&self.0)
    }

    /// `usbipd-key <base64> <comment>`: one line, to paste into `usbipd trust add`.
    pub fn to_line(&self, comment: &str) -> String {
        let key = STANDARD.encode(&self.0);
        if comment.is_empty() {
            format!("{KEY_PREFIX} {key}")
        } else {
            format!("{KEY_PREFIX} {key} {comment}")
        }
    }

    /// Parses a public key line; returns the key and its comment.
    pub fn parse_line(line: &str) -> Result<(PublicKey, String), String> {
        let mut words = line.split_whitespace();
        if words.next() != Some(KEY_PREFIX) {
            return Err(format!("a public key line starts with `{KEY_PREFIX}`"));
        }
        let key = words
            .next()
            .ok_or("the key is missing after `usbipd-key`")?;
        let der = STANDARD
            .decode(key)
            .map_err(|e| format!("the key is not base64: {e}"))?;
        if der.len() < 16 || der[0] != 0x30 {
            return Err("the key is not a DER SubjectPublicKeyInfo".into());
        }
        Ok((PublicKey(der), words.collect::<Vec<_>>().join(" ")))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.fingerprint())
    }
}

impl Fingerprint {
    pub fn of(spki: &[u8]) -> Fingerprint {
        let digest = ring::digest::digest(&ring::digest::SHA256, spki);
        let mut out = [0; 32];
        out.copy_from_slice(digest.as_ref());
        Fingerprint(out)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SHA256:{}", STANDARD_NO_PAD.encode(self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Fingerprint {
    type Err = String;

    /// `SHA256:<43 base64 characters>`, as printed.
    fn from_str(s: &str) -> Result<Fingerprint, String> {
        let b64 = s
            .trim()
            .strip_prefix("SHA256:")
            .ok_or_else(|| format!("`{s}` is not a fingerprint (SHA256:...)"))?;
        let bytes = STANDARD_NO_PAD
            .decode(b64.trim_end_matches('='))
            .map_err(|e| format!("`{s}` is not a fingerprint: {e}"))?;
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|_| format!("`{s}` is not a fingerprint: not 32 bytes"))?;
        Ok(Fingerprint(bytes))
    }
}

impl serde::Serialize for Fingerprint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Fingerprint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Fingerprint, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// PEM armour around DER (base64 in 64-column lines).
fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_key_is_created_once_private_and_loaded_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tls/server.key");
        let (first, created) = Identity::load_or_create(&path).unwrap();
        assert!(created);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (second, created) = Identity::load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(first.fingerprint(), second.fingerprint());
        assert_ne!(
            first.fingerprint(),
            Identity::ephemeral().unwrap().fingerprint()
        );
    }

    #[test]
    fn a_key_others_may_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("client.key");
        Identity::load_or_create(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            Identity::load(&path),
            Err(IdentityError::Exposed { mode: 0o644, .. })
        ));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&path, "not a key").unwrap();
        assert!(matches!(
            Identity::load(&path),
            Err(IdentityError::Invalid { .. })
        ));
    }

    #[test]
    fn key_lines_and_fingerprints_round_trip() {
        let id = Identity::ephemeral().unwrap();
        let line = id.public_key().to_line("vm one");
        let (key, comment) = PublicKey::parse_line(&line).unwrap();
        assert_eq!(&key, id.public_key());
        assert_eq!(comment, "vm one");
        let fp = id.fingerprint();
        let text = fp.to_string();
        assert!(
            text.starts_with("SHA256:") && text.len() == 7 + 43,
            "{text}"
        );
        assert_eq!(text.parse::<Fingerprint>().unwrap(), fp);
        assert!("SHA256:abc".parse::<Fingerprint>().is_err());
        assert!("MD5:aa".parse::<Fingerprint>().is_err());
        assert!(PublicKey::parse_line("ssh-ed25519 AAAA").is_err());
        assert!(PublicKey::parse_line("usbipd-key !!!").is_err());
    }
}
