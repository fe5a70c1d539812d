//! The installation state machine: what the daemon knows about the extension's installation,
//! and the pure transitions between its states. The controller drives it; the state file keeps it.
//!
//! It must never perform I/O or look at the clock itself: time comes in as arguments, so every
//! transition is testable as plain data.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Version of the persisted layout; a file with another version is treated as "not attempted".
pub const STATE_VERSION: u32 = 1;

/// Where the installation stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum InstallStatus {
    NotAttempted,
    InProgress,
    Completed,
    Failed { reason: String },
    NeedsApproval { step: ApprovalStep },
}

/// The one thing the user has to do before installation can go through.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ApprovalStep {
    /// A command to run with administrator rights (Linux sudo, macOS admin password).
    Command { command: String },
    /// A switch in System Settings (macOS background-item approval).
    Settings { path: String, item: String },
}

/// Which mechanism runs the extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstallerKind {
    /// A systemd system unit (Linux).
    Systemd,
    /// A launchd daemon in /Library/LaunchDaemons (macOS).
    Launchd,
    /// A child process supervised by the daemon (tests, no service manager, not privileged).
    Embedded,
}

impl InstallerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            InstallerKind::Systemd => "systemd",
            InstallerKind::Launchd => "launchd",
            InstallerKind::Embedded => "embedded",
        }
    }
}

/// Where the service is installed and under which identifier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceLocation {
    pub kind: InstallerKind,
    /// Unit name, launchd label, or "embedded".
    pub identifier: String,
    /// Unit file, plist, or the executable the supervisor runs.
    pub path: PathBuf,
}

/// Everything persisted about the installation (the state file's content).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivationState {
    pub version: u32,
    #[serde(flatten)]
    pub status: InstallStatus,
    /// Unix seconds of the last installation attempt.
    pub last_attempt: Option<u64>,
    pub service: Option<ServiceLocation>,
    /// Whether the installed extension is code-signed; `None` where signing does not apply.
    pub signed: Option<bool>,
    /// The approval message for the current `NeedsApproval` has been shown: never show it again.
    #[serde(default)]
    pub approval_shown: bool,
}

impl Default for ActivationState {
    fn default() -> Self {
        ActivationState {
            version: STATE_VERSION,
            status: InstallStatus::NotAttempted,
            last_attempt: None,
            service: None,
            signed: None,
            approval_shown: false,
        }
    }
}

/// How an installation attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Installed {
        location: ServiceLocation,
        signed: Option<bool>,
    },
    Failed(String),
    NeedsApproval(ApprovalStep),
}

/// Whether the installer may show the platform's own approval prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prompt {
    Allowed,
    /// The user was already told once: try quietly, never ask again.
    Suppressed,
}

/// What a transition asks the controller to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    None,
    /// Show the approval message (exactly once per approval episode).
    ShowApproval(ApprovalStep),
}

impl ActivationState {
    /// What a fresh attempt may do: a user already told about an approval is not asked again.
    pub fn prompt_policy(&self) -> Prompt {
        match (&self.status, self.approval_shown) {
            (InstallStatus::NeedsApproval { .. }, true) => Prompt::Suppressed,
            _ => Prompt::Allowed,
        }
    }

    /// An attempt starts now.
    pub fn begin_attempt(&mut self, now: u64) {
        // Keep `approval_shown` across the attempt: if the answer is "needs approval" again,
        // the user has already been told.
        let was_pending = matches!(self.status, InstallStatus::NeedsApproval { .. });
        self.status = InstallStatus::InProgress;
        self.last_attempt = Some(now);
        if !was_pending {
            self.approval_shown = false;
        }
    }

    /// An attempt ended.
    pub fn finish(&mut self, outcome: Outcome) -> Effect {
        match outcome {
            Outcome::Installed { location, signed } => {
                self.status = InstallStatus::Completed;
                self.service = Some(location);
                self.signed = signed;
                self.approval_shown = false;
                Effect::None
            }
            Outcome::Failed(reason) => {
                self.status = InstallStatus::Failed { reason };
                self.approval_shown = false;
                Effect::None
            }
            Outcome::NeedsApproval(step) => {
                self.status = InstallStatus::NeedsApproval { step: step.clone() };
                if self.approval_shown {
                    Effect::None
                } else {
                    self.approval_shown = true;
                    Effect::ShowApproval(step)
                }
            }
        }
    }

    /// The extension was found running without an attempt (installed by hand or by `sudo
    /// usbipd extension install` while the daemon waited for approval).
    pub fn found_running(&mut self, location: ServiceLocation) {
        self.status = InstallStatus::Completed;
        self.service = Some(location);
        self.approval_shown = false;
    }

    /// `usbipd extension uninstall`: back to the start.
    pub fn uninstalled(&mut self) {
        self.status = InstallStatus::NotAttempted;
        self.service = None;
        self.signed = None;
        self.approval_shown = false;
    }

    /// A state read back at daemon start. An attempt that was in progress when the previous
    /// daemon stopped never finished: it counts as not attempted.
    pub fn after_restart(mut self) -> Self {
        if self.status == InstallStatus::InProgress {
            self.status = InstallStatus::NotAttempted;
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step() -> ApprovalStep {
        ApprovalStep::Command {
            command: "sudo /usr/bin/usbipd extension install".into(),
        }
    }

    #[test]
    fn approval_is_shown_once_across_attempts() {
        let mut s = ActivationState::default();
        assert_eq!(s.prompt_policy(), Prompt::Allowed);
        s.begin_attempt(10);
        assert_eq!(
            s.finish(Outcome::NeedsApproval(step())),
            Effect::ShowApproval(step())
        );
        assert_eq!(s.prompt_policy(), Prompt::Suppressed);
        let mut s = s.after_restart();
        s.begin_attempt(20);
        assert_eq!(s.finish(Outcome::NeedsApproval(step())), Effect::None);
        assert_eq!(s.last_attempt, Some(20));
    }

    #[test]
    fn a_failure_between_two_approvals_shows_the_second_one() {
        let mut s = ActivationState::default();
        s.begin_attempt(1);
        s.finish(Outcome::NeedsApproval(step()));
        s.begin_attempt(2);
        s.finish(Outcome::Failed("boom".into()));
        s.begin_attempt(3);
        assert_eq!(
            s.finish(Outcome::NeedsApproval(step())),
            Effect::ShowApproval(step())
        );
    }

    #[test]
    fn an_interrupted_attempt_counts_as_not_attempted() {
        let mut s = ActivationState::default();
        s.begin_attempt(1);
        assert_eq!(s.after_restart().status, InstallStatus::NotAttempted);
    }

    #[test]
    fn json_layout_is_flat_and_versioned() {
        let mut s = ActivationState::default();
        s.begin_attempt(7);
        s.finish(Outcome::Failed("no systemd".into()));
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["version"], 1);
        assert_eq!(v["status"], "failed");
        assert_eq!(v["reason"], "no systemd");
        assert_eq!(v["last_attempt"], 7);
    }
}
