//! The activation controller the daemon holds: starts installation in the background on first
//! use, answers "which mode do new operations use" at once, switches to the extension when an
//! installation completes, and gives up for this run after the timeout.
//!
//! It never blocks or delays an operation: `mode()` and `begin_operation()` only read a watch
//! channel and maybe spawn a task. It never revokes a mode already handed out: an operation that
//! started in fallback keeps what it opened.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{info, warn};

use super::installer::{InstallError, Installer, Probe};
use super::state::{ActivationState, ApprovalStep, Effect, InstallStatus, InstallerKind, Outcome};
use super::state_file::StateFile;

/// How long an installation may take before the daemon stays in fallback until its restart.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// What new operations use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Mode {
    /// The extension claims devices.
    Extension,
    /// The daemon opens devices directly, as far as its own privileges allow.
    Fallback { reason: FallbackReason },
}

impl Mode {
    pub fn is_extension(&self) -> bool {
        matches!(self, Mode::Extension)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FallbackReason {
    /// No installer on this platform or in this configuration.
    Unavailable,
    /// Nothing tried yet in this run.
    NotInstalled,
    Installing,
    Failed {
        message: String,
    },
    NeedsApproval,
    /// Installation took longer than the timeout: fallback until the daemon restarts.
    TimedOut {
        after_secs: u64,
    },
}

#[derive(Debug, Clone)]
pub struct ActivationConfig {
    pub timeout: Duration,
    /// Start installing when the daemon starts (otherwise at the first `bind`).
    pub install_on_start: bool,
}

impl Default for ActivationConfig {
    fn default() -> Self {
        ActivationConfig {
            timeout: DEFAULT_TIMEOUT,
            install_on_start: true,
        }
    }
}

/// Tells the user what they must do. Called once per approval episode, never again.
pub trait Notifier: Send + Sync {
    fn approval_needed(&self, step: &ApprovalStep);
}

/// Logs the approval message (the daemon's log is where a service's user looks).
pub struct LogNotifier;

impl Notifier for LogNotifier {
    fn approval_needed(&self, step: &ApprovalStep) {
        warn!(
            "{}",
            super::status::approval_message(step).replace('\n', " ")
        );
    }
}

/// What `usbipd status` needs from the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub state: ActivationState,
    pub mode: Mode,
    pub installer: Option<InstallerKind>,
}

struct Inner {
    installer: Option<Arc<dyn Installer>>,
    file: StateFile,
    state: Mutex<ActivationState>,
    mode: watch::Sender<Mode>,
    /// Attempts finished (including ones that ended after the timeout).
    finished: watch::Sender<u64>,
    tried_this_run: AtomicBool,
    notifier: Arc<dyn Notifier>,
    config: ActivationConfig,
}

/// The daemon's handle; cheap to clone.
#[derive(Clone)]
pub struct Activation {
    inner: Arc<Inner>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Activation {
    /// Reads the state file. Call `start` once the runtime runs to begin the daemon-start attempt.
    pub fn new(
        installer: Option<Arc<dyn Installer>>,
        file: StateFile,
        notifier: Arc<dyn Notifier>,
        config: ActivationConfig,
    ) -> Activation {
        let state = file.load().after_restart();
        let reason = if installer.is_some() {
            FallbackReason::NotInstalled
        } else {
            FallbackReason::Unavailable
        };
        let (mode, _) = watch::channel(Mode::Fallback { reason });
        let (finished, _) = watch::channel(0);
        Activation {
            inner: Arc::new(Inner {
                installer,
                file,
                state: Mutex::new(state),
                mode,
                finished,
                tried_this_run: AtomicBool::new(false),
                notifier,
                config,
            }),
        }
    }

    /// Daemon start: begin the background attempt (probe, then install if needed).
    pub fn start(&self) {
        if self.inner.config.install_on_start {
            self.try_attempt();
        }
    }

    /// The mode new operations use now.
    pub fn mode(&self) -> Mode {
        self.inner.mode.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Mode> {
        self.inner.mode.subscribe()
    }

    /// Called by an operation that wants a device (`bind`): on first use starts the
    /// installation in the background, and returns the mode to use for this operation now.
    pub fn begin_operation(&self) -> Mode {
        self.try_attempt();
        self.mode()
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            state: lock(&self.inner.state).clone(),
            mode: self.mode(),
            installer: self.inner.installer.as_ref().map(|i| i.kind()),
        }
    }

    pub fn state_file(&self) -> &std::path::Path {
        self.inner.file.path()
    }

    /// Waits until `n` attempts have finished (tests, and `usbipd extension status --wait`).
    pub async fn wait_attempts(&self, n: u64) {
        let mut rx = self.inner.finished.subscribe();
        let _ = rx.wait_for(|&done| done >= n).await;
    }

    /// Starts an attempt unless one was made in this run, or there is no installer.
    fn try_attempt(&self) {
        let inner = &self.inner;
        let Some(installer) = inner.installer.clone() else {
            return;
        };
        if inner.tried_this_run.swap(true, Ordering::SeqCst) {
            return;
        }
        let inner = inner.clone();
        tokio::spawn(async move {
            run_attempt(inner, installer).await;
        });
    }
}

fn lock(m: &Mutex<ActivationState>) -> MutexGuard<'_, ActivationState> {
    // The state is plain data: a panic elsewhere cannot leave it half-written.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the blocking part of an attempt found.
enum AttemptEnd {
    AlreadyRunning,
    Finished(Outcome),
}

async fn run_attempt(inner: Arc<Inner>, installer: Arc<dyn Installer>) {
    if !inner.mode.borrow().is_extension() {
        inner.mode.send_replace(Mode::Fallback {
            reason: FallbackReason::Installing,
        });
    }
    let blocking_inner = inner.clone();
    let mut handle = tokio::task::spawn_blocking(move || attempt(&blocking_inner, &*installer));
    let (joined, in_time) = match tokio::time::timeout(inner.config.timeout, &mut handle).await {
        Ok(joined) => (joined, true),
        Err(_) => {
            warn!(
                timeout_s = inner.config.timeout.as_secs_f64(),
                "extension installation takes too long: compatibility mode until the daemon restarts"
            );
            inner.mode.send_replace(Mode::Fallback {
                reason: FallbackReason::TimedOut {
                    after_secs: inner.config.timeout.as_secs(),
                },
            });
            // Keep what the attempt finally learns (a late success is used after a restart).
            (handle.await, false)
        }
    };
    let end = match joined {
        Ok(end) => end,
        Err(e) => AttemptEnd::Finished(Outcome::Failed(format!("installer panicked: {e}"))),
    };
    let mode = match end {
        AttemptEnd::AlreadyRunning => Mode::Extension,
        AttemptEnd::Finished(outcome) => {
            let (effect, persisted) = {
                let mut state = lock(&inner.state);
                let effect = state.finish(outcome.clone());
                (effect, state.clone())
            };
            persist(&inner.file, persisted).await;
            if let Effect::ShowApproval(step) = effect {
                inner.notifier.approval_needed(&step);
            }
            match outcome {
                Outcome::Installed { signed, .. } => {
                    match signed {
                        Some(false) => info!("extension installed, unsigned (development mode)"),
                        _ => info!("extension installed"),
                    }
                    Mode::Extension
                }
                Outcome::Failed(message) => {
                    warn!(error = %message, "extension installation failed: compatibility mode");
                    Mode::Fallback {
                        reason: FallbackReason::Failed { message },
                    }
                }
                Outcome::NeedsApproval(_) => Mode::Fallback {
                    reason: FallbackReason::NeedsApproval,
                },
            }
        }
    };
    if in_time {
        inner.mode.send_replace(mode);
    }
    inner.finished.send_modify(|n| *n += 1);
}

/// The blocking part: probe, and install unless the extension already runs.
fn attempt(inner: &Inner, installer: &dyn Installer) -> AttemptEnd {
    if installer.probe() == (Probe::Installed { running: true }) {
        let persisted = {
            let mut state = lock(&inner.state);
            let was_completed = state.status == InstallStatus::Completed;
            state.found_running(installer.location());
            (!was_completed).then(|| state.clone())
        };
        if let Some(s) = persisted {
            save(&inner.file, &s);
        }
        return AttemptEnd::AlreadyRunning;
    }
    let (prompt, persisted) = {
        let mut state = lock(&inner.state);
        let prompt = state.prompt_policy();
        state.begin_attempt(now());
        (prompt, state.clone())
    };
    save(&inner.file, &persisted);
    info!(
        installer = installer.kind().as_str(),
        "installing the extension in the background"
    );
    AttemptEnd::Finished(match installer.install(prompt) {
        Ok(done) => Outcome::Installed {
            location: done.location,
            signed: done.signed,
        },
        Err(InstallError::Failed(reason)) => Outcome::Failed(reason),
        Err(InstallError::NeedsApproval(step)) => Outcome::NeedsApproval(step),
    })
}

fn save(file: &StateFile, state: &ActivationState) {
    if let Err(e) = file.save(state) {
        warn!(path = %file.path().display(), error = %e, "cannot write the activation state");
    }
}

async fn persist(file: &StateFile, state: ActivationState) {
    let file = file.clone();
    let _ = tokio::task::spawn_blocking(move || save(&file, &state)).await;
}
