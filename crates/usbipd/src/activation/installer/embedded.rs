//! The embedded "installer": nothing is installed; the extension runs as a child process the
//! daemon supervises (`usbipd extension run`, restarted with backoff). Used in tests, where
//! there is no service manager, or where the daemon may not install one.
//!
//! It never spawns anything itself: the supervisor (the extension's code) does.

use std::path::PathBuf;
use std::sync::Arc;

use crate::extension::supervisor::SupervisedChild;

use super::{InstallError, Installed, Installer, InstallerKind, Probe, Prompt, ServiceLocation};

pub struct EmbeddedInstaller {
    exe: PathBuf,
    supervisor: Arc<dyn SupervisedChild>,
}

impl EmbeddedInstaller {
    pub fn new(exe: PathBuf, supervisor: Arc<dyn SupervisedChild>) -> Self {
        EmbeddedInstaller { exe, supervisor }
    }
}

impl Installer for EmbeddedInstaller {
    fn kind(&self) -> InstallerKind {
        InstallerKind::Embedded
    }

    fn location(&self) -> ServiceLocation {
        ServiceLocation {
            kind: InstallerKind::Embedded,
            identifier: "embedded".to_string(),
            path: self.exe.clone(),
        }
    }

    fn probe(&self) -> Probe {
        // Nothing outlives the daemon: a child from a previous run is gone.
        if self.supervisor.is_running() {
            Probe::Installed { running: true }
        } else {
            Probe::NotInstalled
        }
    }

    fn install(&self, _prompt: Prompt) -> Result<Installed, InstallError> {
        self.supervisor.start().map_err(InstallError::Failed)?;
        Ok(Installed {
            location: self.location(),
            signed: None,
        })
    }

    fn uninstall(&self) -> Result<(), InstallError> {
        self.supervisor.stop();
        Ok(())
    }
}
