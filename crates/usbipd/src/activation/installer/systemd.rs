//! The systemd installer: writes the generated unit to /etc/systemd/system, reloads, and
//! `enable --now`s it. `systemctl` waits for the unit's READY=1 (Type=notify), so a successful
//! install means the extension is ready. It restarts a running extension only when the unit
//! file changed (a repair), never right after starting it, and reloads systemd once per change
//! (none when the unit is as it should be).
//!
//! It never asks for a password: when not root it answers "needs approval" with the exact
//! sudo command.

use std::path::PathBuf;
use std::sync::Arc;

use super::{
    sudo_command, sudo_install_command, CommandRunner, InstallError, Installed, Installer,
    InstallerKind, Probe, Prompt, ServiceLocation,
};
use crate::activation::service_files::{systemd::unit, SYSTEMD_UNIT};

pub struct SystemdInstaller {
    exe: PathBuf,
    root: bool,
    unit_dir: PathBuf,
    runner: Arc<dyn CommandRunner>,
}

impl SystemdInstaller {
    pub fn new(exe: PathBuf, root: bool, runner: Arc<dyn CommandRunner>) -> Self {
        SystemdInstaller {
            exe,
            root,
            unit_dir: PathBuf::from("/etc/systemd/system"),
            runner,
        }
    }

    /// Puts the unit somewhere else (tests).
    pub fn with_unit_dir(mut self, dir: PathBuf) -> Self {
        self.unit_dir = dir;
        self
    }

    fn unit_path(&self) -> PathBuf {
        self.unit_dir.join(SYSTEMD_UNIT)
    }

    fn installed(&self) -> Installed {
        Installed {
            location: self.location(),
            signed: None,
        }
    }

    fn is_active(&self) -> bool {
        self.runner
            .run("systemctl", &["is-active", "--quiet", SYSTEMD_UNIT])
            .map(|o| o.success())
            .unwrap_or(false)
    }

    fn systemctl(&self, args: &[&str]) -> Result<(), InstallError> {
        let out = self
            .runner
            .run("systemctl", args)
            .map_err(|e| InstallError::Failed(format!("cannot run systemctl: {e}")))?;
        if out.success() {
            Ok(())
        } else {
            Err(InstallError::Failed(format!(
                "systemctl {} failed ({})",
                args.join(" "),
                out.describe()
            )))
        }
    }
}

impl Installer for SystemdInstaller {
    fn kind(&self) -> InstallerKind {
        InstallerKind::Systemd
    }

    fn location(&self) -> ServiceLocation {
        ServiceLocation {
            kind: InstallerKind::Systemd,
            identifier: SYSTEMD_UNIT.to_string(),
            path: self.unit_path(),
        }
    }

    fn probe(&self) -> Probe {
        if !self.unit_path().exists() {
            return Probe::NotInstalled;
        }
        Probe::Installed {
            running: self.is_active(),
        }
    }

    fn install(&self, _prompt: Prompt) -> Result<Installed, InstallError> {
        if !self.root {
            return Err(InstallError::NeedsApproval(sudo_install_command(&self.exe)));
        }
        let path = self.unit_path();
        let text = unit(&self.exe);
        let on_disk = std::fs::read(&path).ok();
        if on_disk.as_deref() == Some(text.as_bytes()) {
            // Nothing changed: start it if it is not running (a no-op if it is). systemd knows
            // this file already, so no reload (each costs the whole manager a re-read).
            self.systemctl(&["enable", "--now", "--no-reload", SYSTEMD_UNIT])?;
            return Ok(self.installed());
        }
        crate::persist::write_atomically(&path, text.as_bytes(), 0o644)
            .map_err(|e| InstallError::Failed(format!("cannot write {}: {e}", path.display())))?;
        // One reload, after the symlinks too (a plain `enable` would reload once more).
        self.systemctl(&["enable", "--no-reload", SYSTEMD_UNIT])?;
        self.systemctl(&["daemon-reload"])?;
        // A new unit is started; a repaired one must run the unit just written: `restart`
        // stops it once if it runs, and starts it either way.
        let action = if on_disk.is_some() {
            "restart"
        } else {
            "start"
        };
        self.systemctl(&[action, SYSTEMD_UNIT])?;
        Ok(self.installed())
    }

    fn uninstall(&self) -> Result<(), InstallError> {
        if !self.root {
            return Err(InstallError::NeedsApproval(sudo_command(
                &self.exe,
                "uninstall",
            )));
        }
        let path = self.unit_path();
        if path.exists() {
            self.systemctl(&["disable", "--now", "--no-reload", SYSTEMD_UNIT])?;
            std::fs::remove_file(&path).map_err(|e| {
                InstallError::Failed(format!("cannot remove {}: {e}", path.display()))
            })?;
            self.systemctl(&["daemon-reload"])?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::super::CommandOutput;
    use super::*;
    use crate::activation::state::ApprovalStep;

    /// Records every command; answers with the scripted exit code for a program+first arg.
    #[derive(Default)]
    struct Script {
        calls: Mutex<Vec<String>>,
        fail: Option<&'static str>,
    }

    impl CommandRunner for Script {
        fn run(&self, program: &str, args: &[&str]) -> std::io::Result<CommandOutput> {
            let line = format!("{program} {}", args.join(" "));
            self.calls.lock().unwrap().push(line.clone());
            let failed = self.fail.is_some_and(|f| line.starts_with(f));
            Ok(CommandOutput {
                code: Some(if failed { 1 } else { 0 }),
                stdout: String::new(),
                stderr: if failed {
                    "Failed to start: Unit not found.\n".into()
                } else {
                    String::new()
                },
            })
        }
    }

    #[test]
    fn not_root_needs_the_exact_sudo_command_and_runs_nothing() {
        let script = Arc::new(Script::default());
        let i = SystemdInstaller::new("/usr/bin/usbipd".into(), false, script.clone());
        assert_eq!(
            i.install(Prompt::Allowed),
            Err(InstallError::NeedsApproval(ApprovalStep::Command {
                command: "sudo /usr/bin/usbipd extension install".into()
            }))
        );
        assert!(script.calls.lock().unwrap().is_empty());
    }

    #[test]
    fn root_writes_the_unit_then_enables_and_starts_it() {
        let dir = tempfile::tempdir().unwrap();
        let script = Arc::new(Script::default());
        let i = SystemdInstaller::new("/usr/bin/usbipd".into(), true, script.clone())
            .with_unit_dir(dir.path().into());
        assert_eq!(i.probe(), Probe::NotInstalled);
        let done = i.install(Prompt::Allowed).unwrap();
        assert_eq!(done.location.path, dir.path().join(SYSTEMD_UNIT));
        let written = std::fs::read_to_string(dir.path().join(SYSTEMD_UNIT)).unwrap();
        assert_eq!(written, unit(std::path::Path::new("/usr/bin/usbipd")));
        assert_eq!(
            *script.calls.lock().unwrap(),
            [
                "systemctl enable --no-reload usbipd-extension.service",
                "systemctl daemon-reload",
                "systemctl start usbipd-extension.service",
            ]
        );
        assert_eq!(i.probe(), Probe::Installed { running: true });
        script.calls.lock().unwrap().clear();
        i.uninstall().unwrap();
        assert!(!dir.path().join(SYSTEMD_UNIT).exists());
        assert_eq!(
            *script.calls.lock().unwrap(),
            [
                "systemctl disable --now --no-reload usbipd-extension.service",
                "systemctl daemon-reload",
            ]
        );
    }

    /// Installs over a unit file holding `old`; returns the commands run and the file afterwards.
    fn install_over(old: &str) -> (Vec<String>, String) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SYSTEMD_UNIT), old).unwrap();
        let script = Arc::new(Script::default());
        let i = SystemdInstaller::new("/usr/bin/usbipd".into(), true, script.clone())
            .with_unit_dir(dir.path().into());
        i.install(Prompt::Allowed).unwrap();
        let calls = script.calls.lock().unwrap().clone();
        (
            calls,
            std::fs::read_to_string(dir.path().join(SYSTEMD_UNIT)).unwrap(),
        )
    }

    #[test]
    fn an_unchanged_unit_is_only_started_never_restarted_or_reloaded() {
        let current = unit(std::path::Path::new("/usr/bin/usbipd"));
        let (calls, after) = install_over(&current);
        assert_eq!(
            calls,
            ["systemctl enable --now --no-reload usbipd-extension.service"]
        );
        assert_eq!(after, current);
    }

    #[test]
    fn a_changed_unit_is_reloaded_once_and_restarted_once() {
        let (calls, after) = install_over("[Service]\nExecStart=/old/usbipd extension run\n");
        assert_eq!(
            calls,
            [
                "systemctl enable --no-reload usbipd-extension.service",
                "systemctl daemon-reload",
                "systemctl restart usbipd-extension.service",
            ]
        );
        assert_eq!(after, unit(std::path::Path::new("/usr/bin/usbipd")));
    }

    #[test]
    fn a_failing_systemctl_is_a_failure_with_its_message() {
        let dir = tempfile::tempdir().unwrap();
        let script = Arc::new(Script {
            fail: Some("systemctl enable"),
            ..Default::default()
        });
        let i = SystemdInstaller::new("/usr/bin/usbipd".into(), true, script)
            .with_unit_dir(dir.path().into());
        match i.install(Prompt::Allowed) {
            Err(InstallError::Failed(m)) => {
                assert!(
                    m.contains("exit code 1: Failed to start: Unit not found."),
                    "{m}"
                )
            }
            other => panic!("{other:?}"),
        }
    }
}
