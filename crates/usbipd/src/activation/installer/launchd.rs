//! The launchd installer (macOS): signs the executable when an identity exists (otherwise goes
//! on unsigned: development mode, logged), writes the generated plist to /Library/LaunchDaemons
//! and bootstraps it into the system domain.
//!
//! Platform-neutral on purpose: it only runs `launchctl`/`codesign` through `CommandRunner`, so
//! its decisions are tested on Linux; nothing here calls macOS APIs.

use std::path::PathBuf;
use std::sync::Arc;

use tracing::{info, warn};

use super::{
    sudo_command, sudo_install_command, ApprovalStep, CommandRunner, InstallError, Installed,
    Installer, InstallerKind, Probe, Prompt, ServiceLocation,
};
use crate::activation::service_files::{launchd::plist, LAUNCHD_LABEL, LAUNCHD_LOG};
use crate::activation::signing::{SecurityTool, SigningIdentities};

/// Where macOS lists background items the user may switch off.
pub const BACKGROUND_ITEMS: &str =
    "System Settings > General > Login Items & Extensions > Allow in the Background";

pub struct LaunchdInstaller {
    exe: PathBuf,
    root: bool,
    plist_dir: PathBuf,
    runner: Arc<dyn CommandRunner>,
    identities: Arc<dyn SigningIdentities>,
}

impl LaunchdInstaller {
    pub fn new(exe: PathBuf, root: bool, runner: Arc<dyn CommandRunner>) -> Self {
        LaunchdInstaller {
            exe,
            root,
            plist_dir: PathBuf::from("/Library/LaunchDaemons"),
            identities: Arc::new(SecurityTool {
                runner: runner.clone(),
            }),
            runner,
        }
    }

    pub fn with_plist_dir(mut self, dir: PathBuf) -> Self {
        self.plist_dir = dir;
        self
    }

    pub fn with_identities(mut self, identities: Arc<dyn SigningIdentities>) -> Self {
        self.identities = identities;
        self
    }

    fn plist_path(&self) -> PathBuf {
        self.plist_dir.join(format!("{LAUNCHD_LABEL}.plist"))
    }

    fn target() -> String {
        format!("system/{LAUNCHD_LABEL}")
    }

    /// Signs the executable if an identity exists; `false` means development mode.
    fn sign(&self) -> bool {
        let Some(identity) = self.identities.find() else {
            warn!("no code-signing identity: the extension runs unsigned (development mode)");
            return false;
        };
        let exe = self.exe.to_string_lossy();
        let args = [
            "--force",
            "--options",
            "runtime",
            "--identifier",
            LAUNCHD_LABEL,
            "--sign",
            identity.hash.as_str(),
            exe.as_ref(),
        ];
        match self.runner.run("codesign", &args) {
            Ok(out) if out.success() => {
                info!(identity = %identity.name, "extension signed");
                true
            }
            Ok(out) => {
                warn!(identity = %identity.name, error = %out.describe(), "signing failed: the extension runs unsigned (development mode)");
                false
            }
            Err(e) => {
                warn!(error = %e, "cannot run codesign: the extension runs unsigned (development mode)");
                false
            }
        }
    }
}

impl Installer for LaunchdInstaller {
    fn kind(&self) -> InstallerKind {
        InstallerKind::Launchd
    }

    fn location(&self) -> ServiceLocation {
        ServiceLocation {
            kind: InstallerKind::Launchd,
            identifier: LAUNCHD_LABEL.to_string(),
            path: self.plist_path(),
        }
    }

    fn probe(&self) -> Probe {
        if !self.plist_path().exists() {
            return Probe::NotInstalled;
        }
        let running = match self.runner.run("launchctl", &["print", &Self::target()]) {
            Ok(out) if out.success() => out.stdout.lines().any(|l| l.trim() == "state = running"),
            _ => false,
        };
        Probe::Installed { running }
    }

    fn install(&self, prompt: Prompt) -> Result<Installed, InstallError> {
        if !self.root {
            return Err(InstallError::NeedsApproval(sudo_install_command(&self.exe)));
        }
        let path = self.plist_path();
        // Bootstrapping a new background item makes macOS show its notification; once the
        // user was told, only retry when the item is already in place.
        if prompt == Prompt::Suppressed && !path.exists() {
            return Err(InstallError::NeedsApproval(background_step()));
        }
        let signed = self.sign();
        if let Some(dir) = std::path::Path::new(LAUNCHD_LOG).parent() {
            // Best effort: launchd opens the log itself and runs without it if it cannot.
            let _ = std::fs::create_dir_all(dir);
        }
        crate::persist::write_atomically(&path, plist(&self.exe).as_bytes(), 0o644)
            .map_err(|e| InstallError::Failed(format!("cannot write {}: {e}", path.display())))?;
        let target = Self::target();
        // Replace a loaded older definition; "not loaded" is fine.
        let _ = self.runner.run("launchctl", &["bootout", &target]);
        let _ = self.runner.run("launchctl", &["enable", &target]);
        let path_str = path.to_string_lossy();
        let out = self
            .runner
            .run("launchctl", &["bootstrap", "system", path_str.as_ref()])
            .map_err(|e| InstallError::Failed(format!("cannot run launchctl: {e}")))?;
        if !out.success() {
            // A background item the user switched off refuses to load.
            if out.stderr.contains("Operation not permitted") {
                return Err(InstallError::NeedsApproval(background_step()));
            }
            return Err(InstallError::Failed(format!(
                "launchctl bootstrap failed ({})",
                out.describe()
            )));
        }
        Ok(Installed {
            location: self.location(),
            signed: Some(signed),
        })
    }

    fn uninstall(&self) -> Result<(), InstallError> {
        if !self.root {
            return Err(InstallError::NeedsApproval(sudo_command(
                &self.exe,
                "uninstall",
            )));
        }
        let _ = self.runner.run("launchctl", &["bootout", &Self::target()]);
        let path = self.plist_path();
        if path.exists() {
            std::fs::remove_file(&path).map_err(|e| {
                InstallError::Failed(format!("cannot remove {}: {e}", path.display()))
            })?;
        }
        Ok(())
    }
}

fn background_step() -> ApprovalStep {
    ApprovalStep::Settings {
        path: BACKGROUND_ITEMS.to_string(),
        item: "usbipd".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::super::CommandOutput;
    use super::*;
    use crate::activation::signing::{Identity, NoIdentities};

    struct Script {
        calls: Mutex<Vec<String>>,
        bootstrap_stderr: Option<&'static str>,
    }

    impl CommandRunner for Script {
        fn run(&self, program: &str, args: &[&str]) -> std::io::Result<CommandOutput> {
            let line = format!("{program} {}", args.join(" "));
            self.calls.lock().unwrap().push(line.clone());
            if line.starts_with("launchctl bootstrap") {
                if let Some(e) = self.bootstrap_stderr {
                    return Ok(CommandOutput {
                        code: Some(5),
                        stderr: e.into(),
                        ..Default::default()
                    });
                }
            }
            Ok(CommandOutput {
                code: Some(0),
                ..Default::default()
            })
        }
    }

    struct OneIdentity;
    impl SigningIdentities for OneIdentity {
        fn find(&self) -> Option<Identity> {
            Some(Identity {
                hash: "AB".repeat(20),
                name: "Developer ID Application: Ann (X)".into(),
            })
        }
    }

    fn installer(
        dir: &std::path::Path,
        bootstrap_stderr: Option<&'static str>,
        ids: Arc<dyn SigningIdentities>,
    ) -> (LaunchdInstaller, Arc<Script>) {
        let script = Arc::new(Script {
            calls: Mutex::new(Vec::new()),
            bootstrap_stderr,
        });
        let i = LaunchdInstaller::new("/opt/homebrew/bin/usbipd".into(), true, script.clone())
            .with_plist_dir(dir.into())
            .with_identities(ids);
        (i, script)
    }

    #[test]
    fn signs_when_an_identity_exists_and_bootstraps_the_plist() {
        let dir = tempfile::tempdir().unwrap();
        let (i, script) = installer(dir.path(), None, Arc::new(OneIdentity));
        let done = i.install(Prompt::Allowed).unwrap();
        assert_eq!(done.signed, Some(true));
        let plist_path = dir.path().join("dev.usbipd.extension.plist");
        let calls = script.calls.lock().unwrap().clone();
        assert_eq!(
            calls,
            [
                format!("codesign --force --options runtime --identifier dev.usbipd.extension --sign {} /opt/homebrew/bin/usbipd", "AB".repeat(20)),
                "launchctl bootout system/dev.usbipd.extension".to_string(),
                "launchctl enable system/dev.usbipd.extension".to_string(),
                format!("launchctl bootstrap system {}", plist_path.display()),
            ]
        );
        assert!(std::fs::read_to_string(plist_path)
            .unwrap()
            .contains("<string>/opt/homebrew/bin/usbipd</string>"));
    }

    #[test]
    fn without_identity_it_installs_unsigned() {
        let dir = tempfile::tempdir().unwrap();
        let (i, script) = installer(dir.path(), None, Arc::new(NoIdentities));
        assert_eq!(i.install(Prompt::Allowed).unwrap().signed, Some(false));
        assert!(!script.calls.lock().unwrap()[0].starts_with("codesign"));
    }

    #[test]
    fn a_switched_off_background_item_needs_approval_in_settings() {
        let dir = tempfile::tempdir().unwrap();
        let (i, _) = installer(
            dir.path(),
            Some("Bootstrap failed: 1: Operation not permitted\n"),
            Arc::new(NoIdentities),
        );
        assert_eq!(
            i.install(Prompt::Allowed),
            Err(InstallError::NeedsApproval(background_step()))
        );
        let (i, _) = installer(
            dir.path(),
            Some("Bootstrap failed: 5: Input/output error\n"),
            Arc::new(NoIdentities),
        );
        assert!(
            matches!(i.install(Prompt::Allowed), Err(InstallError::Failed(m)) if m.contains("exit code 5"))
        );
    }

    #[test]
    fn suppressed_prompt_never_adds_a_new_background_item() {
        let dir = tempfile::tempdir().unwrap();
        let (i, script) = installer(dir.path(), None, Arc::new(NoIdentities));
        assert!(matches!(
            i.install(Prompt::Suppressed),
            Err(InstallError::NeedsApproval(_))
        ));
        assert!(script.calls.lock().unwrap().is_empty());
    }
}
