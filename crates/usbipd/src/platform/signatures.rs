//! Code signatures, as the macOS leaf reads them (Security framework) and `ipc::signature`
//! decides with them; declared here so that the leaf needs nothing from the layers above.

use std::fmt;
use std::os::fd::BorrowedFd;

/// The OS's answers about code signatures.
pub trait SignatureReader: Send + Sync + 'static {
    /// The Team ID of this running program's signature; `Ok(None)` if it is unsigned or
    /// signed ad hoc (no team).
    fn own_team(&self) -> Result<Option<String>, SignatureError>;

    /// Whether the process at the other end of this Unix socket (found by its audit token,
    /// which names the exact process image, unlike a pid) satisfies `requirement`, a code
    /// requirement in Apple's requirement language.
    fn peer_satisfies(
        &self,
        socket: BorrowedFd<'_>,
        requirement: &str,
    ) -> Result<bool, SignatureError>;
}

/// A failed Security-framework or socket call: what was asked, and the OSStatus or errno.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureError {
    pub what: &'static str,
    pub code: i32,
}

impl fmt::Display for SignatureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} failed (OSStatus {})", self.what, self.code)
    }
}
