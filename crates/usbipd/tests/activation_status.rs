//! Golden tests of the extension part of `usbipd status`: the five headlines (and the variants
//! that change their guidance), as text and as JSON. `UPDATE_GOLDEN=1` rewrites the files.

use std::path::{Path, PathBuf};

use usbipd::activation::installer::launchctl::parse_print;
use usbipd::activation::installer::ServiceState;
use usbipd::activation::state::{ActivationState, InstallStatus, ServiceLocation};
use usbipd::activation::status::{self, Facts, Os};
use usbipd::activation::{ApprovalStep, FallbackReason, InstallerKind, Mode, Snapshot};

const LAST: u64 = 1_795_000_000; // 2026-11-18T11:06:40Z

fn facts(os: Os) -> Facts {
    Facts {
        os,
        exe: PathBuf::from("/usr/bin/usbipd"),
        state_file: PathBuf::from("/var/lib/usbipd/activation.json"),
    }
}

fn systemd_location() -> ServiceLocation {
    ServiceLocation {
        kind: InstallerKind::Systemd,
        identifier: "usbipd-extension.service".into(),
        path: "/etc/systemd/system/usbipd-extension.service".into(),
    }
}

fn state(status: InstallStatus) -> ActivationState {
    ActivationState {
        status,
        last_attempt: Some(LAST),
        ..ActivationState::default()
    }
}

fn fallback(reason: FallbackReason) -> Mode {
    Mode::Fallback { reason }
}

fn check(name: &str, snapshot: Snapshot, facts: Facts, headline: &str) {
    check_with_services(name, snapshot, facts, headline, Vec::new());
}

/// As `check`, with the service manager's word on the services (`usbipd status` adds it).
fn check_with_services(
    name: &str,
    snapshot: Snapshot,
    facts: Facts,
    headline: &str,
    services: Vec<ServiceState>,
) {
    let mut report = status::report(&snapshot, &facts);
    report.services = services;
    let text = status::render_text(&report);
    let json = status::render_json(&report) + "\n";
    // Exactly one headline, first, and it is the one expected.
    let first = text.lines().next().unwrap_or_default();
    assert_eq!(first, headline, "{name}");
    let all = [
        status::ACTIVE,
        status::AVAILABLE,
        status::FAILED,
        status::PENDING,
        status::NOT_AVAILABLE,
    ];
    assert_eq!(
        text.lines().filter(|l| all.contains(l)).count(),
        1,
        "{name}: {text}"
    );
    // The JSON says the same as fields.
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["headline"], headline);
    assert_eq!(v["mode"] == "extension", snapshot.mode.is_extension());
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/status");
    for (ext, got) in [("txt", &text), ("json", &json)] {
        let path = dir.join(format!("{name}.{ext}"));
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", path.display()));
        assert_eq!(got, &want, "{} differs", path.display());
    }
}

#[test]
fn active() {
    let mut s = state(InstallStatus::Completed);
    s.service = Some(systemd_location());
    check(
        "active",
        Snapshot {
            state: s,
            mode: Mode::Extension,
            installer: Some(InstallerKind::Systemd),
        },
        facts(Os::Linux),
        status::ACTIVE,
    );
}

#[test]
fn active_unsigned_is_development_mode() {
    let mut s = state(InstallStatus::Completed);
    s.signed = Some(false);
    s.service = Some(ServiceLocation {
        kind: InstallerKind::Launchd,
        identifier: "dev.usbipd.extension".into(),
        path: "/Library/LaunchDaemons/dev.usbipd.extension.plist".into(),
    });
    check(
        "active_development_mode",
        Snapshot {
            state: s,
            mode: Mode::Extension,
            installer: Some(InstallerKind::Launchd),
        },
        facts(Os::Macos),
        status::ACTIVE,
    );
}

#[test]
fn available() {
    check(
        "available",
        Snapshot {
            state: ActivationState::default(),
            mode: fallback(FallbackReason::NotInstalled),
            installer: Some(InstallerKind::Systemd),
        },
        facts(Os::Linux),
        status::AVAILABLE,
    );
}

#[test]
fn available_while_installing() {
    check(
        "available_installing",
        Snapshot {
            state: state(InstallStatus::InProgress),
            mode: fallback(FallbackReason::Installing),
            installer: Some(InstallerKind::Embedded),
        },
        facts(Os::Linux),
        status::AVAILABLE,
    );
}

#[test]
fn failed() {
    let reason = "systemctl enable --now usbipd-extension.service failed (exit code 1: Failed to enable unit: Unit file is masked.)";
    check(
        "failed",
        Snapshot {
            state: state(InstallStatus::Failed {
                reason: reason.into(),
            }),
            mode: fallback(FallbackReason::Failed {
                message: reason.into(),
            }),
            installer: Some(InstallerKind::Systemd),
        },
        facts(Os::Linux),
        status::FAILED,
    );
}

/// A launchd extension that launchd keeps respawning (exit 78 each time): the unified log is
/// where to read more, and launchd's own account of the job is shown.
#[test]
fn failed_on_macos_with_the_launchd_state() {
    let reason =
        "launchctl bootstrap failed (exit code 5: Bootstrap failed: 5: Input/output error)";
    let crashed = include_str!("../src/activation/installer/fixtures/print-crashed.txt");
    let daemon = include_str!("../src/activation/installer/fixtures/print-never-ran.txt");
    check_with_services(
        "failed_launchd",
        Snapshot {
            state: state(InstallStatus::Failed {
                reason: reason.into(),
            }),
            mode: fallback(FallbackReason::Failed {
                message: reason.into(),
            }),
            installer: Some(InstallerKind::Launchd),
        },
        facts(Os::Macos),
        status::FAILED,
        [crashed, daemon]
            .into_iter()
            .map(|t| parse_print(t).expect("a service"))
            .collect(),
    );
}

#[test]
fn failed_by_timeout_then_completed() {
    let mut s = state(InstallStatus::Completed);
    s.service = Some(systemd_location());
    check(
        "failed_timeout",
        Snapshot {
            state: s,
            mode: fallback(FallbackReason::TimedOut { after_secs: 30 }),
            installer: Some(InstallerKind::Systemd),
        },
        facts(Os::Linux),
        status::FAILED,
    );
}

#[test]
fn pending_approval_on_linux_gives_the_command() {
    check(
        "pending",
        Snapshot {
            state: state(InstallStatus::NeedsApproval {
                step: ApprovalStep::Command {
                    command: "sudo /usr/bin/usbipd extension install".into(),
                },
            }),
            mode: fallback(FallbackReason::NeedsApproval),
            installer: Some(InstallerKind::Systemd),
        },
        facts(Os::Linux),
        status::PENDING,
    );
}

#[test]
fn pending_approval_on_macos_gives_the_settings_path() {
    check(
        "pending_macos",
        Snapshot {
            state: state(InstallStatus::NeedsApproval {
                step: ApprovalStep::Settings {
                    path: usbipd::activation::installer::launchd::BACKGROUND_ITEMS.into(),
                    item: "usbipd".into(),
                },
            }),
            mode: fallback(FallbackReason::NeedsApproval),
            installer: Some(InstallerKind::Launchd),
        },
        facts(Os::Macos),
        status::PENDING,
    );
}

#[test]
fn not_available() {
    check(
        "not_available",
        Snapshot {
            state: ActivationState::default(),
            mode: fallback(FallbackReason::Unavailable),
            installer: None,
        },
        facts(Os::Linux),
        status::NOT_AVAILABLE,
    );
}
