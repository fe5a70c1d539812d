//! Crash-safe file writes: a reader sees the old content or the new, never a torn mix.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` atomically with permissions `mode`: a temporary file in the same
/// directory, fsync, rename over the target, fsync of the directory (so the rename itself
/// survives a power cut).
pub fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut temp = tempfile::NamedTempFile::new_in(dir)?;
    temp.write_all(bytes)?;
    temp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))?;
    temp.as_file().sync_all()?;
    temp.persist(path).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Where usbipd keeps its state: `$USBIPD_STATE_DIR`, else `/var/lib/usbipd` for root, else
/// `$XDG_STATE_HOME/usbipd` or `~/.local/state/usbipd`.
pub fn state_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("USBIPD_STATE_DIR") {
        return PathBuf::from(dir);
    }
    if nix::unistd::getuid().is_root() {
        return PathBuf::from("/var/lib/usbipd");
    }
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME") {
        return PathBuf::from(dir).join("usbipd");
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".local/state/usbipd"),
        None => std::env::temp_dir().join("usbipd-state"),
    }
}

/// root's runtime directory: the systemd unit's `RuntimeDirectory=` (service_files::systemd).
pub const ROOT_RUNTIME_DIR: &str = "/run/usbipd";

/// Where usbipd puts its sockets: `/run/usbipd` for root, else `$XDG_RUNTIME_DIR/usbipd`, else
/// `usbipd-<uid>` in the temporary directory.
pub fn runtime_dir() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from(ROOT_RUNTIME_DIR);
    }
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR") {
        return PathBuf::from(dir).join("usbipd");
    }
    std::env::temp_dir().join(format!("usbipd-{}", nix::unistd::getuid().as_raw()))
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
