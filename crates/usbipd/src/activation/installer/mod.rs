//! The platform installers behind one trait: systemd (Linux), launchd (macOS), and the embedded
//! "installer" (a child process the daemon supervises). The controller only sees `Installer`.
//!
//! Installers block (they run `systemctl`, `launchctl`, write files): call them from
//! `spawn_blocking`, never from an async task directly. They never print: they return what
//! happened, and the controller decides what the user is told.

pub mod command;
pub mod embedded;
pub mod launchctl;
pub mod launchd;
pub mod systemd;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use super::state::{ApprovalStep, InstallerKind, Prompt, ServiceLocation};
pub use command::{CommandOutput, CommandRunner, SystemRunner};

/// What a look at the installed service found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    NotInstalled,
    Installed { running: bool },
}

/// What the service manager says about one service (`usbipd status` shows it).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ServiceState {
    /// `launchd` or `systemd`.
    pub manager: String,
    /// The manager's name for it (`system/dev.usbipd.extension`).
    pub name: String,
    /// The manager's own word (`running`, `not running`, `spawn scheduled`, ...).
    pub state: String,
    pub running: bool,
    pub pid: Option<u32>,
    /// How often it was started.
    pub runs: Option<u64>,
    /// How the last run ended (`exit code 0`, `signal Killed: 9`, `never exited`).
    pub last_exit: Option<String>,
}

impl ServiceState {
    /// `launchd system/x: running, pid 412, 3 runs, last exit code 0`.
    pub fn line(&self) -> String {
        let mut out = format!("{} {}: {}", self.manager, self.name, self.state);
        if let Some(pid) = self.pid {
            out += &format!(", pid {pid}");
        }
        if let Some(runs) = self.runs {
            out += &format!(", {runs} run{}", if runs == 1 { "" } else { "s" });
        }
        if let Some(last) = &self.last_exit {
            out += &format!(", last exit: {last}");
        }
        out
    }
}

/// A completed installation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    pub location: ServiceLocation,
    /// Whether the executable is code-signed (`None` where signing does not apply).
    pub signed: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InstallError {
    #[error("needs approval: {0:?}")]
    NeedsApproval(ApprovalStep),
    #[error("{0}")]
    Failed(String),
}

/// Installs, removes and inspects the extension's service on one platform.
pub trait Installer: Send + Sync {
    fn kind(&self) -> InstallerKind;
    /// Where the service is (or would be) installed; known before installing.
    fn location(&self) -> ServiceLocation;
    fn probe(&self) -> Probe;
    /// Installs (or repairs) and starts the service; returns once it is running and ready.
    fn install(&self, prompt: Prompt) -> Result<Installed, InstallError>;
    fn uninstall(&self) -> Result<(), InstallError>;
    /// What the service manager says about the services usbipd runs under it (the extension,
    /// and the daemon where a service runs it); empty where there is no such manager.
    fn services(&self) -> Vec<ServiceState> {
        Vec::new()
    }
}

/// The command that gives the installation the rights it lacks.
pub fn sudo_install_command(exe: &Path) -> ApprovalStep {
    sudo_command(exe, "install")
}

/// `sudo <exe> extension <action>`.
pub fn sudo_command(exe: &Path, action: &str) -> ApprovalStep {
    ApprovalStep::Command {
        command: format!("sudo {} extension {action}", exe.display()),
    }
}

/// Facts that choose the installer for this machine.
#[derive(Debug, Clone)]
pub struct Platform {
    pub exe: PathBuf,
    pub root: bool,
    /// systemd is PID 1 and running (`/run/systemd/system` exists).
    pub systemd: bool,
}

impl Platform {
    pub fn detect() -> std::io::Result<Platform> {
        Ok(Platform {
            exe: std::env::current_exe()?,
            root: nix::unistd::geteuid().is_root(),
            systemd: Path::new("/run/systemd/system").is_dir(),
        })
    }
}

/// The installer for this platform: systemd where it runs (asking for sudo when not root),
/// launchd on macOS, and otherwise the embedded supervisor, when one is given. `None` means the
/// extension is not available here.
pub fn for_platform(
    platform: &Platform,
    supervisor: Option<Arc<dyn crate::extension::supervisor::SupervisedChild>>,
) -> Option<Arc<dyn Installer>> {
    let runner: Arc<dyn CommandRunner> = Arc::new(SystemRunner);
    if crate::platform::OS == crate::platform::Os::Macos {
        return Some(Arc::new(launchd::LaunchdInstaller::new(
            platform.exe.clone(),
            platform.root,
            runner,
        )));
    }
    if crate::platform::OS == crate::platform::Os::Linux && platform.systemd {
        return Some(Arc::new(systemd::SystemdInstaller::new(
            platform.exe.clone(),
            platform.root,
            runner,
        )));
    }
    supervisor.map(|s| {
        Arc::new(embedded::EmbeddedInstaller::new(platform.exe.clone(), s)) as Arc<dyn Installer>
    })
}
