//! Where usbipd keeps its state and its sockets, per platform and per user: one table, as a pure
//! function of the platform, whether we are root, and the environment, so every row is tested
//! on any machine.
//!
//! Only per-user locations: a non-root user never falls back to a shared temporary directory,
//! where another local user could create the directory first and take over the socket or plant
//! a `bindings.json`.

use std::ffi::OsString;
use std::path::PathBuf;

/// root's runtime directory on Linux: also the systemd unit's `RuntimeDirectory=`
/// (`activation::service_files::systemd`), so the unit creates it and it holds under
/// `ProtectSystem=strict` by design.
pub const ROOT_RUNTIME_DIR: &str = "/run/usbipd";

/// The platforms whose conventions differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    Linux,
    MacOs,
}

impl Platform {
    /// The platform this binary runs on (macOS conventions on macOS, Linux's elsewhere).
    pub fn current() -> Platform {
        if crate::platform::OS == crate::platform::Os::Macos {
            Platform::MacOs
        } else {
            Platform::Linux
        }
    }
}

/// The two directories usbipd uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Locations {
    /// bindings.json, claims.json, activation.json, the lock files.
    pub state: PathBuf,
    /// control.sock, extension.sock.
    pub runtime: PathBuf,
}

/// No per-user location can be named: neither `$HOME` nor the XDG variables are set.
#[derive(Debug, thiserror::Error)]
#[error(
    "no per-user directory for usbipd's {what}: set $HOME (or $XDG_STATE_HOME and \
     $XDG_RUNTIME_DIR), or name one with {flag}"
)]
pub struct NoUserDirectory {
    pub what: &'static str,
    pub flag: &'static str,
}

/// The table. `env` reads an environment variable; `USBIPD_STATE_DIR` overrides the state
/// directory on every platform.
///
/// | platform | user | state | runtime |
/// | --- | --- | --- | --- |
/// | Linux | root | /var/lib/usbipd | /run/usbipd |
/// | Linux | other | $XDG_STATE_HOME/usbipd or ~/.local/state/usbipd | $XDG_RUNTIME_DIR/usbipd, else `run` in the state directory |
/// | macOS | root | /Library/Application Support/usbipd | /var/run/usbipd (the root volume is read-only and has no /run) |
/// | macOS | other | ~/Library/Application Support/usbipd | `run` in the state directory |
pub fn locations(
    platform: Platform,
    root: bool,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> Result<Locations, NoUserDirectory> {
    let var = |name: &str| env(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    let state_override = var("USBIPD_STATE_DIR");
    let no_home = |what, flag| NoUserDirectory { what, flag };
    let (state, runtime) = match (platform, root) {
        (Platform::Linux, true) => (
            PathBuf::from("/var/lib/usbipd"),
            PathBuf::from(ROOT_RUNTIME_DIR),
        ),
        (Platform::MacOs, true) => (
            PathBuf::from("/Library/Application Support/usbipd"),
            PathBuf::from("/var/run/usbipd"),
        ),
        (Platform::Linux, false) => {
            let state = match (&state_override, var("XDG_STATE_HOME"), var("HOME")) {
                (Some(dir), _, _) => dir.clone(),
                (None, Some(xdg), _) => xdg.join("usbipd"),
                (None, None, Some(home)) => home.join(".local/state/usbipd"),
                (None, None, None) => return Err(no_home("state", "--state-dir")),
            };
            let runtime = match var("XDG_RUNTIME_DIR") {
                Some(dir) => dir.join("usbipd"),
                None => state.join("run"),
            };
            (state, runtime)
        }
        (Platform::MacOs, false) => {
            let state = match (&state_override, var("HOME")) {
                (Some(dir), _) => dir.clone(),
                (None, Some(home)) => home.join("Library/Application Support/usbipd"),
                (None, None) => return Err(no_home("state", "--state-dir")),
            };
            let runtime = state.join("run");
            (state, runtime)
        }
    };
    Ok(Locations {
        state: state_override.unwrap_or(state),
        runtime,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| {
            vars.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| OsString::from(v))
        }
    }

    fn at(platform: Platform, root: bool, vars: &[(&str, &str)]) -> (String, String) {
        let l = locations(platform, root, &with(vars)).unwrap();
        (
            l.state.display().to_string(),
            l.runtime.display().to_string(),
        )
    }

    #[test]
    fn root_uses_the_system_directories_of_each_platform() {
        let home = [("HOME", "/root"), ("XDG_RUNTIME_DIR", "/run/user/0")];
        assert_eq!(
            at(Platform::Linux, true, &home),
            ("/var/lib/usbipd".into(), "/run/usbipd".into())
        );
        assert_eq!(
            at(Platform::MacOs, true, &home),
            (
                "/Library/Application Support/usbipd".into(),
                "/var/run/usbipd".into()
            )
        );
    }

    #[test]
    fn a_linux_user_gets_xdg_directories_or_their_home_never_a_shared_one() {
        let xdg = [
            ("HOME", "/home/ann"),
            ("XDG_STATE_HOME", "/home/ann/.state"),
            ("XDG_RUNTIME_DIR", "/run/user/1000"),
        ];
        assert_eq!(
            at(Platform::Linux, false, &xdg),
            (
                "/home/ann/.state/usbipd".into(),
                "/run/user/1000/usbipd".into()
            )
        );
        // No runtime directory (su, containers): the sockets stay in the user's own state.
        assert_eq!(
            at(Platform::Linux, false, &[("HOME", "/home/ann")]),
            (
                "/home/ann/.local/state/usbipd".into(),
                "/home/ann/.local/state/usbipd/run".into()
            )
        );
        // Empty variables count as unset.
        assert_eq!(
            at(
                Platform::Linux,
                false,
                &[("HOME", "/home/ann"), ("XDG_RUNTIME_DIR", "")]
            )
            .1,
            "/home/ann/.local/state/usbipd/run"
        );
    }

    #[test]
    fn a_mac_user_gets_application_support() {
        assert_eq!(
            at(Platform::MacOs, false, &[("HOME", "/Users/ann")]),
            (
                "/Users/ann/Library/Application Support/usbipd".into(),
                "/Users/ann/Library/Application Support/usbipd/run".into()
            )
        );
    }

    #[test]
    fn the_state_override_applies_everywhere() {
        for (platform, root) in [
            (Platform::Linux, true),
            (Platform::Linux, false),
            (Platform::MacOs, true),
            (Platform::MacOs, false),
        ] {
            let (state, _) = at(platform, root, &[("USBIPD_STATE_DIR", "/srv/u")]);
            assert_eq!(state, "/srv/u", "{platform:?} root={root}");
        }
    }

    #[test]
    fn without_home_a_user_gets_an_error_not_a_temporary_directory() {
        for platform in [Platform::Linux, Platform::MacOs] {
            let e = locations(platform, false, &with(&[])).unwrap_err();
            assert!(e.to_string().contains("--state-dir"), "{e}");
        }
    }
}
