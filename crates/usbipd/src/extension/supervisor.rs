//! Embedded mode: the daemon runs the extension as its own child process and restarts it when
//! it dies, with exponential backoff (capped) that resets once a child has run long enough.
//! An extension already answering on the socket (one left running by a previous daemon) is
//! adopted and watched instead of started twice.
//!
//! It never kills an extension it did not start, and never restarts in a tight loop.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::ipc::{client, Request};

/// Restart delays: `initial`, doubled after each quick death up to `max`; back to `initial`
/// after a child that lived at least `stable`.
#[derive(Debug, Clone)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    pub stable: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration, stable: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            stable,
            next: initial,
        }
    }

    /// The delay before restarting a child that ran for `ran`.
    pub fn after_exit(&mut self, ran: Duration) -> Duration {
        if ran >= self.stable {
            self.next = self.initial;
        }
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff::new(
            Duration::from_millis(100),
            Duration::from_secs(30),
            Duration::from_secs(10),
        )
    }
}

/// How to start the extension.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// The extension's IPC socket, to adopt a running one.
    pub socket: PathBuf,
}

/// A running supervisor.
pub struct Supervisor {
    task: JoinHandle<()>,
    child_pid: Arc<AtomicU32>,
}

impl Supervisor {
    pub fn start(spec: ChildSpec, backoff: Backoff) -> Supervisor {
        let child_pid = Arc::new(AtomicU32::new(0));
        let task = tokio::spawn(supervise(spec, backoff, child_pid.clone()));
        Supervisor { task, child_pid }
    }

    /// The pid of the child now running, if this supervisor started it.
    pub fn child_pid(&self) -> Option<u32> {
        match self.child_pid.load(Ordering::SeqCst) {
            0 => None,
            pid => Some(pid),
        }
    }

    /// Stops supervising and asks the child to stop (SIGTERM: it keeps its claims on disk and
    /// the next start restores them).
    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
        // Read after the task stopped: no restart can race with the signal.
        let pid = self.child_pid.load(Ordering::SeqCst);
        if pid != 0 {
            if let Ok(pid) = i32::try_from(pid) {
                let pid = nix::unistd::Pid::from_raw(pid);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
                for _ in 0..100 {
                    if nix::sys::signal::kill(pid, None).is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }
}

async fn answers(spec: &ChildSpec) -> bool {
    // Bounded: a socket that accepts but never answers is not an extension that runs.
    matches!(
        tokio::time::timeout(
            Duration::from_secs(2),
            client::call(&spec.socket, &Request::Status)
        )
        .await,
        Ok(Ok(_))
    )
}

/// The supervisor as activation's embedded installer drives it (`--extension auto` where
/// neither systemd nor launchd can be used): starting it is "installing", and that returns
/// once the child answers on its socket.
///
/// Its methods block: call them from blocking threads (the installers' contract), never from
/// an async task, except [`EmbeddedSupervisor::shutdown`].
pub struct EmbeddedSupervisor {
    spec: ChildSpec,
    runtime: tokio::runtime::Handle,
    running: std::sync::Mutex<Option<Supervisor>>,
    ready_within: Duration,
    /// Tests only: the installation waits for this file to exist before starting the child,
    /// so that a test sees the compatibility mode first however slow the machine is.
    gate: Option<PathBuf>,
}

impl EmbeddedSupervisor {
    pub fn new(
        spec: ChildSpec,
        runtime: tokio::runtime::Handle,
        gate: Option<PathBuf>,
    ) -> EmbeddedSupervisor {
        EmbeddedSupervisor {
            spec,
            runtime,
            running: std::sync::Mutex::new(None),
            // Below activation's 30 s, so that a child that never answers is a failure
            // with a reason rather than a timeout.
            ready_within: Duration::from_secs(20),
            gate,
        }
    }

    fn running(&self) -> std::sync::MutexGuard<'_, Option<Supervisor>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops the child at the daemon's shutdown.
    pub async fn shutdown(&self) {
        let taken = self.running().take();
        if let Some(s) = taken {
            s.stop().await;
        }
    }
}

/// The daemon's supervisor of the extension child process, as the embedded installer drives it.
pub trait SupervisedChild: Send + Sync {
    /// Starts supervising (idempotent) and returns once the child is ready, or why it is not.
    fn start(&self) -> Result<(), String>;
    /// The child runs and answered its readiness check.
    fn is_running(&self) -> bool;
    /// Stops the child and the supervision.
    fn stop(&self);
}

impl SupervisedChild for EmbeddedSupervisor {
    fn start(&self) -> Result<(), String> {
        if let Some(gate) = &self.gate {
            // Bounded, so that a test that never opens it cannot hold the daemon's exit.
            let deadline = Instant::now() + Duration::from_secs(60);
            while !gate.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        {
            let mut running = self.running();
            if running.is_none() {
                let _enter = self.runtime.enter();
                *running = Some(Supervisor::start(self.spec.clone(), Backoff::default()));
            }
        }
        let deadline = Instant::now() + self.ready_within;
        loop {
            if self.runtime.block_on(answers(&self.spec)) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "the extension did not answer on {} within {} s (see the daemon's log)",
                    self.spec.socket.display(),
                    self.ready_within.as_secs()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn is_running(&self) -> bool {
        self.running().is_some()
            && std::os::unix::net::UnixStream::connect(&self.spec.socket).is_ok()
    }

    fn stop(&self) {
        let taken = self.running().take();
        if let Some(s) = taken {
            self.runtime.block_on(s.stop());
        }
    }
}

async fn supervise(spec: ChildSpec, mut backoff: Backoff, child_pid: Arc<AtomicU32>) {
    loop {
        if answers(&spec).await {
            info!(socket = %spec.socket.display(), "adopting the extension already running");
            while answers(&spec).await {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            warn!("the adopted extension stopped answering; starting one");
        }
        let started = Instant::now();
        let mut command = tokio::process::Command::new(&spec.program);
        command.args(&spec.args).kill_on_drop(false);
        let status = match command.spawn() {
            Ok(mut child) => {
                let pid = child.id().unwrap_or(0);
                child_pid.store(pid, Ordering::SeqCst);
                info!(pid, "extension started");
                let status = child.wait().await;
                child_pid.store(0, Ordering::SeqCst);
                status.map(|s| s.to_string())
            }
            Err(e) => Err(e),
        };
        let delay = backoff.after_exit(started.elapsed());
        match status {
            Ok(s) => {
                warn!(status = %s, restart_in_ms = delay.as_millis() as u64, "extension exited; restarting")
            }
            Err(e) => {
                warn!(error = %e, restart_in_ms = delay.as_millis() as u64, "extension could not be started; retrying")
            }
        }
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_resets_after_a_stable_run() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(1000), Duration::from_secs(5));
        let quick = ms(10);
        let delays: Vec<u128> = (0..6).map(|_| b.after_exit(quick).as_millis()).collect();
        assert_eq!(delays, vec![100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.after_exit(Duration::from_secs(6)), ms(100));
        assert_eq!(b.after_exit(quick), ms(200));
    }
}
