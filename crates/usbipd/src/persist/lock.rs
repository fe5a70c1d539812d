//! Exclusive locks on a lock file in a state directory: `flock`, so the kernel releases a lock
//! when its holder dies, even by SIGKILL, and nobody is ever locked out by a dead process.

use std::fs::{File, OpenOptions};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// Why a lock was not taken.
#[derive(Debug)]
pub enum LockError {
    /// Someone holds it (only when not waiting); the open lock file, to read what the holder
    /// wrote into it.
    Held(File),
    /// The lock file could not be opened or locked.
    Io(std::io::Error),
}

/// Opens (creating when missing, in a directory prepared as `prepare_state_dir` does) the lock
/// file `path` and locks it exclusively, waiting for the holder when `wait`, else failing with
/// [`LockError::Held`]. Dropping the returned value releases the lock.
pub fn lock_exclusive(path: &Path, wait: bool) -> Result<Flock<File>, LockError> {
    super::prepare_state_dir(path).map_err(|e| LockError::Io(e.into()))?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(LockError::Io)?;
    let how = if wait {
        FlockArg::LockExclusive
    } else {
        FlockArg::LockExclusiveNonblock
    };
    match Flock::lock(file, how) {
        Ok(locked) => Ok(locked),
        Err((file, Errno::EWOULDBLOCK)) => Err(LockError::Held(file)),
        Err((_, errno)) => Err(LockError::Io(errno.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/x.lock");
        let first = lock_exclusive(&path, false).unwrap();
        assert!(matches!(
            lock_exclusive(&path, false),
            Err(LockError::Held(_))
        ));
        drop(first);
        let _again = lock_exclusive(&path, true).unwrap();
    }
}
