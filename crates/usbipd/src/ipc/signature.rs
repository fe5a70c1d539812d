//! The code-signature half of peer authentication (macOS): when the extension itself is signed
//! with a Developer ID, a peer is let in only if the kernel's audit token of its process names
//! code signed by the same team. An unsigned extension (a development build) has no team to
//! compare with: it says so once at start and relies on the uid/gid check alone.
//!
//! The decisions are here and tested on Linux; reading signatures and audit tokens is the OS
//! leaf behind [`SignatureReader`] (`platform::macos::CodeSignatures`). Linux has no such leaf:
//! there the uid/gid check is the whole of peer authentication.

use std::fmt;
use std::os::fd::BorrowedFd;
use std::sync::Arc;

pub use crate::platform::signatures::{SignatureError, SignatureReader};

/// An Apple Developer Team ID: ten upper-case letters or digits. Validated because it is
/// written into a code requirement, which must not be open to injection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TeamId(String);

impl TeamId {
    pub fn parse(text: &str) -> Option<TeamId> {
        let valid = text.len() == 10
            && text
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
        valid.then(|| TeamId(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TeamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the extension requires of its peers' signatures, fixed at start.
#[derive(Clone, Default)]
pub enum SignaturePolicy {
    /// No signature check: Linux, or an unsigned (development) extension.
    #[default]
    NotChecked,
    /// Peers must be signed by this team, checked through `reader`.
    SameTeam {
        team: TeamId,
        reader: Arc<dyn SignatureReader>,
    },
}

impl fmt::Debug for SignaturePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignaturePolicy::NotChecked => f.write_str("NotChecked"),
            SignaturePolicy::SameTeam { team, .. } => write!(f, "SameTeam({team})"),
        }
    }
}

/// Why a peer's signature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureRefusal {
    /// Unsigned, or signed by another team.
    WrongSigner { team: TeamId },
    /// The check itself failed; refused rather than let in unchecked.
    CheckFailed(SignatureError),
}

impl fmt::Display for SignatureRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignatureRefusal::WrongSigner { team } => {
                write!(
                    f,
                    "the peer's code is not signed by team {team}, as the extension is"
                )
            }
            SignatureRefusal::CheckFailed(e) => {
                write!(f, "the peer's code signature could not be checked: {e}")
            }
        }
    }
}

impl SignaturePolicy {
    /// The policy for this program: same team if it is signed with a valid Team ID, else none,
    /// with the reason to log once.
    pub fn for_own_signature(reader: Arc<dyn SignatureReader>) -> (SignaturePolicy, String) {
        match reader.own_team() {
            Ok(Some(text)) => match TeamId::parse(&text) {
                Some(team) => {
                    let why = format!("peers must be code-signed by team {team}");
                    (SignaturePolicy::SameTeam { team, reader }, why)
                }
                None => (
                    SignaturePolicy::NotChecked,
                    format!("own Team ID {text:?} is malformed: peer signatures not checked"),
                ),
            },
            Ok(None) => (
                SignaturePolicy::NotChecked,
                "the extension is not signed by a team (development mode): peer signatures not checked, uid/gid only".into(),
            ),
            Err(e) => (
                SignaturePolicy::NotChecked,
                format!("own signature unreadable ({e}): peer signatures not checked, uid/gid only"),
            ),
        }
    }

    /// Whether peers' signatures are checked (and requests must answer a challenge).
    pub fn is_checked(&self) -> bool {
        matches!(self, SignaturePolicy::SameTeam { .. })
    }

    /// The code requirement a peer must satisfy: Apple-anchored (a Developer ID or App Store
    /// chain) with this team as the leaf certificate's organisational unit.
    pub fn requirement(team: &TeamId) -> String {
        format!("anchor apple generic and certificate leaf[subject.OU] = \"{team}\"")
    }

    /// Checks the peer on `socket`.
    pub fn check(&self, socket: BorrowedFd<'_>) -> Result<(), SignatureRefusal> {
        let SignaturePolicy::SameTeam { team, reader } = self else {
            return Ok(());
        };
        match reader.peer_satisfies(socket, &SignaturePolicy::requirement(team)) {
            Ok(true) => Ok(()),
            Ok(false) => Err(SignatureRefusal::WrongSigner { team: team.clone() }),
            Err(e) => Err(SignatureRefusal::CheckFailed(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::sync::Mutex;

    struct Reader {
        own: Result<Option<String>, SignatureError>,
        peer: Result<bool, SignatureError>,
        asked: Mutex<Vec<String>>,
    }

    fn reader(
        own: Result<Option<&str>, SignatureError>,
        peer: Result<bool, SignatureError>,
    ) -> Arc<Reader> {
        Arc::new(Reader {
            own: own.map(|o| o.map(str::to_string)),
            peer,
            asked: Mutex::new(Vec::new()),
        })
    }

    impl SignatureReader for Reader {
        fn own_team(&self) -> Result<Option<String>, SignatureError> {
            self.own.clone()
        }

        fn peer_satisfies(
            &self,
            _: BorrowedFd<'_>,
            requirement: &str,
        ) -> Result<bool, SignatureError> {
            self.asked.lock().unwrap().push(requirement.to_string());
            self.peer.clone()
        }
    }

    fn socket() -> std::os::unix::net::UnixStream {
        std::os::unix::net::UnixStream::pair().unwrap().0
    }

    #[test]
    fn team_ids_are_ten_upper_case_letters_or_digits() {
        assert!(TeamId::parse("A1B2C3D4E5").is_some());
        for bad in [
            "",
            "a1b2c3d4e5",
            "A1B2C3D4E",
            "A1B2C3D4E5F",
            "A1B2C3D4\"5",
            "A1B2 C3D4E",
        ] {
            assert!(TeamId::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn a_signed_extension_requires_its_own_team_of_every_peer() {
        let r = reader(Ok(Some("A1B2C3D4E5")), Ok(true));
        let (policy, why) = SignaturePolicy::for_own_signature(r.clone());
        assert!(why.contains("A1B2C3D4E5"), "{why}");
        let s = socket();
        assert_eq!(policy.check(s.as_fd()), Ok(()));
        assert_eq!(
            *r.asked.lock().unwrap(),
            ["anchor apple generic and certificate leaf[subject.OU] = \"A1B2C3D4E5\""]
        );
    }

    #[test]
    fn a_peer_of_another_team_or_unsigned_is_refused() {
        let (policy, _) =
            SignaturePolicy::for_own_signature(reader(Ok(Some("A1B2C3D4E5")), Ok(false)));
        let refusal = policy.check(socket().as_fd()).unwrap_err();
        assert!(matches!(refusal, SignatureRefusal::WrongSigner { .. }));
        assert!(refusal.to_string().contains("team A1B2C3D4E5"), "{refusal}");
    }

    #[test]
    fn a_check_that_fails_refuses_rather_than_letting_in() {
        let failed = SignatureError {
            what: "SecCodeCopyGuestWithAttributes",
            code: -67068,
        };
        let (policy, _) =
            SignaturePolicy::for_own_signature(reader(Ok(Some("A1B2C3D4E5")), Err(failed.clone())));
        assert_eq!(
            policy.check(socket().as_fd()),
            Err(SignatureRefusal::CheckFailed(failed))
        );
    }

    #[test]
    fn an_unsigned_or_unreadable_or_malformed_own_signature_checks_nothing_and_says_why() {
        let cases = [
            (reader(Ok(None), Ok(false)), "development mode"),
            (
                reader(
                    Err(SignatureError {
                        what: "SecCodeCopySelf",
                        code: -1,
                    }),
                    Ok(false),
                ),
                "unreadable",
            ),
            (reader(Ok(Some("x\" or true")), Ok(false)), "malformed"),
        ];
        for (r, expected) in cases {
            let (policy, why) = SignaturePolicy::for_own_signature(r.clone());
            assert!(why.contains(expected), "{why}");
            assert_eq!(policy.check(socket().as_fd()), Ok(()));
            assert!(r.asked.lock().unwrap().is_empty(), "the peer was not asked");
        }
    }
}
