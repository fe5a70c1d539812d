//! The extension part of `usbipd status`: a pure renderer from the activation snapshot and a
//! few platform facts to exactly one of five headlines with its guidance, as text or JSON.
//!
//! It must never look at the machine: everything it shows comes in through its arguments, so
//! golden tests fix every output.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::controller::{FallbackReason, Mode, Snapshot};
use super::installer::ServiceState;
use super::service_files::{OSLOG_SUBSYSTEM, SYSTEMD_UNIT};
use super::state::{ApprovalStep, InstallStatus, InstallerKind, ServiceLocation};

pub const ACTIVE: &str = "System Extension: Active";
pub const AVAILABLE: &str = "System Extension: Available (will install automatically when needed)";
pub const FAILED: &str = "System Extension: Installation failed - using compatibility mode";
pub const PENDING: &str = "System Extension: Pending approval in System Preferences";
pub const NOT_AVAILABLE: &str = "System Extension: Not available - using direct device access";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Os {
    Linux,
    Macos,
    Other,
}

impl Os {
    pub fn current() -> Os {
        match crate::platform::OS {
            crate::platform::Os::Linux => Os::Linux,
            crate::platform::Os::Macos => Os::Macos,
            crate::platform::Os::Other => Os::Other,
        }
    }
}

/// Facts about the machine the renderer may not look up itself.
#[derive(Debug, Clone)]
pub struct Facts {
    pub os: Os,
    /// The installed `usbipd` executable (for the commands shown).
    pub exe: PathBuf,
    pub state_file: PathBuf,
}

/// Which of the five headlines applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Headline {
    Active,
    Available,
    Failed,
    PendingApproval,
    NotAvailable,
}

impl Headline {
    pub fn text(self) -> &'static str {
        match self {
            Headline::Active => ACTIVE,
            Headline::Available => AVAILABLE,
            Headline::Failed => FAILED,
            Headline::PendingApproval => PENDING,
            Headline::NotAvailable => NOT_AVAILABLE,
        }
    }
}

/// The extension's status as fields: `--json` prints this, the text is rendered from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    pub extension: Headline,
    pub headline: String,
    pub guidance: Vec<String>,
    /// Unsigned build (macOS): runs, but only in development mode.
    pub development_mode: bool,
    pub signed: Option<bool>,
    pub installer: Option<InstallerKind>,
    pub service: Option<ServiceLocation>,
    /// The persisted installation status (`not_attempted`, `in_progress`, `completed`,
    /// `failed`, `needs_approval`).
    pub install_status: String,
    pub reason: Option<String>,
    pub approval_step: Option<ApprovalStep>,
    /// RFC 3339, UTC.
    pub last_attempt: Option<String>,
    /// `extension` or `fallback`: what new operations use.
    pub mode: String,
    pub fallback_reason: Option<FallbackReason>,
    pub state_file: PathBuf,
    /// What the service manager says about usbipd's services (`launchctl print` on macOS);
    /// filled in by `usbipd status`, which asks it.
    #[serde(default)]
    pub services: Vec<ServiceState>,
}

const FALLBACK_LIMITS: &str = "The daemon opens devices directly, as far as its own privileges allow; devices held by a kernel driver cannot be bound.";

fn headline(s: &Snapshot) -> Headline {
    if s.installer.is_none() {
        return Headline::NotAvailable;
    }
    if s.mode.is_extension() {
        return Headline::Active;
    }
    match (&s.state.status, &s.mode) {
        (InstallStatus::NeedsApproval { .. }, _) => Headline::PendingApproval,
        (InstallStatus::Failed { .. }, _)
        | (
            _,
            Mode::Fallback {
                reason: FallbackReason::TimedOut { .. },
            },
        ) => Headline::Failed,
        _ => Headline::Available,
    }
}

fn status_name(status: &InstallStatus) -> &'static str {
    match status {
        InstallStatus::NotAttempted => "not_attempted",
        InstallStatus::InProgress => "in_progress",
        InstallStatus::Completed => "completed",
        InstallStatus::Failed { .. } => "failed",
        InstallStatus::NeedsApproval { .. } => "needs_approval",
    }
}

fn service_line(
    kind: Option<InstallerKind>,
    service: Option<&ServiceLocation>,
    f: &Facts,
) -> String {
    match (kind, service) {
        (Some(InstallerKind::Embedded), _) => format!(
            "Service: supervised child process of the daemon ({} extension run).",
            f.exe.display()
        ),
        (Some(InstallerKind::Systemd), Some(s)) => {
            format!(
                "Service: systemd unit {} ({}).",
                s.identifier,
                s.path.display()
            )
        }
        (Some(InstallerKind::Launchd), Some(s)) => {
            format!(
                "Service: launchd daemon {} ({}).",
                s.identifier,
                s.path.display()
            )
        }
        (Some(InstallerKind::Systemd), None) => format!("Service: systemd unit {SYSTEMD_UNIT}."),
        (Some(InstallerKind::Launchd), None) => "Service: launchd daemon.".to_string(),
        (None, _) => "Service: none.".to_string(),
    }
}

fn logs_hint(kind: Option<InstallerKind>) -> String {
    match kind {
        Some(InstallerKind::Systemd) => format!("journalctl -u {SYSTEMD_UNIT}"),
        Some(InstallerKind::Launchd) => {
            format!("log show --last 1h --predicate 'subsystem == \"{OSLOG_SUBSYSTEM}\"'")
        }
        _ => "the daemon's log (standard error of `usbipd server`)".to_string(),
    }
}

/// The steps for an approval, one per line.
pub fn approval_steps(step: &ApprovalStep) -> Vec<String> {
    match step {
        ApprovalStep::Command { command } => vec![
            "Run this command once, as an administrator:".to_string(),
            format!("    {command}"),
        ],
        ApprovalStep::Settings { path, item } => vec![
            format!("1. Open {path}."),
            format!("2. Switch on \"{item}\"."),
            "3. Restart the daemon, or wait for its next start.".to_string(),
        ],
    }
}

/// The one message shown when approval is needed.
pub fn approval_message(step: &ApprovalStep) -> String {
    let mut lines = vec![
        "The usbipd extension needs your approval once; until then usbipd keeps working in compatibility mode.".to_string(),
    ];
    lines.extend(approval_steps(step));
    lines.push("usbipd will not ask again; it retries at its next start.".to_string());
    lines.join("\n")
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Builds the report.
pub fn report(s: &Snapshot, f: &Facts) -> StatusReport {
    let which = headline(s);
    let state = &s.state;
    let kind = s.installer;
    let service = state.service.as_ref().filter(|loc| Some(loc.kind) == kind);
    let retry = format!("sudo {} extension install", f.exe.display());
    let mut guidance = Vec::new();
    let mut reason = None;
    let mut approval_step = None;
    match which {
        Headline::Active => {
            guidance.push("Shared devices are claimed by the extension: devices held by a kernel driver can be bound (the driver gets them back on unbind), and claims survive daemon restarts and extension crashes.".to_string());
            guidance.push(service_line(kind, service, f));
        }
        Headline::Available => {
            guidance.push(FALLBACK_LIMITS.to_string());
            let installing = state.status == InstallStatus::InProgress
                || s.mode
                    == (Mode::Fallback {
                        reason: FallbackReason::Installing,
                    });
            match (installing, state.last_attempt) {
                (true, Some(t)) => guidance.push(format!(
                    "Installing now (started {}); new operations use the extension as soon as it is ready.",
                    rfc3339(t)
                )),
                (true, None) => guidance.push("Installing now; new operations use the extension as soon as it is ready.".to_string()),
                (false, _) => guidance.push(format!(
                    "It installs at the next daemon start or `usbipd bind`; to install it now: {retry}"
                )),
            }
            guidance.push(service_line(kind, None, f));
        }
        Headline::Failed => {
            let why = match (&state.status, &s.mode) {
                (
                    InstallStatus::Completed,
                    Mode::Fallback {
                        reason: FallbackReason::TimedOut { after_secs },
                    },
                ) => format!("installation took longer than {after_secs} s; it has since completed, and the daemon uses the extension after its next restart"),
                (
                    _,
                    Mode::Fallback {
                        reason: FallbackReason::TimedOut { after_secs },
                    },
                ) => format!("installation took longer than {after_secs} s; the daemon stays in compatibility mode until its next restart"),
                (InstallStatus::Failed { reason }, _) => reason.clone(),
                _ => "unknown".to_string(),
            };
            guidance.push(format!("Reason: {why}"));
            if let Some(t) = state.last_attempt {
                guidance.push(format!("Last attempt: {}", rfc3339(t)));
            }
            guidance.push(FALLBACK_LIMITS.to_string());
            guidance.push(format!(
                "Read more: {} (state: {})",
                logs_hint(kind),
                f.state_file.display()
            ));
            if state.status != InstallStatus::Completed {
                guidance.push(format!(
                    "The daemon retries at its next start; to retry now: {retry}"
                ));
            }
            reason = Some(why);
        }
        Headline::PendingApproval => {
            if let InstallStatus::NeedsApproval { step } = &state.status {
                guidance.push("The extension needs your approval once; until then the daemon uses compatibility mode.".to_string());
                guidance.extend(approval_steps(step));
                guidance.push(
                    "The daemon retries at its next start and does not ask again.".to_string(),
                );
                approval_step = Some(step.clone());
            }
        }
        Headline::NotAvailable => {
            guidance.push(match f.os {
                Os::Linux => "No service manager runs here (systemd is not running) and this daemon has no embedded extension.".to_string(),
                Os::Macos => "The extension is switched off in this configuration.".to_string(),
                Os::Other => "This platform has no extension.".to_string(),
            });
            guidance.push(FALLBACK_LIMITS.to_string());
        }
    }
    let development_mode = state.signed == Some(false) && state.status == InstallStatus::Completed;
    if development_mode {
        guidance.push("Development mode: the extension is not code-signed (no signing identity was found when it was installed).".to_string());
    }
    StatusReport {
        extension: which,
        headline: which.text().to_string(),
        guidance,
        development_mode,
        signed: state.signed,
        installer: kind,
        service: service.cloned(),
        install_status: status_name(&state.status).to_string(),
        reason,
        approval_step,
        last_attempt: state.last_attempt.map(rfc3339),
        mode: match &s.mode {
            Mode::Extension => "extension",
            Mode::Fallback { .. } => "fallback",
        }
        .to_string(),
        fallback_reason: match &s.mode {
            Mode::Extension => None,
            Mode::Fallback { reason } => Some(reason.clone()),
        },
        state_file: f.state_file.clone(),
        services: Vec::new(),
    }
}

/// The text `usbipd status` prints: the headline, then the guidance indented.
pub fn render_text(r: &StatusReport) -> String {
    let mut out = String::new();
    out.push_str(&r.headline);
    out.push('\n');
    for line in &r.guidance {
        out.push_str("  ");
        out.push_str(line);
        out.push('\n');
    }
    for service in &r.services {
        out.push_str("  ");
        out.push_str(&service.line());
        out.push('\n');
    }
    out
}

/// `usbipd status --json` (the extension part).
pub fn render_json(r: &StatusReport) -> String {
    serde_json::to_string_pretty(r).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

#[cfg(test)]
mod tests {
    use super::rfc3339;

    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_767_225_599), "2025-12-31T23:59:59Z");
    }
}
