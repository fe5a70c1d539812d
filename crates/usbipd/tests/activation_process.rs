//! Automatic activation in the real `usbipd` binary: a daemon with `--extension auto` on a
//! machine without a service manager (or a test that wants the embedded installer: the child
//! runs on a virtual host bus) starts in compatibility mode, installs the extension in the
//! background, and switches to it; `usbipd status` shows each step, binds before the switch go
//! to the fallback bindings and binds after it to the extension.
//!
//! Linux only: the child runs under a simulated systemd in a mount namespace (unshare).

#![cfg(target_os = "linux")]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use usbipd::activation::status::{ACTIVE, AVAILABLE};
use usbipd::extension::virtual_bus::{KernelState, VirtualBusSpec, VirtualDeviceSpec};
use usbipd::ipc::{client, Request, Response};

mod common;

use common::eventually;
use common::process::{free_port, kill_recorded_extension};

const BIN: &str = env!("CARGO_BIN_EXE_usbipd");
/// The embedded "installation" waits for this file in the test's directory: the test acts in
/// compatibility mode first, then lets it complete (however slow the machine).
const INSTALL_GATE: &str = "install-gate";

struct Daemon {
    dir: PathBuf,
    child: Child,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SIGTERM: the daemon stops its extension child itself.
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Whatever happened, no extension is left behind.
        kill_recorded_extension(&self.dir);
    }
}

fn start_daemon(dir: &Path, port: u16) -> Daemon {
    // No configured devices and no demo ones: only what is bound.
    std::fs::write(dir.join("usbipd.toml"), "").unwrap();
    // In a mount namespace where systemd seems to run (/run/systemd/system exists), whatever
    // the host: the virtual bus must still make the daemon choose the embedded installer.
    let child = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(
            "mount -t tmpfs usbipd-test /run && mkdir -p /run/systemd/system && exec \"$0\" \"$@\"",
        )
        .arg(BIN)
        .args(["server", "--no-host", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--config")
        .arg(dir.join("usbipd.toml"))
        .args(["--extension", "auto"])
        .arg("--extension-install-gate")
        .arg(dir.join(INSTALL_GATE))
        .arg("--extension-state")
        .arg(dir.join("claims.json"))
        .arg("--virtual-bus")
        .arg(dir.join("bus.json"))
        .args(common_args(dir))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("daemon.log")).unwrap())
        .spawn()
        .unwrap();
    Daemon {
        dir: dir.to_path_buf(),
        child,
    }
}

fn common_args(dir: &Path) -> Vec<std::ffi::OsString> {
    vec![
        "--control".into(),
        dir.join("control.sock").into(),
        "--state-dir".into(),
        dir.join("state").into(),
        "--extension-socket".into(),
        dir.join("ext.sock").into(),
    ]
}

fn cli(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .args(common_args(dir))
        .output()
        .unwrap()
}

fn text(o: &[u8]) -> String {
    String::from_utf8_lossy(o).into_owned()
}

/// `usbipd status`: its one "System Extension: ..." headline, and the whole text.
fn status(dir: &Path) -> (String, String) {
    let out = cli(dir, &["status"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let all = text(&out.stdout);
    let headlines: Vec<&str> = all
        .lines()
        .filter(|l| l.starts_with("System Extension:"))
        .collect();
    assert_eq!(headlines.len(), 1, "exactly one headline:\n{all}");
    assert!(
        all.starts_with(headlines[0]),
        "the headline comes first:\n{all}"
    );
    (headlines[0].to_string(), all)
}

fn log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_starts_in_fallback_then_switches_to_the_embedded_extension() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    VirtualBusSpec {
        devices: vec![VirtualDeviceSpec {
            driver: Some("usbhid".into()),
            ..VirtualDeviceSpec::new("1-2")
        }],
    }
    .save(&dir.join("bus.json"))
    .unwrap();
    let daemon = start_daemon(dir, free_port());

    // Before installation completes: compatibility mode, installing.
    // Only the daemon's answer counts: before it listens, `usbipd status` answers on its own
    // ("Not available" where systemd does not run), which says nothing about the daemon.
    let listening =
        eventually(|| std::os::unix::net::UnixStream::connect(dir.join("control.sock")).is_ok())
            .await;
    assert!(listening, "the daemon never listened; log:\n{}", log(dir));
    let (headline, all) = status(dir);
    assert_eq!(headline, AVAILABLE, "{all}");
    assert!(all.contains("Installing now"), "{all}");
    assert!(all.contains("Extension: not running"), "{all}");

    // A bind now goes on, in compatibility mode: it does not wait for the installation, which
    // is held at its gate.
    let out = cli(dir, &["bind", "--hardware-id", "0525:a4a0"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("compatibility mode"),
        "{}",
        text(&out.stderr)
    );
    let bindings = std::fs::read_to_string(dir.join("state/bindings.json")).unwrap();
    assert!(bindings.contains("\"vid\": 1317"), "{bindings}"); // 0x0525
    let (_, all) = status(dir);
    assert!(all.contains("Installing now"), "{all}");
    std::fs::write(dir.join(INSTALL_GATE), "").unwrap();

    // Once the child is ready: active.
    let mut active = None;
    eventually(|| {
        let (headline, all) = status(dir);
        active = (headline == ACTIVE).then_some(all);
        active.is_some()
    })
    .await;
    let all = active.unwrap_or_else(|| panic!("never active; log:\n{}", log(dir)));
    assert!(all.contains("supervised child process"), "{all}");
    assert!(all.contains("Extension: running"), "{all}");
    assert!(all.contains("mode embedded"), "{all}");
    let ext = match client::call(&dir.join("ext.sock"), &Request::Status).await {
        Ok(Response::Status(s)) => s,
        other => panic!("{other:?}"),
    };
    std::fs::write(dir.join("ext.pid"), ext.health.pid.to_string()).unwrap();
    assert!(
        ext.claims.is_empty(),
        "the fallback bind reached the extension"
    );

    // A bind now goes through the extension, which takes the device from its driver.
    let out = cli(dir, &["bind", "--busid", "1-2"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("taken from kernel driver usbhid"),
        "{}",
        text(&out.stdout)
    );
    assert!(!text(&out.stderr).contains("compatibility mode"));
    let kernel = KernelState::load(&KernelState::path_for(&dir.join("bus.json"))).unwrap();
    assert_eq!(kernel.devices["1-2"].holder, Some(ext.health.pid));
    assert_eq!(kernel.devices["1-2"].driver, None);

    // --json: the same headline as fields, next to the extension's health.
    let out = cli(dir, &["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["activation"]["headline"], ACTIVE);
    assert_eq!(v["activation"]["extension"], "active");
    assert_eq!(v["activation"]["mode"], "extension");
    assert_eq!(v["activation"]["install_status"], "completed");
    assert_eq!(v["extension"]["running"], true);
    assert_eq!(v["claims"][0]["busid"], "1-2");

    // The outcome is in the state file for the next start.
    let state = std::fs::read_to_string(dir.join("state/activation.json")).unwrap();
    assert!(state.contains("completed"), "{state}");
    drop(daemon);
}
