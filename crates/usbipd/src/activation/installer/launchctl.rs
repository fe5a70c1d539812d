//! `launchctl` as the launchd installer and `usbipd status` use it: `bootstrap system <plist>`,
//! `bootout system/<label>`, `kickstart`, and `print system/<label>` read back into a
//! [`ServiceState`] (state, pid, runs, last exit code) by a pure parser.
//!
//! Platform-neutral on purpose: it only runs `launchctl` through `CommandRunner`, so the
//! sequences and the parser are tested on Linux against recorded outputs (`fixtures/`).

use std::path::Path;
use std::sync::Arc;

use super::{CommandOutput, CommandRunner, ServiceState};

/// `launchctl` exits with this when the service is not loaded in the domain (`print`,
/// `bootout`, `kickstart`: "Could not find service", ESRCH in launchd's numbering).
pub const NOT_FOUND: i32 = 113;
/// `bootout` of a service that is not loaded, on older macOS ("No such process").
pub const NO_SUCH_PROCESS: i32 = 3;

/// The `launchctl print system/<label>` output as fields, or `None` when it is not a service
/// description (the first line is `<domain>/<label> = {`). Only top-level keys count: nested
/// dictionaries (coalitions, sockets, event triggers) have keys named `state` too.
pub fn parse_print(text: &str) -> Option<ServiceState> {
    let mut lines = text.lines();
    let target = lines
        .by_ref()
        .find(|l| !l.trim().is_empty())?
        .trim()
        .strip_suffix("= {")?
        .trim()
        .to_string();
    if !target.contains('/') {
        return None;
    }
    let mut state = ServiceState {
        manager: "launchd".to_string(),
        name: target,
        state: String::new(),
        running: false,
        pid: None,
        runs: None,
        last_exit: None,
    };
    let mut depth = 0usize;
    for line in lines {
        let line = line.trim();
        if line.ends_with('{') {
            depth += 1;
            continue;
        }
        if line == "}" {
            if depth == 0 {
                break;
            }
            depth -= 1;
            continue;
        }
        if depth > 0 {
            continue;
        }
        let Some((key, value)) = line.split_once(" = ") else {
            continue;
        };
        let value = value.trim();
        match key.trim() {
            "state" => state.state = value.to_string(),
            "pid" => state.pid = value.parse().ok(),
            "runs" => state.runs = value.parse().ok(),
            "last exit code" => state.last_exit = Some(exit_text(value)),
            "last terminating signal" => state.last_exit = Some(format!("signal {value}")),
            _ => {}
        }
    }
    state.running = state.state == "running";
    (!state.state.is_empty()).then_some(state)
}

/// "0" → "exit code 0"; "78: EX_CONFIG" → "exit code 78 (EX_CONFIG)"; "(never exited)" as is.
fn exit_text(value: &str) -> String {
    if value.starts_with('(') {
        return value.trim_matches(|c| c == '(' || c == ')').to_string();
    }
    match value.split_once(':') {
        Some((code, name)) => format!("exit code {} ({})", code.trim(), name.trim()),
        None => format!("exit code {value}"),
    }
}

/// Why a `launchctl` command failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LaunchctlError {
    /// The tool could not be run at all.
    Spawn(String),
    /// It ran and refused: its exit code and stderr.
    Refused(CommandOutput),
}

impl LaunchctlError {
    pub fn describe(&self) -> String {
        match self {
            LaunchctlError::Spawn(e) => format!("cannot run launchctl: {e}"),
            LaunchctlError::Refused(out) => out.describe(),
        }
    }

    /// A background item the user switched off (or never allowed) refuses to load.
    pub fn not_permitted(&self) -> bool {
        matches!(self, LaunchctlError::Refused(out) if out.stderr.contains("Operation not permitted"))
    }
}

/// `launchctl` in the system domain.
#[derive(Clone)]
pub struct Launchctl {
    runner: Arc<dyn CommandRunner>,
}

impl Launchctl {
    pub fn new(runner: Arc<dyn CommandRunner>) -> Launchctl {
        Launchctl { runner }
    }

    fn run(&self, args: &[&str]) -> Result<CommandOutput, LaunchctlError> {
        self.runner
            .run("launchctl", args)
            .map_err(|e| LaunchctlError::Spawn(e.to_string()))
    }

    fn ok(&self, args: &[&str]) -> Result<(), LaunchctlError> {
        let out = self.run(args)?;
        if out.success() {
            Ok(())
        } else {
            Err(LaunchctlError::Refused(out))
        }
    }

    /// The service's state; `Ok(None)` when it is not loaded.
    pub fn print(&self, label: &str) -> Result<Option<ServiceState>, LaunchctlError> {
        let out = self.run(&["print", &target(label)])?;
        if out.code == Some(NOT_FOUND) || out.stderr.contains("Could not find service") {
            return Ok(None);
        }
        if !out.success() {
            return Err(LaunchctlError::Refused(out));
        }
        Ok(parse_print(&out.stdout))
    }

    /// Loads the plist into the system domain (it starts now if it says `RunAtLoad`).
    pub fn bootstrap(&self, plist: &Path) -> Result<(), LaunchctlError> {
        self.ok(&["bootstrap", "system", &plist.to_string_lossy()])
    }

    /// Unloads the service (stopping it); one that is not loaded is fine.
    pub fn bootout(&self, label: &str) -> Result<(), LaunchctlError> {
        match self.ok(&["bootout", &target(label)]) {
            Err(LaunchctlError::Refused(out))
                if matches!(out.code, Some(NOT_FOUND) | Some(NO_SUCH_PROCESS)) =>
            {
                Ok(())
            }
            other => other,
        }
    }

    /// Clears a `disable` override, which would make `bootstrap` refuse the service.
    pub fn enable(&self, label: &str) -> Result<(), LaunchctlError> {
        self.ok(&["enable", &target(label)])
    }

    /// Starts a loaded service that is not running (a no-op for a running one).
    pub fn kickstart(&self, label: &str) -> Result<(), LaunchctlError> {
        self.ok(&["kickstart", &target(label)])
    }
}

/// `system/<label>`.
pub fn target(label: &str) -> String {
    format!("system/{label}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUNNING: &str = include_str!("fixtures/print-running.txt");
    const CRASHED: &str = include_str!("fixtures/print-crashed.txt");
    const NEVER_RAN: &str = include_str!("fixtures/print-never-ran.txt");
    const KILLED: &str = include_str!("fixtures/print-killed.txt");

    #[test]
    fn a_running_service_has_its_pid_runs_and_last_exit() {
        let s = parse_print(RUNNING).unwrap();
        assert_eq!(s.name, "system/dev.usbipd.extension");
        assert_eq!(s.state, "running");
        assert!(s.running);
        assert_eq!(s.pid, Some(412));
        assert_eq!(s.runs, Some(3));
        assert_eq!(s.last_exit.as_deref(), Some("exit code 0"));
    }

    #[test]
    fn nested_dictionaries_do_not_count() {
        // The coalitions say `state = active` and `active count = 1` after the top-level
        // `state`; a crashed service waiting for its respawn is not running.
        let s = parse_print(CRASHED).unwrap();
        assert_eq!(s.state, "spawn scheduled");
        assert!(!s.running);
        assert_eq!(s.pid, None);
        assert_eq!(s.runs, Some(17));
        assert_eq!(s.last_exit.as_deref(), Some("exit code 78 (EX_CONFIG)"));
    }

    #[test]
    fn never_ran_and_killed_read_as_launchd_says_them() {
        let s = parse_print(NEVER_RAN).unwrap();
        assert_eq!(s.name, "system/homebrew.mxcl.usbipd");
        assert_eq!((s.state.as_str(), s.running), ("not running", false));
        assert_eq!(s.runs, Some(0));
        assert_eq!(s.last_exit.as_deref(), Some("never exited"));
        let s = parse_print(KILLED).unwrap();
        assert_eq!(s.last_exit.as_deref(), Some("signal Killed: 9"));
    }

    #[test]
    fn what_is_not_a_service_description_is_none() {
        assert_eq!(parse_print(""), None);
        assert_eq!(
            parse_print(include_str!("fixtures/print-not-loaded.stderr.txt")),
            None
        );
        // A domain's own description (no `state` at its top level) is not a service.
        assert_eq!(parse_print("system = {\n\ttype = system\n}\n"), None);
    }
}
