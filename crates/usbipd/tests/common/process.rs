//! Helpers for tests that run the real `usbipd` binary as a child process.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A loopback port free at the time of asking.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills, on drop, the extension whose pid a test wrote to `<dir>/ext.pid`, so that a failed
/// assertion never leaves an extension running.
pub struct Reaper(pub PathBuf);

impl Drop for Reaper {
    fn drop(&mut self) {
        kill_recorded_extension(&self.0);
    }
}

/// SIGKILL to the pid in `<dir>/ext.pid`, if there is one.
pub fn kill_recorded_extension(dir: &Path) {
    if let Ok(pid) = std::fs::read_to_string(dir.join("ext.pid")) {
        if let Ok(pid) = pid.trim().parse::<i32>() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// `usbipd server --listen 127.0.0.1:PORT` with the embedded extension on a virtual bus, its
/// files under `dir`: control.sock, ext.sock, claims.json and bus.json (which the caller
/// writes). Callers add their own options, stdout and stderr.
pub fn embedded_daemon(dir: &Path, port: u16) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_usbipd"));
    command
        .args(["server", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--control")
        .arg(dir.join("control.sock"))
        .args(["--extension", "embedded", "--extension-socket"])
        .arg(dir.join("ext.sock"))
        .arg("--extension-state")
        .arg(dir.join("claims.json"))
        .arg("--virtual-bus")
        .arg(dir.join("bus.json"));
    command
}

/// Fails the test, showing the command's stderr, unless it exited with success.
pub fn assert_succeeded(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
