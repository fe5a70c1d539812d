//! Trust in a directory or socket before usbipd uses it: it must belong to us or to root, and a
//! directory must not be writable by anyone else, or another local user could replace the
//! socket or plant the state files. Directories usbipd creates are made this way.
//!
//! Symbolic links are followed (macOS's /var/run is one); what is checked is what they reach.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A location usbipd refuses to use, and why.
#[derive(Debug, thiserror::Error)]
pub enum UntrustedPath {
    #[error("{path}: owned by uid {owner}, not by you (uid {me}) or root; refusing to use it")]
    ForeignOwner { path: PathBuf, owner: u32, me: u32 },
    #[error(
        "{path}: writable by other users (mode {mode:o}); refusing to use it \
         (chmod go-w it, or choose another location)"
    )]
    WritableByOthers { path: PathBuf, mode: u32 },
    #[error("{path}: not a directory")]
    NotADirectory { path: PathBuf },
    #[error("{path}: not a socket")]
    NotASocket { path: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl From<UntrustedPath> for std::io::Error {
    fn from(e: UntrustedPath) -> std::io::Error {
        let kind = match &e {
            UntrustedPath::Io { source, .. } => source.kind(),
            _ => std::io::ErrorKind::PermissionDenied,
        };
        std::io::Error::new(kind, e)
    }
}

/// Whose files we trust: our own effective user and root.
fn trusted(owner: u32) -> bool {
    owner == 0 || owner == nix::unistd::geteuid().as_raw()
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> UntrustedPath + '_ {
    move |source| UntrustedPath::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn check_owner(path: &Path, meta: &std::fs::Metadata) -> Result<(), UntrustedPath> {
    if trusted(meta.uid()) {
        return Ok(());
    }
    Err(UntrustedPath::ForeignOwner {
        path: path.to_path_buf(),
        owner: meta.uid(),
        me: nix::unistd::geteuid().as_raw(),
    })
}

/// Creates `dir` (and its parents) when missing, the directory itself with `mode`, then checks
/// it as [`check_dir`] does. An existing directory's mode is not changed: it is only judged.
pub fn ensure_dir(dir: &Path, mode: u32) -> Result<(), UntrustedPath> {
    if !dir.exists() {
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        match std::fs::create_dir(dir) {
            Ok(()) => std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
                .map_err(io(dir))?,
            // Created meanwhile by someone else: judged below like any existing directory.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io(dir)(e)),
        }
    }
    check_dir(dir, false)
}

/// A directory we may use: ours or root's, and writable by no one else. With `sticky_ok`, a
/// directory writable by all but sticky (like /tmp) passes too: others can add entries there
/// but not replace ours, and a socket in it is judged by its own owner ([`check_socket`]).
pub fn check_dir(dir: &Path, sticky_ok: bool) -> Result<(), UntrustedPath> {
    let meta = std::fs::metadata(dir).map_err(io(dir))?;
    if !meta.is_dir() {
        return Err(UntrustedPath::NotADirectory {
            path: dir.to_path_buf(),
        });
    }
    check_owner(dir, &meta)?;
    let mode = meta.permissions().mode() & 0o7777;
    let sticky = mode & 0o1000 != 0;
    if mode & 0o022 != 0 && !(sticky_ok && sticky) {
        return Err(UntrustedPath::WritableByOthers {
            path: dir.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// A socket we may talk to or replace: a socket, owned by us or root, in a directory that
/// [`check_dir`] accepts (sticky shared directories included).
pub fn check_socket(path: &Path) -> Result<(), UntrustedPath> {
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        check_dir(dir, true)?;
    }
    let meta = std::fs::metadata(path).map_err(io(path))?;
    use std::os::unix::fs::FileTypeExt;
    if !meta.file_type().is_socket() {
        return Err(UntrustedPath::NotASocket {
            path: path.to_path_buf(),
        });
    }
    check_owner(path, &meta)
}

/// Prepares the directory of a socket we are about to bind: creates it (`mode`) when missing,
/// checks it, and refuses when a file of someone else's already sits at `path`.
pub fn prepare_socket_path(path: &Path, mode: u32) -> Result<(), UntrustedPath> {
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if dir.exists() {
            check_dir(dir, true)?;
        } else {
            ensure_dir(dir, mode)?;
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) => check_owner(path, &meta),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn a_created_directory_is_private_and_an_existing_one_keeps_its_mode() {
        let top = tempfile::tempdir().unwrap();
        let dir = top.path().join("a/usbipd");
        ensure_dir(&dir, 0o700).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o700);
        chmod(&dir, 0o755);
        ensure_dir(&dir, 0o700).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o755);
    }

    #[test]
    fn directories_writable_by_others_are_refused_sticky_ones_only_for_sockets() {
        let top = tempfile::tempdir().unwrap();
        for mode in [0o777, 0o770, 0o757] {
            chmod(top.path(), mode);
            let e = ensure_dir(top.path(), 0o700).unwrap_err();
            assert!(matches!(e, UntrustedPath::WritableByOthers { .. }), "{e}");
            assert!(check_dir(top.path(), true).is_err());
        }
        chmod(top.path(), 0o1777);
        assert!(check_dir(top.path(), false).is_err(), "state: never shared");
        check_dir(top.path(), true).unwrap();
        chmod(top.path(), 0o700);
    }

    #[test]
    fn a_file_where_a_directory_belongs_is_refused() {
        let top = tempfile::tempdir().unwrap();
        let file = top.path().join("f");
        std::fs::write(&file, b"").unwrap();
        assert!(matches!(
            check_dir(&file, false),
            Err(UntrustedPath::NotADirectory { .. })
        ));
        assert!(matches!(
            check_socket(&file),
            Err(UntrustedPath::NotASocket { .. })
        ));
    }

    /// Ownership by another user: the files are made by root and given away, so this runs
    /// as root (as the README's test command does) and is checked from root's side: root
    /// trusts only itself and root, and uid 65534 is neither.
    #[test]
    fn directories_and_sockets_of_other_users_are_refused() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test gives files away with chown: run it as root"
        );
        let top = tempfile::tempdir().unwrap();
        let nobody = Some(nix::unistd::Uid::from_raw(65534));
        let dir = top.path().join("theirs");
        std::fs::create_dir(&dir).unwrap();
        nix::unistd::chown(&dir, nobody, None).unwrap();
        let e = ensure_dir(&dir, 0o700).unwrap_err();
        assert!(
            matches!(e, UntrustedPath::ForeignOwner { owner: 65534, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("uid 65534"), "{e}");

        let sock = top.path().join("s.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        check_socket(&sock).unwrap();
        prepare_socket_path(&sock, 0o700).unwrap();
        nix::unistd::chown(&sock, nobody, None).unwrap();
        assert!(matches!(
            check_socket(&sock),
            Err(UntrustedPath::ForeignOwner { .. })
        ));
        assert!(matches!(
            prepare_socket_path(&sock, 0o700),
            Err(UntrustedPath::ForeignOwner { .. })
        ));
    }
}
