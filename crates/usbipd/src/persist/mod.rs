//! What usbipd keeps on disk: the one crash-safe write (a reader sees the old content or the
//! new, never a torn mix), where state and sockets live (`locations`), the trust checks on
//! those directories (`private_dir`), and exclusive lock files (`lock`).

pub mod locations;
pub mod lock;
pub mod private_dir;
pub mod versioned;

use std::io::Write;
use std::path::{Path, PathBuf};

pub use locations::{Locations, NoUserDirectory, Platform, ROOT_RUNTIME_DIR};
pub use private_dir::UntrustedPath;

/// Writes `bytes` to `path` atomically with permissions `mode`: a temporary file in the same
/// directory, fsync, rename over the target, fsync of the directory (so the rename itself
/// survives a power cut).
pub fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    private_dir::ensure_dir(dir, 0o700)?;
    let mut temp = tempfile::NamedTempFile::new_in(dir)?;
    temp.write_all(bytes)?;
    temp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))?;
    temp.as_file().sync_all()?;
    temp.persist(path).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Where usbipd keeps its state on this machine, for this user (see [`locations`]).
pub fn state_dir() -> Result<PathBuf, NoUserDirectory> {
    Ok(current_locations()?.state)
}

/// Where usbipd puts its sockets on this machine, for this user (see [`locations`]).
pub fn runtime_dir() -> Result<PathBuf, NoUserDirectory> {
    Ok(current_locations()?.runtime)
}

/// The mode of a runtime directory usbipd creates: root's is traversable by all (0755), so
/// that the users the extension allows (`--allow-uid`/`--allow-gid`) reach its socket; a
/// user's is private (0700).
pub fn runtime_dir_mode() -> u32 {
    if nix::unistd::geteuid().is_root() {
        0o755
    } else {
        0o700
    }
}

fn current_locations() -> Result<Locations, NoUserDirectory> {
    locations::locations(
        Platform::current(),
        nix::unistd::geteuid().is_root(),
        &|name| std::env::var_os(name),
    )
}

/// Makes the directory that will hold the state file `path` ready: created private (0700)
/// when missing, and refused when someone else owns it or may write to it.
pub fn prepare_state_dir(path: &Path) -> Result<(), UntrustedPath> {
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => private_dir::ensure_dir(dir, 0o700),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_content_and_leaves_no_temporary_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/state.json");
        write_atomically(&path, b"one", 0o600).unwrap();
        write_atomically(&path, b"two", 0o644).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let entries = std::fs::read_dir(path.parent().unwrap()).unwrap().count();
        assert_eq!(entries, 1);
    }
}
