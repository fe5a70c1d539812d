//! Installation by hand, for `usbipd extension install | uninstall | status`: the same
//! installers and state file the daemon uses, run in the foreground of a CLI command.
//!
//! It never prompts by itself: it returns the approval step, and the command prints it.

use super::controller::{FallbackReason, Mode, Snapshot};
use super::installer::{InstallError, Installed, Installer, Probe};
use super::state::{Outcome, Prompt};
use super::state_file::StateFile;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Installs now and records the outcome (a person asked: prompting is allowed).
pub fn install(installer: &dyn Installer, file: &StateFile) -> Result<Installed, InstallError> {
    let mut state = file.load().after_restart();
    state.begin_attempt(now());
    let result = installer.install(Prompt::Allowed);
    let outcome = match &result {
        Ok(done) => Outcome::Installed {
            location: done.location.clone(),
            signed: done.signed,
        },
        Err(InstallError::Failed(reason)) => Outcome::Failed(reason.clone()),
        Err(InstallError::NeedsApproval(step)) => Outcome::NeedsApproval(step.clone()),
    };
    // The command shows the step itself: the daemon must not show it again.
    let _ = state.finish(outcome);
    file.save(&state).map_err(|e| {
        InstallError::Failed(format!("cannot write {}: {e}", file.path().display()))
    })?;
    result
}

/// Removes the service and records "not attempted" (the daemon installs again on first use).
pub fn uninstall(installer: &dyn Installer, file: &StateFile) -> Result<(), InstallError> {
    installer.uninstall()?;
    let mut state = file.load().after_restart();
    state.uninstalled();
    file.save(&state)
        .map_err(|e| InstallError::Failed(format!("cannot write {}: {e}", file.path().display())))
}

/// The status as seen without a running daemon: the state file plus a probe.
pub fn offline_snapshot(installer: Option<&dyn Installer>, file: &StateFile) -> Snapshot {
    let state = file.load().after_restart();
    let mode = match installer.map(|i| i.probe()) {
        None => Mode::Fallback {
            reason: FallbackReason::Unavailable,
        },
        Some(Probe::Installed { running: true }) => Mode::Extension,
        Some(_) => Mode::Fallback {
            reason: FallbackReason::NotInstalled,
        },
    };
    Snapshot {
        state,
        mode,
        installer: installer.map(|i| i.kind()),
    }
}
