//! `usbipd attach --lima/--docker` and `usbipd detach` run as a user runs them, with recording
//! stand-ins for `limactl` and `docker` first on PATH: each records its argv (and what it got on
//! standard input) and answers the CPU probe. The exact sequences are in `vm/plan_tests.rs`;
//! this proves the binary runs them in order, feeds the client binary, keeps the record that
//! detach needs, and stops what it started.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_usbipd");

/// A fake `limactl` and `docker`: one line per call in `calls` (arguments separated by 0x1f),
/// standard input saved as `stdin.N` when the call has `-i`; exit status from `fail.<program>`.
const FAKE: &str = r#"#!/bin/sh
me=$(basename "$0")
dir=$(dirname "$0")
n=$(wc -l < "$dir/calls" 2>/dev/null || echo 0)
line=$me
for a in "$@"; do line="$line$(printf '\037')$a"; done
printf '%s\n' "$line" >> "$dir/calls"
for a in "$@"; do [ "$a" = -i ] && cat > "$dir/stdin.$n"; done
[ -f "$dir/fail.$me" ] && exit 3
case "$me $*" in
  "limactl shell "*" uname -m") echo aarch64;;
  "docker version "*) echo amd64;;
esac
exit 0
"#;

struct World {
    _tmp: tempfile::TempDir,
    fakes: PathBuf,
    state: PathBuf,
    clients: PathBuf,
}

fn world() -> World {
    let tmp = tempfile::tempdir().unwrap();
    let fakes = tmp.path().join("fakes");
    let state = tmp.path().join("state");
    let clients = tmp.path().join("clients");
    for d in [&fakes, &state, &clients] {
        std::fs::create_dir_all(d).unwrap();
    }
    for name in ["limactl", "docker"] {
        let p = fakes.join(name);
        std::fs::write(&p, FAKE).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::write(clients.join("usbipd-aarch64-linux"), b"aarch64 client").unwrap();
    std::fs::write(clients.join("usbipd-x86_64-linux"), b"x86_64 client").unwrap();
    World {
        _tmp: tmp,
        fakes,
        state,
        clients,
    }
}

impl World {
    fn usbipd(&self, args: &[&str]) -> Output {
        let path = format!(
            "{}:{}",
            self.fakes.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        Command::new(BIN)
            .args(args)
            .arg("--state-dir")
            .arg(&self.state)
            .arg("--control")
            .arg(self.state.join("no-server.sock"))
            .arg("--extension-socket")
            .arg(self.state.join("no-extension.sock"))
            .env("PATH", path)
            .env("USBIPD_LINUX_CLIENTS", &self.clients)
            .output()
            .unwrap()
    }

    /// Each call since the last `take`, as "program arg arg ..." with its arguments.
    fn take(&self) -> Vec<Vec<String>> {
        let path = self.fakes.join("calls");
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let _ = std::fs::remove_file(&path);
        text.lines()
            .map(|l| l.split('\u{1f}').map(str::to_string).collect())
            .collect()
    }

    fn stdin(&self, n: usize) -> Vec<u8> {
        std::fs::read(self.fakes.join(format!("stdin.{n}"))).unwrap_or_default()
    }
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn words(call: &[String]) -> String {
    call.join(" ")
}

#[test]
fn lima_attach_copies_the_client_for_the_vms_cpu_and_detach_runs_the_vms_detach() {
    let w = world();
    let out = ok(&w.usbipd(&["attach", "--busid", "0-3", "--lima", "dev"]));
    assert!(
        out.contains("0-3 attached in Lima VM dev (from host.lima.internal)"),
        "{out}"
    );
    let calls = w.take();
    let client = w.clients.join("usbipd-aarch64-linux");
    assert_eq!(
        calls.iter().map(|c| words(c)).collect::<Vec<_>>(),
        [
            "limactl shell dev uname -m".to_string(),
            format!("limactl copy {} dev:/tmp/usbipd-client", client.display()),
            "limactl shell dev sudo sh -c cp /tmp/usbipd-client /usr/local/bin/usbipd.new && chmod 0755 /usr/local/bin/usbipd.new && mv /usr/local/bin/usbipd.new /usr/local/bin/usbipd".into(),
            "limactl shell dev sudo /usr/local/bin/usbipd client attach --remote host.lima.internal --busid 0-3".into(),
        ]
    );
    // No server runs here: the VM side was the attachment, and it is ended.
    let out = ok(&w.usbipd(&["detach", "--busid", "0-3"]));
    assert!(out.contains("stopped the client of 0-3"), "{out}");
    assert_eq!(
        w.take().iter().map(|c| words(c)).collect::<Vec<_>>(),
        ["limactl shell dev sudo /usr/local/bin/usbipd client detach --busid 0-3"]
    );
    // Nothing recorded any more: a second detach has nothing to stop and no server to ask.
    let again = w.usbipd(&["detach", "--busid", "0-3"]);
    assert!(!again.status.success());
    assert!(w.take().is_empty());
}

#[test]
fn docker_auto_pipes_the_client_in_and_detach_all_stops_the_container() {
    let w = world();
    let out = ok(&w.usbipd(&[
        "attach",
        "--busid",
        "0-1",
        "--docker",
        "--auto",
        "--remote",
        "host.docker.internal:3241",
    ]));
    assert!(out.contains("kept attached"), "{out}");
    let calls = w.take();
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert_eq!(words(&calls[0]), "docker version --format {{.Server.Arch}}");
    assert_eq!(
        calls[1][..6],
        ["docker", "run", "--rm", "-i", "--privileged", "--pid=host"]
    );
    assert_eq!(
        w.stdin(1),
        b"x86_64 client",
        "the x86_64 client goes in on stdin"
    );
    assert_eq!(
        words(&calls[2]),
        "docker run --rm -d --name usbipd-attach-0-1 --privileged --pid=host alpine nsenter -t 1 -m -- /run/usbipd-client/usbipd client attach --remote host.docker.internal:3241 --busid 0-1 --auto"
    );
    let out = ok(&w.usbipd(&["detach", "--all"]));
    assert!(out.contains("stopped the client of 0-1"), "{out}");
    assert_eq!(
        w.take().iter().map(|c| words(c)).collect::<Vec<_>>(),
        ["docker stop usbipd-attach-0-1"]
    );
}

#[test]
fn a_failing_step_stops_the_plan_and_records_nothing() {
    let w = world();
    std::fs::write(w.fakes.join("fail.limactl"), b"").unwrap();
    let out = w.usbipd(&[
        "attach",
        "--busid",
        "0-3",
        "--lima",
        "dev",
        "--client",
        "/nonexistent-is-fine-for-copy",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`limactl copy /nonexistent-is-fine-for-copy dev:/tmp/usbipd-client` failed"),
        "{err}"
    );
    assert_eq!(w.take().len(), 1, "nothing after the failed copy");
    assert!(!records_file(&w.state).exists());
}

#[test]
fn a_missing_client_or_tool_is_named() {
    let w = world();
    std::fs::remove_file(w.clients.join("usbipd-aarch64-linux")).unwrap();
    let out = w.usbipd(&["attach", "--busid", "0-3", "--lima", "dev"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no static Linux client usbipd-aarch64-linux"),
        "{err}"
    );
    assert!(err.contains("scripts/build-static.sh"), "{err}");
    std::fs::remove_file(w.fakes.join("docker")).unwrap();
    let out = Command::new(BIN)
        .args(["attach", "--busid", "0-3", "--docker", "--state-dir"])
        .arg(&w.state)
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("docker is not installed"), "{err}");
}

#[test]
fn a_host_device_is_shared_first_and_one_that_cannot_be_stops_before_the_vm() {
    let w = world();
    // No extension and no such device on this machine: the bind path refuses, naming it.
    let out = w.usbipd(&["attach", "--busid", "7-7", "--docker"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no USB device at busid 7-7"), "{err}");
    assert!(w.take().is_empty(), "nothing ran in the VM");
}

#[test]
fn bad_names_are_refused_before_anything_runs() {
    let w = world();
    let out = w.usbipd(&["attach", "--busid", "0-3", "--lima", "dev;reboot"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a Lima instance name"));
    assert!(w.take().is_empty());
}

fn records_file(state: &Path) -> PathBuf {
    state.join("vm-attachments.json")
}
