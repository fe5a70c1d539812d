//! The embedded "installer": nothing is installed; the extension runs as a child process the
//! daemon supervises (`usbipd extension run`, restarted with backoff). Used in tests, where
//! there is no service manager, or where the daemon may not install one.
//!
//! It never spawns anything itself: the supervisor (the extension's code) does.

use std::path::PathBuf;
use std::sync::Arc;

use super::{InstallError, Installed, Installer, InstallerKind, Probe, Prompt, ServiceLocation};

/// The daemon's supervisor of the extension child process.
pub trait Supervisor: Send + Sync {
    /// Starts supervising (idempotent) and returns once the child is ready, or why it is not.
    fn start(&self) -> Result<(), String>;
    /// The child runs and answered its readiness check.
    fn is_running(&self) -> bool;
    /// Stops the child and the supervision.
    fn stop(&self);
}

pub struct EmbeddedInstaller {
    exe: PathBuf,
    supervisor: Arc<dyn Supervisor>,
}

impl EmbeddedInstaller {
    pub fn new(exe: PathBuf, supervisor: Arc<dyn Supervisor>) -> Self {
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
