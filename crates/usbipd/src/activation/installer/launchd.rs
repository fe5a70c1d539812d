//! The launchd installer (macOS): signs the executable when an identity exists (otherwise goes
//! on unsigned: development mode, logged), writes the generated plist to /Library/LaunchDaemons
//! and loads it with `launchctl bootstrap system`. Like the systemd installer it touches a
//! running extension only when its plist changed (`bootout`, then `bootstrap`); an unchanged,
//! loaded one that is not running is `kickstart`ed. Removal is `launchctl bootout
//! system/<label>`; the state `usbipd status` shows is `launchctl print system/<label>`.
//!
//! Platform-neutral on purpose: it only runs `launchctl`/`codesign` through `CommandRunner`, so
//! its decisions are tested on Linux; nothing here calls macOS APIs.

use std::path::PathBuf;
use std::sync::Arc;

use tracing::{info, warn};

use super::launchctl::{Launchctl, LaunchctlError};
use super::{
    sudo_command, sudo_install_command, ApprovalStep, CommandRunner, InstallError, Installed,
    Installer, InstallerKind, Probe, Prompt, ServiceLocation, ServiceState,
};
use crate::activation::service_files::{launchd::plist, DAEMON_LABEL, LAUNCHD_LABEL, LAUNCHD_LOG};
use crate::activation::signing::{SecurityTool, SigningIdentities};

/// Where macOS lists background items the user may switch off.
pub const BACKGROUND_ITEMS: &str =
    "System Settings > General > Login Items & Extensions > Allow in the Background";

pub struct LaunchdInstaller {
    exe: PathBuf,
    root: bool,
    plist_dir: PathBuf,
    runner: Arc<dyn CommandRunner>,
    launchctl: Launchctl,
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
            launchctl: Launchctl::new(runner.clone()),
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

    fn installed(&self, signed: bool) -> Installed {
        Installed {
            location: self.location(),
            signed: Some(signed),
        }
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

fn failed(what: &str, e: &LaunchctlError) -> InstallError {
    InstallError::Failed(format!("launchctl {what} failed ({})", e.describe()))
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
        let running = matches!(self.launchctl.print(LAUNCHD_LABEL), Ok(Some(s)) if s.running);
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
        let text = plist(&self.exe);
        let loaded = self
            .launchctl
            .print(LAUNCHD_LABEL)
            .map_err(|e| failed("print", &e))?;
        if let Some(service) = &loaded {
            if std::fs::read(&path).ok().as_deref() == Some(text.as_bytes()) {
                // Loaded as it should be: leave a running extension alone.
                if !service.running {
                    self.launchctl
                        .kickstart(LAUNCHD_LABEL)
                        .map_err(|e| failed("kickstart", &e))?;
                }
                return Ok(self.installed(signed));
            }
        }
        if let Some(dir) = std::path::Path::new(LAUNCHD_LOG).parent() {
            // Best effort: launchd opens the log itself and runs without it if it cannot.
            let _ = std::fs::create_dir_all(dir);
        }
        crate::persist::write_atomically(&path, text.as_bytes(), 0o644)
            .map_err(|e| InstallError::Failed(format!("cannot write {}: {e}", path.display())))?;
        if loaded.is_some() {
            // A changed plist: launchd reads it only when the job is loaded anew.
            self.launchctl
                .bootout(LAUNCHD_LABEL)
                .map_err(|e| failed("bootout", &e))?;
        }
        // A job disabled by an override refuses to load; clearing it is what an install means.
        if let Err(e) = self.launchctl.enable(LAUNCHD_LABEL) {
            warn!(error = %e.describe(), "launchctl enable");
        }
        match self.launchctl.bootstrap(&path) {
            Ok(()) => Ok(self.installed(signed)),
            Err(e) if e.not_permitted() => Err(InstallError::NeedsApproval(background_step())),
            Err(e) => Err(failed("bootstrap", &e)),
        }
    }

    fn uninstall(&self) -> Result<(), InstallError> {
        if !self.root {
            return Err(InstallError::NeedsApproval(sudo_command(
                &self.exe,
                "uninstall",
            )));
        }
        self.launchctl
            .bootout(LAUNCHD_LABEL)
            .map_err(|e| failed("bootout", &e))?;
        let path = self.plist_path();
        if path.exists() {
            std::fs::remove_file(&path).map_err(|e| {
                InstallError::Failed(format!("cannot remove {}: {e}", path.display()))
            })?;
        }
        Ok(())
    }

    fn services(&self) -> Vec<ServiceState> {
        [LAUNCHD_LABEL, DAEMON_LABEL]
            .into_iter()
            .filter_map(|label| match self.launchctl.print(label) {
                Ok(state) => state,
                Err(e) => {
                    warn!(label, error = %e.describe(), "launchctl print");
                    None
                }
            })
            .collect()
    }
}

fn background_step() -> ApprovalStep {
    ApprovalStep::Settings {
        path: BACKGROUND_ITEMS.to_string(),
        item: "usbipd".to_string(),
    }
}

#[cfg(test)]
#[path = "launchd_tests.rs"]
mod tests;
