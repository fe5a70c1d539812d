//! Helpers for tests that run the real `usbipd` binary as a child process.

use std::path::{Path, PathBuf};

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
