//! Automatic activation: every transition of the installation state machine through the
//! scripted installer double, restarts after each, binds during installation, and the
//! generated service definitions checked by their own parsers.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use usbipd::activation::state::InstallStatus;
use usbipd::activation::state_file::StateFile;
use usbipd::activation::testing::{CountingNotifier, FakeInstaller, Script};
use usbipd::activation::{Activation, ActivationConfig, ApprovalStep, FallbackReason, Mode};

/// A short timeout stands in for the real 30 s where a test wants it to expire (the installer
/// is held at its gate then, so the outcome does not depend on the machine's speed; what the
/// attempt saves before the gate is waited for, not assumed done when the timeout fires).
const SHORT_TIMEOUT: Duration = Duration::from_millis(150);
/// Everywhere else: long enough that a loaded machine (fsync of the state file) never hits it.
const TEST_TIMEOUT: Duration = Duration::from_secs(20);

struct Rig {
    _dir: tempfile::TempDir,
    path: PathBuf,
    fake: Arc<FakeInstaller>,
    notifier: Arc<CountingNotifier>,
}

impl Rig {
    fn new(script: impl IntoIterator<Item = Script>) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        Rig {
            path: dir.path().join("state/activation.json"),
            _dir: dir,
            fake: FakeInstaller::new(script),
            notifier: Arc::new(CountingNotifier::default()),
        }
    }

    /// A daemon (re)start on the same state file and the same installed service.
    fn daemon(&self, install_on_start: bool) -> Activation {
        self.daemon_with(install_on_start, TEST_TIMEOUT)
    }

    fn daemon_with(&self, install_on_start: bool, timeout: Duration) -> Activation {
        let a = Activation::new(
            Some(self.fake.clone()),
            StateFile::new(&self.path),
            self.notifier.clone(),
            ActivationConfig {
                timeout,
                install_on_start,
            },
        );
        a.start();
        a
    }

    fn persisted(&self) -> usbipd::activation::ActivationState {
        StateFile::new(&self.path).load()
    }

    /// Waits until an install is held at the closed gate (its attempt's start is saved by then).
    async fn until_held(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.fake.held() == 0 {
            assert!(Instant::now() < deadline, "no install reached the gate");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// A test that fails with the gate closed must fail, not hang: the runtime's shutdown waits for
/// the blocking installer thread, so the gate opens when the rig goes.
impl Drop for Rig {
    fn drop(&mut self) {
        self.fake.open_gate();
    }
}

fn sudo_step() -> ApprovalStep {
    ApprovalStep::Command {
        command: "sudo /usr/bin/usbipd extension install".into(),
    }
}

async fn settle(a: &Activation, attempts: u64) {
    tokio::time::timeout(Duration::from_secs(30), a.wait_attempts(attempts))
        .await
        .expect("attempt finished");
}

#[tokio::test]
async fn success_switches_to_the_extension_and_a_restart_remembers_it() {
    let rig = Rig::new([Script::Succeed { signed: None }]);
    let a = rig.daemon(true);
    settle(&a, 1).await;
    assert_eq!(a.mode(), Mode::Extension);
    let s = rig.persisted();
    assert_eq!(s.status, InstallStatus::Completed);
    assert!(s.last_attempt.is_some());
    assert_eq!(
        s.service.as_ref().map(|l| l.identifier.as_str()),
        Some("usbipd-extension.service")
    );

    // Restart: the probe finds it running; nothing is installed again.
    let a = rig.daemon(true);
    settle(&a, 1).await;
    assert_eq!(a.mode(), Mode::Extension);
    assert_eq!(rig.fake.installs(), 1);
    assert_eq!(rig.persisted().status, InstallStatus::Completed);
}

#[tokio::test]
async fn a_completed_extension_found_stopped_at_restart_is_repaired() {
    let rig = Rig::new([Script::Succeed { signed: None }]);
    settle(&rig.daemon(true), 1).await;
    rig.fake.set_running(false);
    rig.fake.push(Script::Succeed { signed: None });
    let a = rig.daemon(true);
    settle(&a, 1).await;
    assert_eq!(a.mode(), Mode::Extension);
    assert_eq!(rig.fake.installs(), 2);
}

#[tokio::test]
async fn failure_keeps_fallback_and_is_retried_at_the_next_start() {
    let rig = Rig::new([Script::Fail("systemctl exploded".into())]);
    let a = rig.daemon(true);
    settle(&a, 1).await;
    assert_eq!(
        a.mode(),
        Mode::Fallback {
            reason: FallbackReason::Failed {
                message: "systemctl exploded".into()
            }
        }
    );
    assert_eq!(
        rig.persisted().status,
        InstallStatus::Failed {
            reason: "systemctl exploded".into()
        }
    );
    // A bind in the same run does not try again.
    assert!(!a.begin_operation().is_extension());
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(rig.fake.installs(), 1);

    // Restart: the failure is still known before the retry, and the retry succeeds.
    rig.fake.push(Script::Succeed { signed: None });
    let a = Activation::new(
        Some(rig.fake.clone()),
        StateFile::new(&rig.path),
        rig.notifier.clone(),
        ActivationConfig {
            timeout: TEST_TIMEOUT,
            install_on_start: true,
        },
    );
    assert!(matches!(
        a.snapshot().state.status,
        InstallStatus::Failed { .. }
    ));
    a.start();
    settle(&a, 1).await;
    assert_eq!(a.mode(), Mode::Extension);
    assert_eq!(rig.fake.installs(), 2);
    assert!(rig.notifier.shown().is_empty());
}

#[tokio::test]
async fn needs_approval_is_shown_once_and_never_prompted_again_across_restarts() {
    let rig = Rig::new([
        Script::NeedApproval(sudo_step()),
        Script::NeedApproval(sudo_step()),
        Script::NeedApproval(sudo_step()),
    ]);
    let a = rig.daemon(true);
    settle(&a, 1).await;
    assert_eq!(
        a.mode(),
        Mode::Fallback {
            reason: FallbackReason::NeedsApproval
        }
    );
    assert_eq!(rig.notifier.shown(), vec![sudo_step()]);
    assert_eq!(rig.fake.prompts(), 1);
    let s = rig.persisted();
    assert_eq!(s.status, InstallStatus::NeedsApproval { step: sudo_step() });
    assert!(s.approval_shown);

    // Two restarts: each retries quietly; no second message, no second prompt.
    for expected_installs in [2, 3] {
        let a = rig.daemon(true);
        settle(&a, 1).await;
        assert_eq!(rig.fake.installs(), expected_installs);
        assert!(!a.mode().is_extension());
    }
    assert_eq!(rig.notifier.shown().len(), 1);
    assert_eq!(rig.fake.prompts(), 1);

    // The user runs the command shown (`sudo usbipd extension install`); the next daemon
    // start finds the service running and installs nothing itself.
    rig.fake.push(Script::Succeed { signed: None });
    let installed = rig.fake.installs();
    usbipd::activation::manual::install(&*rig.fake, &StateFile::new(&rig.path)).unwrap();
    let a = rig.daemon(true);
    settle(&a, 1).await;
    assert_eq!(a.mode(), Mode::Extension);
    assert_eq!(rig.fake.installs(), installed + 1);
    assert_eq!(rig.persisted().status, InstallStatus::Completed);
    assert!(!rig.persisted().approval_shown);
}

#[tokio::test]
async fn timeout_stays_in_fallback_until_restart_and_keeps_a_late_success() {
    let rig = Rig::new([Script::Succeed { signed: None }]);
    rig.fake.close_gate();
    let a = rig.daemon_with(true, SHORT_TIMEOUT);
    let mut modes = a.subscribe();
    tokio::time::timeout(
        Duration::from_secs(30),
        modes.wait_for(|m| {
            *m == Mode::Fallback {
                reason: FallbackReason::TimedOut { after_secs: 0 },
            }
        }),
    )
    .await
    .expect("timed out mode")
    .unwrap();
    rig.until_held().await;
    assert_eq!(rig.persisted().status, InstallStatus::InProgress);
    // No new attempt in this run, whatever the operations.
    assert!(!a.begin_operation().is_extension());

    rig.fake.open_gate();
    settle(&a, 1).await;
    // The late success is recorded, but this run stays in fallback.
    assert!(!a.mode().is_extension());
    assert_eq!(rig.persisted().status, InstallStatus::Completed);
    assert_eq!(rig.fake.installs(), 1);

    let a = rig.daemon(true);
    settle(&a, 1).await;
    assert_eq!(a.mode(), Mode::Extension);
    assert_eq!(rig.fake.installs(), 1);
}

#[tokio::test]
async fn timeout_with_a_late_failure_is_retried_at_restart() {
    let rig = Rig::new([
        Script::Fail("late".into()),
        Script::Succeed { signed: None },
    ]);
    rig.fake.close_gate();
    let a = rig.daemon_with(true, SHORT_TIMEOUT);
    let mut modes = a.subscribe();
    tokio::time::timeout(
        Duration::from_secs(30),
        modes.wait_for(|m| {
            *m == Mode::Fallback {
                reason: FallbackReason::TimedOut { after_secs: 0 },
            }
        }),
    )
    .await
    .expect("timed out mode")
    .unwrap();
    rig.fake.open_gate();
    settle(&a, 1).await;
    assert!(matches!(
        rig.persisted().status,
        InstallStatus::Failed { .. }
    ));
    let a = rig.daemon(true);
    settle(&a, 1).await;
    assert_eq!(a.mode(), Mode::Extension);
}

#[tokio::test]
async fn an_attempt_interrupted_by_a_crash_is_retried() {
    let rig = Rig::new([Script::Succeed { signed: None }]);
    let mut s = usbipd::activation::ActivationState::default();
    s.begin_attempt(1);
    StateFile::new(&rig.path).save(&s).unwrap();
    let a = rig.daemon(false);
    assert_eq!(a.snapshot().state.status, InstallStatus::NotAttempted);
    a.begin_operation();
    settle(&a, 1).await;
    assert_eq!(a.mode(), Mode::Extension);
}

#[tokio::test]
async fn without_an_installer_nothing_is_attempted() {
    let dir = tempfile::tempdir().unwrap();
    let a = Activation::new(
        None,
        StateFile::new(dir.path().join("a.json")),
        Arc::new(CountingNotifier::default()),
        ActivationConfig::default(),
    );
    a.start();
    assert_eq!(
        a.begin_operation(),
        Mode::Fallback {
            reason: FallbackReason::Unavailable
        }
    );
    assert!(!dir.path().join("a.json").exists());
}

/// A stand-in for the daemon's bind: asks the activation for the mode at its start and keeps
/// what it got for its whole life, as the real operations do.
struct FakeBind {
    mode: Mode,
    transfers: u32,
}

impl FakeBind {
    fn transfer(&mut self) -> Result<&Mode, String> {
        self.transfers += 1;
        Ok(&self.mode)
    }
}

fn bind(a: &Activation) -> FakeBind {
    FakeBind {
        mode: a.begin_operation(),
        transfers: 0,
    }
}

#[tokio::test]
async fn binds_during_installation_use_fallback_and_later_binds_the_extension() {
    let rig = Rig::new([Script::Succeed { signed: None }]);
    rig.fake.close_gate();
    // Installation on first bind, not at start.
    let a = rig.daemon(false);
    assert_eq!(rig.fake.installs(), 0);

    // The gate is closed: a bind that waited for the installation would not return.
    let mut first = bind(&a);
    assert!(!first.mode.is_extension());
    let mut modes = a.subscribe();
    tokio::time::timeout(
        Duration::from_secs(30),
        modes.wait_for(|m| {
            *m == Mode::Fallback {
                reason: FallbackReason::Installing,
            }
        }),
    )
    .await
    .expect("installing mode")
    .unwrap();
    let mut second = bind(&a);
    assert_eq!(
        second.mode,
        Mode::Fallback {
            reason: FallbackReason::Installing
        }
    );
    first.transfer().unwrap();

    rig.fake.open_gate();
    settle(&a, 1).await;
    assert_eq!(rig.fake.installs(), 1);
    let mut third = bind(&a);
    assert_eq!(third.transfer().unwrap(), &Mode::Extension);
    // The operations started in fallback go on in fallback.
    assert!(!first.transfer().unwrap().is_extension());
    assert!(!second.transfer().unwrap().is_extension());
    assert_eq!(first.transfers, 2);
}

#[tokio::test]
async fn uninstall_by_hand_goes_back_to_not_attempted() {
    let rig = Rig::new([Script::Succeed { signed: None }]);
    let file = StateFile::new(&rig.path);
    usbipd::activation::manual::install(&*rig.fake, &file).unwrap();
    assert_eq!(file.load().status, InstallStatus::Completed);
    usbipd::activation::manual::uninstall(&*rig.fake, &file).unwrap();
    assert_eq!(file.load().status, InstallStatus::NotAttempted);
    assert_eq!(rig.fake.uninstalls(), 1);
    let snap = usbipd::activation::manual::offline_snapshot(Some(&*rig.fake), &file);
    assert!(!snap.mode.is_extension());
}

// ---- service definitions ------------------------------------------------------------------

/// The keys launchd.plist(5) documents, read back from a generated plist.
fn launchd_keys(text: &str) -> (String, Vec<String>, plist::Dictionary) {
    let v: plist::Value = plist::from_bytes(text.as_bytes()).expect("valid plist");
    let d = v.into_dictionary().expect("dict");
    let label = d
        .get("Label")
        .and_then(|v| v.as_string())
        .expect("Label")
        .to_string();
    let args = d
        .get("ProgramArguments")
        .and_then(|v| v.as_array())
        .expect("array")
        .iter()
        .map(|v| v.as_string().expect("string").to_string())
        .collect();
    assert_eq!(d.get("KeepAlive").and_then(|v| v.as_boolean()), Some(true));
    assert_eq!(d.get("RunAtLoad").and_then(|v| v.as_boolean()), Some(true));
    assert_eq!(
        d.get("ProcessType").and_then(|v| v.as_string()),
        Some("Interactive")
    );
    (label, args, d)
}

#[test]
fn launchd_plists_parse_back_with_the_documented_keys() {
    use usbipd::activation::service_files::launchd::{daemon_plist, plist};
    for exe in [
        "/opt/homebrew/bin/usbipd",
        "/Applications/A & <B>/usbipd \"x\"",
    ] {
        let (label, args, d) = launchd_keys(&plist(Path::new(exe)));
        assert_eq!(label, "dev.usbipd.extension");
        assert_eq!(args, [exe, "extension", "run"]);
        assert_eq!(
            d.get("ThrottleInterval")
                .and_then(|v| v.as_unsigned_integer()),
            Some(2)
        );
        assert_eq!(
            d.get("StandardErrorPath").and_then(|v| v.as_string()),
            Some("/Library/Logs/usbipd/extension.log")
        );
        let (label, args, d) = launchd_keys(&daemon_plist(Path::new(exe)));
        assert_eq!(label, "homebrew.mxcl.usbipd");
        assert_eq!(args, [exe, "server"]);
        assert_eq!(
            d.get("ThrottleInterval")
                .and_then(|v| v.as_unsigned_integer()),
            Some(10)
        );
    }
}

/// The formula's `service` block is what `sudo brew services start usbipd` turns into the
/// daemon's plist: it must say what the generated one says.
#[test]
fn the_homebrew_service_block_matches_the_daemon_plist() {
    let formula = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../packaging/homebrew/usbipd.rb.in"
    ))
    .unwrap();
    let block = formula
        .split("service do")
        .nth(1)
        .and_then(|rest| rest.split("\n  end").next())
        .expect("a service block");
    for line in [
        "run [opt_bin/\"usbipd\", \"server\"]",
        "keep_alive true",
        "require_root true",
        "process_type :interactive",
        "run_type :immediate",
    ] {
        assert!(
            block.contains(line),
            "service block lacks `{line}`:\n{block}"
        );
    }
}

#[cfg(target_os = "linux")] // systemd-analyze
#[test]
fn systemd_unit_passes_systemd_analyze_verify() {
    let exe = Path::new(env!("CARGO_BIN_EXE_usbipd"));
    let out = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .expect("systemd-analyze (Debian package systemd) is needed to verify the unit");
    assert!(out.status.success());
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("usbipd-extension.service");
    std::fs::write(&unit, usbipd::activation::service_files::systemd::unit(exe)).unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // Unknown keys are only warnings: none may mention our unit.
    assert!(!stderr.contains("usbipd-extension.service"), "{stderr}");
}

#[test]
fn service_file_command_prints_the_generated_definitions() {
    let exe = env!("CARGO_BIN_EXE_usbipd");
    let out = std::process::Command::new(exe)
        .args(["service-file", "systemd", "--exe", "/usr/bin/usbipd"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        usbipd::activation::service_files::systemd::unit(Path::new("/usr/bin/usbipd"))
    );
    let out = std::process::Command::new(exe)
        .args(["service-file", "launchd", "--exe", "relative/usbipd"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[cfg(target_os = "linux")] // scripts/package.sh uses GNU tar and sha256sum
#[test]
fn package_script_builds_the_tarball_and_formula_from_the_binary() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = tempfile::tempdir().unwrap();
    // A small stand-in that runs the real binary keeps the tarball (and the test) small.
    let stub = out.path().join("usbipd-stub");
    std::fs::write(
        &stub,
        format!(
            "#!/bin/sh\nexec '{}' \"$@\"\n",
            env!("CARGO_BIN_EXE_usbipd")
        ),
    )
    .unwrap();
    let mut perms = std::fs::metadata(&stub).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&stub, perms).unwrap();
    let dist = out.path().join("dist");
    let run = || {
        let o = std::process::Command::new("bash")
            .arg(root.join("scripts/package.sh"))
            .arg(&stub)
            .arg(&dist)
            .env("TARGET", "test-target")
            .env("SOURCE_DATE_EPOCH", "1")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    run();
    let version = env!("CARGO_PKG_VERSION");
    let name = format!("usbipd-{version}-test-target");
    let tarball = dist.join(format!("{name}.tar.gz"));
    let first = std::fs::read(&tarball).unwrap();
    let listing = std::process::Command::new("tar")
        .arg("tzf")
        .arg(&tarball)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    for entry in [
        "bin/usbipd",
        "lib/systemd/system/usbipd-extension.service",
        "share/usbipd/dev.usbipd.extension.plist",
        "share/usbipd/homebrew.mxcl.usbipd.plist",
        "share/man/man1/usbipd.1",
        "share/man/man1/usbipd-bind.1",
        "share/bash-completion/completions/usbipd",
        "share/zsh/site-functions/_usbipd",
        "share/fish/vendor_completions.d/usbipd.fish",
        "share/doc/usbipd/LICENSE-MIT",
        "share/doc/usbipd/LICENSE-APACHE",
    ] {
        assert!(listing.contains(&format!("{name}/{entry}")), "{listing}");
    }
    let formula = std::fs::read_to_string(dist.join("usbipd.rb")).unwrap();
    let sha = std::fs::read_to_string(dist.join(format!("{name}.tar.gz.sha256"))).unwrap();
    let sha = sha.split_whitespace().next().unwrap();
    assert!(formula.contains(&format!("sha256 \"{sha}\"")), "{formula}");
    assert!(formula.contains(&format!("version \"{version}\"")));
    assert!(!formula.contains('@'), "unfilled placeholder: {formula}");
    // Reproducible: a second run gives the same bytes.
    run();
    assert_eq!(std::fs::read(&tarball).unwrap(), first);
}
