//! The command sequences of `usbipd attach --lima/--docker` and of the detach that ends them,
//! as data: which program, which arguments, which file on standard input. Pure: nothing here
//! runs anything (`runner` does), so every sequence is tested as it is.
//!
//! Lima (and Colima, which is Lima): `limactl copy` the client into the VM, `limactl shell VM
//! sudo sh -c 'cp ... && mv ...'` it to /usr/local/bin/usbipd, then `sudo usbipd client attach`
//! (one attach), or with `--auto` a `usbipd client attach --auto` started in its own session
//! that outlives the shell, its pid in /run; detach runs `usbipd client detach --busid` or stops
//! that process with SIGTERM (it detaches the port itself). Only sh and core utilities (cp,
//! chmod, mv, setsid, kill, cat) besides our binary: any Linux VM, busybox ones included.
//!
//! Docker Desktop, as Docker documents USB/IP: a privileged container in the host's PID
//! namespace, `nsenter -t 1 -m` into the VM's mount namespace, where the client runs. The client
//! is piped into the VM's /run through `/proc/1/root` (no file sharing needed); `--auto` runs in a
//! named detached container that `docker stop` ends (SIGTERM: the client detaches).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where the client runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Vm {
    /// A Lima instance (`limactl list`); Colima's is `colima`, with `LIMA_HOME=~/.colima/_lima`.
    Lima { instance: String },
    /// Docker Desktop's VM, reached through privileged containers of this image.
    Docker { image: String },
}

/// One command of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub program: String,
    pub args: Vec<String>,
    /// A file to feed on standard input (the client binary, for Docker).
    pub stdin: Option<PathBuf>,
}

impl Step {
    fn new(program: &str, args: &[&str]) -> Step {
        Step {
            program: program.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            stdin: None,
        }
    }

    /// The command as a shell would show it (for messages and logs).
    pub fn display(&self) -> String {
        std::iter::once(self.program.as_str())
            .chain(self.args.iter().map(String::as_str))
            .map(quote)
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Single-quotes `s` for sh when it holds anything but safe characters.
pub fn quote(s: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c);
    if !s.is_empty() && s.chars().all(safe) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The VM's CPU, which picks the static client to copy in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    /// `uname -m` (Lima) or Docker's `Server.Arch` (amd64, arm64).
    pub fn parse(text: &str) -> Option<Arch> {
        match text.trim() {
            "x86_64" | "amd64" => Some(Arch::X86_64),
            "aarch64" | "arm64" => Some(Arch::Aarch64),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    /// The static client's file name, as `scripts/package.sh` installs it under
    /// `share/usbipd/linux/`.
    pub fn client_file(self) -> String {
        format!("usbipd-{}-linux", self.name())
    }
}

/// Where the client is installed in a Lima VM.
pub const LIMA_CLIENT: &str = "/usr/local/bin/usbipd";
const LIMA_STAGING: &str = "/tmp/usbipd-client";
/// Where the client is put in Docker Desktop's VM (its /run, a tmpfs).
pub const DOCKER_VM_CLIENT: &str = "/run/usbipd-client/usbipd";

/// What `usbipd attach` asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub busid: String,
    pub vm: Vm,
    /// HOST[:PORT] of this server as the VM sees it.
    pub remote: String,
    pub auto: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("{0:?} is not a busid (it looks like 1-2, 1-2.3, or 0-3 for a virtual device)")]
    Busid(String),
    #[error("{0:?} is not HOST or HOST:PORT")]
    Remote(String),
    #[error("{0:?} is not a Lima instance name (letters, digits, '.', '_', '-')")]
    Instance(String),
    #[error("{0:?} is not a Docker image reference")]
    Image(String),
}

impl Vm {
    /// This machine as the VM reaches it (its gateway forwards to the host's loopback).
    pub fn host_alias(&self) -> &'static str {
        match self {
            Vm::Lima { .. } => "host.lima.internal",
            Vm::Docker { .. } => "host.docker.internal",
        }
    }

    /// The command whose output names the VM's CPU (`Arch::parse`).
    pub fn arch_probe(&self) -> Step {
        match self {
            Vm::Lima { instance } => Step::new("limactl", &["shell", instance, "uname", "-m"]),
            Vm::Docker { .. } => Step::new("docker", &["version", "--format", "{{.Server.Arch}}"]),
        }
    }
}

/// The name of the detached container (Docker) that keeps `busid` attached with `--auto`.
pub fn container_name(busid: &str) -> String {
    format!("usbipd-attach-{busid}")
}

fn check(a: &Attachment) -> Result<(), PlanError> {
    let busid_ok = a.busid.split_once('-').is_some_and(|(bus, ports)| {
        let number =
            |p: &str| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit());
        number(bus) && ports.split('.').all(number)
    });
    if !busid_ok || a.busid.len() >= 32 {
        return Err(PlanError::Busid(a.busid.clone()));
    }
    let remote_ok = !a.remote.is_empty()
        && !a.remote.starts_with('-')
        && a.remote.len() < 256
        && a.remote
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-:[]_".contains(c));
    if !remote_ok {
        return Err(PlanError::Remote(a.remote.clone()));
    }
    match &a.vm {
        Vm::Lima { instance } => {
            let ok = !instance.is_empty()
                && !instance.starts_with('-')
                && instance
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
            if !ok {
                return Err(PlanError::Instance(instance.clone()));
            }
        }
        Vm::Docker { image } => {
            let ok = !image.is_empty()
                && !image.starts_with('-')
                && image
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-/:@".contains(c));
            if !ok {
                return Err(PlanError::Image(image.clone()));
            }
        }
    }
    Ok(())
}

/// The `usbipd client attach` arguments run in the VM.
fn client_attach(exe: &str, a: &Attachment) -> Vec<String> {
    let mut v: Vec<String> = [
        exe, "client", "attach", "--remote", &a.remote, "--busid", &a.busid,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if a.auto {
        v.push("--auto".into());
    }
    v
}

fn lima_shell(instance: &str, command: &[&str]) -> Step {
    let mut args = vec!["shell", instance];
    args.extend_from_slice(command);
    Step::new("limactl", &args)
}

/// `docker run --rm --privileged --pid=host [extra] IMAGE command...`
fn docker_run(image: &str, extra: &[&str], command: &[&str]) -> Step {
    let mut args = vec!["run", "--rm"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--privileged", "--pid=host", image]);
    args.extend_from_slice(command);
    Step::new("docker", &args)
}

/// `nsenter -t 1 -m -- ` into the VM's mount namespace, where the client was put.
const NSENTER: [&str; 5] = ["nsenter", "-t", "1", "-m", "--"];

/// The steps that put `client` (the static Linux binary for the VM's CPU) into the VM and
/// attach `a.busid` there.
pub fn attach_plan(a: &Attachment, client: &Path) -> Result<Vec<Step>, PlanError> {
    check(a)?;
    let client_arg = client.to_string_lossy().into_owned();
    Ok(match &a.vm {
        Vm::Lima { instance } => {
            let copy = Step::new(
                "limactl",
                &["copy", &client_arg, &format!("{instance}:{LIMA_STAGING}")],
            );
            // Replaced by a rename: a running `--auto` client keeps its old file.
            let put = format!(
                "cp {LIMA_STAGING} {LIMA_CLIENT}.new && chmod 0755 {LIMA_CLIENT}.new && \
                 mv {LIMA_CLIENT}.new {LIMA_CLIENT}"
            );
            let install = lima_shell(instance, &["sudo", "sh", "-c", &put]);
            let attach_args = client_attach(LIMA_CLIENT, a);
            let attach = if a.auto {
                // Its own session (no hangup when the shell ends), output to a log in the VM,
                // its pid in /run for the detach (setsid execs: `$!` is the client's pid); a client that
                // exits at once (bad address, no vhci-hcd) fails the step.
                let line = format!(
                    "setsid {} </dev/null >>{} 2>&1 & echo $! > {} && sleep 1 && kill -0 $!",
                    attach_args.join(" "),
                    lima_log(&a.busid),
                    lima_pid_file(&a.busid)
                );
                lima_shell(instance, &["sudo", "sh", "-c", &line])
            } else {
                let mut cmd = vec!["sudo"];
                cmd.extend(attach_args.iter().map(String::as_str));
                lima_shell(instance, &cmd)
            };
            vec![copy, install, attach]
        }
        Vm::Docker { image } => {
            let dir = DOCKER_VM_CLIENT.rsplit_once('/').map_or("/run", |(d, _)| d);
            let put = format!(
                "mkdir -p /proc/1/root{dir} && cat > /proc/1/root{DOCKER_VM_CLIENT}.new && \
                 chmod 0755 /proc/1/root{DOCKER_VM_CLIENT}.new && \
                 mv /proc/1/root{DOCKER_VM_CLIENT}.new /proc/1/root{DOCKER_VM_CLIENT}"
            );
            let mut copy = docker_run(image, &["-i"], &["sh", "-c", &put]);
            copy.stdin = Some(client.to_path_buf());
            let name = container_name(&a.busid);
            let extra: Vec<&str> = if a.auto {
                vec!["-d", "--name", &name]
            } else {
                vec![]
            };
            let attach_args = client_attach(DOCKER_VM_CLIENT, a);
            let mut cmd: Vec<&str> = NSENTER.to_vec();
            cmd.extend(attach_args.iter().map(String::as_str));
            vec![copy, docker_run(image, &extra, &cmd)]
        }
    })
}

/// The pid file of a Lima VM's `--auto` client (in /run: gone after a reboot, as the client).
pub fn lima_pid_file(busid: &str) -> String {
    format!("/run/usbipd-attach-{busid}.pid")
}

/// The log of a Lima VM's `--auto` client.
pub fn lima_log(busid: &str) -> String {
    format!("/var/log/usbipd-attach-{busid}.log")
}

/// The steps that end what `attach_plan` started: the `--auto` client is stopped with SIGTERM
/// (it detaches its port and exits), a one-shot attach is detached by busid.
pub fn detach_plan(a: &Attachment) -> Result<Vec<Step>, PlanError> {
    check(a)?;
    Ok(match (&a.vm, a.auto) {
        (Vm::Lima { instance }, true) => {
            let pid = lima_pid_file(&a.busid);
            let line = format!("kill -TERM $(cat {pid}) && rm -f {pid}");
            vec![lima_shell(instance, &["sudo", "sh", "-c", &line])]
        }
        (Vm::Lima { instance }, false) => vec![lima_shell(
            instance,
            &["sudo", LIMA_CLIENT, "client", "detach", "--busid", &a.busid],
        )],
        (Vm::Docker { .. }, true) => {
            vec![Step::new("docker", &["stop", &container_name(&a.busid)])]
        }
        (Vm::Docker { image }, false) => {
            let mut cmd: Vec<&str> = NSENTER.to_vec();
            cmd.extend([DOCKER_VM_CLIENT, "client", "detach", "--busid", &a.busid]);
            vec![docker_run(image, &[], &cmd)]
        }
    })
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
