//! The launchd installer's sequences against a stand-in `launchctl` that records every command
//! and answers `print` with recorded outputs (`fixtures/`), keeping which jobs are loaded and
//! running as launchd would.

use std::collections::HashMap;
use std::sync::Mutex;

use super::super::CommandOutput;
use super::*;
use crate::activation::signing::{Identity, NoIdentities};

const RUNNING: &str = include_str!("fixtures/print-running.txt");
const NOT_RUNNING: &str = include_str!("fixtures/print-killed.txt");
const DAEMON_NEVER_RAN: &str = include_str!("fixtures/print-never-ran.txt");
const NOT_LOADED: &str = include_str!("fixtures/print-not-loaded.stderr.txt");

/// A loaded job: running or not.
#[derive(Default)]
struct FakeLaunchd {
    calls: Mutex<Vec<String>>,
    /// label → running.
    jobs: Mutex<HashMap<String, bool>>,
    /// `bootstrap` refuses with this stderr (exit code 5, as launchctl does).
    bootstrap_stderr: Option<&'static str>,
}

impl FakeLaunchd {
    fn with_job(self, label: &str, running: bool) -> Self {
        self.jobs.lock().unwrap().insert(label.into(), running);
        self
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    fn running(&self, label: &str) -> Option<bool> {
        self.jobs.lock().unwrap().get(label).copied()
    }
}

fn ok(stdout: &str) -> CommandOutput {
    CommandOutput {
        code: Some(0),
        stdout: stdout.into(),
        stderr: String::new(),
    }
}

fn refused(code: i32, stderr: &str) -> CommandOutput {
    CommandOutput {
        code: Some(code),
        stdout: String::new(),
        stderr: stderr.into(),
    }
}

impl CommandRunner for FakeLaunchd {
    fn run(&self, program: &str, args: &[&str]) -> std::io::Result<CommandOutput> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("{program} {}", args.join(" ")));
        if program != "launchctl" {
            return Ok(ok(""));
        }
        let mut jobs = self.jobs.lock().unwrap();
        let label = |t: &str| t.strip_prefix("system/").unwrap_or(t).to_string();
        Ok(match args {
            ["print", t] => match jobs.get(&label(t)) {
                None => refused(113, NOT_LOADED),
                Some(true) => ok(RUNNING),
                Some(false) if label(t) == DAEMON_LABEL => ok(DAEMON_NEVER_RAN),
                Some(false) => ok(NOT_RUNNING),
            },
            ["bootstrap", "system", path] => {
                if let Some(e) = self.bootstrap_stderr {
                    return Ok(refused(5, e));
                }
                let name = std::path::Path::new(path)
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                match jobs.entry(name) {
                    std::collections::hash_map::Entry::Occupied(_) => {
                        refused(5, "Bootstrap failed: 5: Input/output error\n")
                    }
                    std::collections::hash_map::Entry::Vacant(job) => {
                        job.insert(true); // RunAtLoad
                        ok("")
                    }
                }
            }
            ["bootout", t] => match jobs.remove(&label(t)) {
                Some(_) => ok(""),
                None => refused(
                    113,
                    "Boot-out failed: 113: Could not find specified service\n",
                ),
            },
            ["kickstart", t] => match jobs.get_mut(&label(t)) {
                Some(running) => {
                    *running = true;
                    ok("")
                }
                None => refused(113, "Could not find service\n"),
            },
            ["enable", _] => ok(""),
            _ => refused(64, "Unrecognized subcommand\n"),
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
    fake: FakeLaunchd,
    ids: Arc<dyn SigningIdentities>,
) -> (LaunchdInstaller, Arc<FakeLaunchd>) {
    let fake = Arc::new(fake);
    let i = LaunchdInstaller::new("/opt/homebrew/bin/usbipd".into(), true, fake.clone())
        .with_plist_dir(dir.into())
        .with_identities(ids);
    (i, fake)
}

const TARGET: &str = "system/dev.usbipd.extension";

#[test]
fn signs_writes_the_plist_and_bootstraps_it_into_the_system_domain() {
    let dir = tempfile::tempdir().unwrap();
    let (i, fake) = installer(dir.path(), FakeLaunchd::default(), Arc::new(OneIdentity));
    assert_eq!(i.probe(), Probe::NotInstalled);
    let done = i.install(Prompt::Allowed).unwrap();
    assert_eq!(done.signed, Some(true));
    let plist_path = dir.path().join("dev.usbipd.extension.plist");
    assert_eq!(
        fake.calls(),
        [
            format!("codesign --force --options runtime --identifier dev.usbipd.extension --sign {} /opt/homebrew/bin/usbipd", "AB".repeat(20)),
            format!("launchctl print {TARGET}"),
            format!("launchctl enable {TARGET}"),
            format!("launchctl bootstrap system {}", plist_path.display()),
        ]
    );
    assert_eq!(
        std::fs::read_to_string(&plist_path).unwrap(),
        plist(std::path::Path::new("/opt/homebrew/bin/usbipd"))
    );
    assert_eq!(i.probe(), Probe::Installed { running: true });
}

#[test]
fn a_loaded_unchanged_job_is_left_running_and_a_stopped_one_kickstarted() {
    let dir = tempfile::tempdir().unwrap();
    let text = plist(std::path::Path::new("/opt/homebrew/bin/usbipd"));
    std::fs::write(dir.path().join("dev.usbipd.extension.plist"), &text).unwrap();
    let (i, fake) = installer(
        dir.path(),
        FakeLaunchd::default().with_job(LAUNCHD_LABEL, true),
        Arc::new(NoIdentities),
    );
    i.install(Prompt::Suppressed).unwrap();
    assert_eq!(fake.calls(), [format!("launchctl print {TARGET}")]);

    let (i, fake) = installer(
        dir.path(),
        FakeLaunchd::default().with_job(LAUNCHD_LABEL, false),
        Arc::new(NoIdentities),
    );
    assert_eq!(i.probe(), Probe::Installed { running: false });
    i.install(Prompt::Allowed).unwrap();
    assert_eq!(
        fake.calls(),
        [
            format!("launchctl print {TARGET}"),
            format!("launchctl print {TARGET}"),
            format!("launchctl kickstart {TARGET}"),
        ]
    );
    assert_eq!(fake.running(LAUNCHD_LABEL), Some(true));
}

#[test]
fn a_changed_plist_is_booted_out_then_bootstrapped_anew() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dev.usbipd.extension.plist");
    std::fs::write(&path, "<plist>old</plist>").unwrap();
    let (i, fake) = installer(
        dir.path(),
        FakeLaunchd::default().with_job(LAUNCHD_LABEL, true),
        Arc::new(NoIdentities),
    );
    i.install(Prompt::Allowed).unwrap();
    assert_eq!(
        fake.calls(),
        [
            format!("launchctl print {TARGET}"),
            format!("launchctl bootout {TARGET}"),
            format!("launchctl enable {TARGET}"),
            format!("launchctl bootstrap system {}", path.display()),
        ]
    );
    assert!(std::fs::read_to_string(&path)
        .unwrap()
        .contains("<string>/opt/homebrew/bin/usbipd</string>"));
    assert_eq!(fake.running(LAUNCHD_LABEL), Some(true));
}

#[test]
fn a_switched_off_background_item_needs_approval_in_settings() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeLaunchd {
        bootstrap_stderr: Some("Bootstrap failed: 1: Operation not permitted\n"),
        ..Default::default()
    };
    let (i, _) = installer(dir.path(), fake, Arc::new(NoIdentities));
    assert_eq!(
        i.install(Prompt::Allowed),
        Err(InstallError::NeedsApproval(background_step()))
    );
    let fake = FakeLaunchd {
        bootstrap_stderr: Some("Bootstrap failed: 5: Input/output error\n"),
        ..Default::default()
    };
    let (i, _) = installer(dir.path(), fake, Arc::new(NoIdentities));
    match i.install(Prompt::Allowed) {
        Err(InstallError::Failed(m)) => assert!(
            m.contains("bootstrap") && m.contains("exit code 5: Bootstrap failed"),
            "{m}"
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn suppressed_prompt_never_adds_a_new_background_item() {
    let dir = tempfile::tempdir().unwrap();
    let (i, fake) = installer(dir.path(), FakeLaunchd::default(), Arc::new(NoIdentities));
    assert!(matches!(
        i.install(Prompt::Suppressed),
        Err(InstallError::NeedsApproval(_))
    ));
    assert!(fake.calls().is_empty());
}

#[test]
fn uninstall_boots_out_and_removes_the_plist_loaded_or_not() {
    let dir = tempfile::tempdir().unwrap();
    let (i, fake) = installer(dir.path(), FakeLaunchd::default(), Arc::new(NoIdentities));
    i.install(Prompt::Allowed).unwrap();
    i.uninstall().unwrap();
    assert!(!dir.path().join("dev.usbipd.extension.plist").exists());
    assert_eq!(fake.running(LAUNCHD_LABEL), None);
    assert_eq!(i.probe(), Probe::NotInstalled);
    // Not loaded any more: launchctl's "could not find" is not a failure.
    i.uninstall().unwrap();
    assert_eq!(
        fake.calls().last().map(String::as_str),
        Some("launchctl bootout system/dev.usbipd.extension")
    );
}

#[test]
fn not_root_is_told_the_sudo_command_and_nothing_runs() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Arc::new(FakeLaunchd::default());
    let i = LaunchdInstaller::new("/usr/local/bin/usbipd".into(), false, fake.clone())
        .with_plist_dir(dir.path().into());
    assert_eq!(
        i.uninstall(),
        Err(InstallError::NeedsApproval(ApprovalStep::Command {
            command: "sudo /usr/local/bin/usbipd extension uninstall".into()
        }))
    );
    assert!(fake.calls().is_empty());
}

#[test]
fn services_report_the_extension_and_the_daemon_as_launchd_prints_them() {
    let dir = tempfile::tempdir().unwrap();
    let (i, _) = installer(dir.path(), FakeLaunchd::default(), Arc::new(NoIdentities));
    assert!(i.services().is_empty());
    let (i, _) = installer(
        dir.path(),
        FakeLaunchd::default()
            .with_job(LAUNCHD_LABEL, true)
            .with_job(DAEMON_LABEL, false),
        Arc::new(NoIdentities),
    );
    let lines: Vec<String> = i.services().iter().map(ServiceState::line).collect();
    assert_eq!(
        lines,
        [
            "launchd system/dev.usbipd.extension: running, pid 412, 3 runs, last exit: exit code 0",
            "launchd system/homebrew.mxcl.usbipd: not running, 0 runs, last exit: never exited",
        ]
    );
}
