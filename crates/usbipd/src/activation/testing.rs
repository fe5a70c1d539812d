//! A scripted `Installer` for tests: each install answers the next scripted result, may wait
//! for a gate first (to hold an installation "in progress"), and counts prompts.
//!
//! Test-only by purpose, but public so integration tests can drive the controller with it.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};

use super::controller::Notifier;
use super::installer::{InstallError, Installed, Installer, Probe};
use super::state::{ApprovalStep, InstallerKind, Prompt, ServiceLocation};

/// One scripted installation result.
#[derive(Debug, Clone)]
pub enum Script {
    Succeed { signed: Option<bool> },
    Fail(String),
    NeedApproval(ApprovalStep),
}

#[derive(Default)]
struct State {
    script: VecDeque<Script>,
    installed: bool,
    running: bool,
    gate_closed: bool,
    /// Installs waiting at the closed gate now.
    held: u32,
    installs: u32,
    prompts: u32,
    uninstalls: u32,
}

/// The double. Clone the `Arc` to keep a handle after handing it to the controller.
#[derive(Default)]
pub struct FakeInstaller {
    state: Mutex<State>,
    gate: Condvar,
}

impl FakeInstaller {
    pub fn new(script: impl IntoIterator<Item = Script>) -> Arc<FakeInstaller> {
        let f = FakeInstaller::default();
        f.lock().script = script.into_iter().collect();
        Arc::new(f)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends results for later attempts (e.g. after a simulated restart).
    pub fn push(&self, s: Script) {
        self.lock().script.push_back(s);
    }

    /// Holds every install until `open_gate`.
    pub fn close_gate(&self) {
        self.lock().gate_closed = true;
    }

    pub fn open_gate(&self) {
        self.lock().gate_closed = false;
        self.gate.notify_all();
    }

    /// Installs waiting at the closed gate now: once one is, the attempt has saved its start.
    pub fn held(&self) -> u32 {
        self.lock().held
    }

    pub fn installs(&self) -> u32 {
        self.lock().installs
    }

    /// Installs that were allowed to prompt and answered "needs approval": prompts the user saw.
    pub fn prompts(&self) -> u32 {
        self.lock().prompts
    }

    pub fn uninstalls(&self) -> u32 {
        self.lock().uninstalls
    }

    /// Simulates the extension stopping (or the service removed by hand).
    pub fn set_running(&self, running: bool) {
        self.lock().running = running;
    }
}

impl Installer for FakeInstaller {
    fn kind(&self) -> InstallerKind {
        InstallerKind::Systemd
    }

    fn location(&self) -> ServiceLocation {
        ServiceLocation {
            kind: InstallerKind::Systemd,
            identifier: "usbipd-extension.service".into(),
            path: PathBuf::from("/etc/systemd/system/usbipd-extension.service"),
        }
    }

    fn probe(&self) -> Probe {
        let s = self.lock();
        if s.installed {
            Probe::Installed { running: s.running }
        } else {
            Probe::NotInstalled
        }
    }

    fn install(&self, prompt: Prompt) -> Result<Installed, InstallError> {
        let mut s = self.lock();
        s.held += 1;
        while s.gate_closed {
            s = self.gate.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        s.held -= 1;
        s.installs += 1;
        let next = s
            .script
            .pop_front()
            .unwrap_or(Script::Fail("no scripted result".into()));
        match next {
            Script::Succeed { signed } => {
                s.installed = true;
                s.running = true;
                Ok(Installed {
                    location: self.location(),
                    signed,
                })
            }
            Script::Fail(reason) => Err(InstallError::Failed(reason)),
            Script::NeedApproval(step) => {
                if prompt == Prompt::Allowed {
                    s.prompts += 1;
                }
                Err(InstallError::NeedsApproval(step))
            }
        }
    }

    fn uninstall(&self) -> Result<(), InstallError> {
        let mut s = self.lock();
        s.uninstalls += 1;
        s.installed = false;
        s.running = false;
        Ok(())
    }
}

/// Counts the approval messages shown.
#[derive(Default)]
pub struct CountingNotifier {
    shown: Mutex<Vec<ApprovalStep>>,
}

impl CountingNotifier {
    pub fn shown(&self) -> Vec<ApprovalStep> {
        self.shown.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Notifier for CountingNotifier {
    fn approval_needed(&self, step: &ApprovalStep) {
        self.shown
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(step.clone());
    }
}
