//! Code-signing identities (macOS): which identity, if any, can sign the extension. Behind a
//! trait so the installer's choice (sign, or go on unsigned in development mode) is testable.
//!
//! It never chooses an identity the `security` tool did not list as valid.

use std::sync::Arc;

use super::installer::CommandRunner;

/// One valid code-signing identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// SHA-1 of the certificate, as `codesign --sign` accepts it.
    pub hash: String,
    /// "Developer ID Application: Name (TEAMID)".
    pub name: String,
}

pub trait SigningIdentities: Send + Sync {
    /// The identity to sign with, or `None` (unsigned: development mode).
    fn find(&self) -> Option<Identity>;
}

/// Asks `security find-identity -v -p codesigning`.
pub struct SecurityTool {
    pub runner: Arc<dyn CommandRunner>,
}

impl SigningIdentities for SecurityTool {
    fn find(&self) -> Option<Identity> {
        let out = self
            .runner
            .run("security", &["find-identity", "-v", "-p", "codesigning"])
            .ok()?;
        if !out.success() {
            return None;
        }
        choose(&parse_identities(&out.stdout))
    }
}

/// No identity ever (platforms without code signing, tests).
pub struct NoIdentities;

impl SigningIdentities for NoIdentities {
    fn find(&self) -> Option<Identity> {
        None
    }
}

/// Parses lines like `  1) 0123…CDEF "Developer ID Application: Ann (AB12CD34EF)"`.
pub fn parse_identities(text: &str) -> Vec<Identity> {
    text.lines()
        .filter_map(|line| {
            let (_, rest) = line.trim().split_once(") ")?;
            let (hash, name) = rest.split_once(' ')?;
            let name = name.trim().strip_prefix('"')?.strip_suffix('"')?;
            let hex = hash.len() == 40 && hash.chars().all(|c| c.is_ascii_hexdigit());
            hex.then(|| Identity {
                hash: hash.to_string(),
                name: name.to_string(),
            })
        })
        .collect()
}

/// A Developer ID identity first (it runs on other Macs), then any other.
pub fn choose(identities: &[Identity]) -> Option<Identity> {
    identities
        .iter()
        .find(|i| i.name.starts_with("Developer ID Application:"))
        .or_else(|| identities.first())
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = r#"
  1) 1111111111111111111111111111111111111111 "Apple Development: ann@example.com (ZZ99ZZ99ZZ)"
  2) ABCDEF0123456789ABCDEF0123456789ABCDEF01 "Developer ID Application: Ann Example (AB12CD34EF)"
     2 valid identities found
"#;

    #[test]
    fn parses_and_prefers_developer_id() {
        let ids = parse_identities(OUTPUT);
        assert_eq!(ids.len(), 2);
        assert_eq!(
            choose(&ids).unwrap(),
            Identity {
                hash: "ABCDEF0123456789ABCDEF0123456789ABCDEF01".into(),
                name: "Developer ID Application: Ann Example (AB12CD34EF)".into(),
            }
        );
    }

    #[test]
    fn no_identity_means_unsigned() {
        assert!(parse_identities("     0 valid identities found\n").is_empty());
        assert_eq!(choose(&[]), None);
    }
}
