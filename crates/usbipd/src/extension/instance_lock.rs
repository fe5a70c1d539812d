//! One extension per state directory: an exclusive `flock` on `extension.lock` beside the
//! claims file, taken before the claims are restored or `claims.json` is touched and held for
//! the life of the process (the kernel drops it when the process dies, even by SIGKILL, so a
//! restarted extension is never locked out by a dead one).

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use nix::fcntl::Flock;

use crate::persist::lock::{lock_exclusive, LockError};

/// The held lock; dropping it releases it.
#[derive(Debug)]
pub struct InstanceLock {
    _file: Flock<File>,
    path: PathBuf,
}

/// The lock file of the extension whose claims live in `state`.
pub fn lock_path(state: &Path) -> PathBuf {
    state
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .join("extension.lock")
}

impl InstanceLock {
    /// Takes the lock for the claims file `state`, or says who holds it.
    pub fn acquire(state: &Path) -> anyhow::Result<InstanceLock> {
        let path = lock_path(state);
        let mut file = match lock_exclusive(&path, false) {
            Ok(f) => f,
            Err(LockError::Held(mut file)) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = match holder.trim().parse::<u32>() {
                    Ok(pid) => format!("pid {pid}"),
                    Err(_) => "another process".to_string(),
                };
                anyhow::bail!(
                    "another extension ({holder}) holds {}; refusing to start a second one \
                     on the same claims",
                    path.display()
                );
            }
            Err(LockError::Io(e)) => anyhow::bail!("lock file {}: {e}", path.display()),
        };
        // The holder's pid, for the message of a second instance (advice only: the lock is
        // the flock, not the content).
        let written = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()));
        if let Err(e) = written {
            tracing::warn!(path = %path.display(), error = %e, "pid not written to the lock file");
        }
        Ok(InstanceLock { _file: file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_state_is_refused_naming_file_and_pid() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("claims.json");
        let held = InstanceLock::acquire(&state).unwrap();
        let err = InstanceLock::acquire(&state).unwrap_err().to_string();
        assert!(
            err.contains(&lock_path(&state).display().to_string()),
            "{err}"
        );
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(held);
        InstanceLock::acquire(&state).unwrap();
    }
}
