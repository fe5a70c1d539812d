//! The real `usbipd` binary: a daemon in embedded mode supervising `usbipd extension run` on a
//! virtual host bus (spec file = the cable, kernel file = the kernel). kill -9 of the extension
//! mid-transfer, a crash in the middle of an unbind, a daemon restart, and the CLI's output.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use usbip_client::{Connection, Submit};
use usbipd::device::r#virtual::gadget_zero;
use usbipd::extension::virtual_bus::{
    Fault, FaultStage, KernelState, VirtualBusSpec, VirtualDeviceSpec,
};
use usbipd::ipc::{client, Request, Response, StatusReport};

mod common;

use common::eventually;
use common::process::{assert_succeeded, embedded_daemon, free_port, Reaper};

const BIN: &str = env!("CARGO_BIN_EXE_usbipd");

struct Daemon {
    dir: PathBuf,
    port: u16,
    child: Child,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_daemon(dir: &Path, port: u16) -> Daemon {
    let child = embedded_daemon(dir, port)
        .stdout(Stdio::null())
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join("daemon.log"))
                .unwrap(),
        )
        .spawn()
        .unwrap();
    Daemon {
        dir: dir.to_path_buf(),
        port,
        child,
    }
}

impl Daemon {
    fn addr(&self) -> std::net::SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }

    async fn status(&self) -> Option<StatusReport> {
        match client::call(&self.dir.join("ext.sock"), &Request::Status).await {
            Ok(Response::Status(s)) => {
                std::fs::write(self.dir.join("ext.pid"), s.health.pid.to_string()).unwrap();
                Some(s)
            }
            _ => None,
        }
    }

    /// Waits for an extension (other than `not_pid`) to answer.
    async fn ready(&self, not_pid: Option<u32>) -> StatusReport {
        for _ in 0..3000 {
            if let Some(s) = self.status().await {
                if Some(s.health.pid) != not_pid {
                    return s;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let log = std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default();
        panic!("the extension did not come up; daemon log:\n{log}");
    }

    fn kernel(&self) -> KernelState {
        KernelState::load(&KernelState::path_for(&self.dir.join("bus.json"))).unwrap()
    }
}

fn cli(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .arg("--extension-socket")
        .arg(dir.join("ext.sock"))
        .output()
        .unwrap()
}

fn spec() -> VirtualBusSpec {
    let mut crashy = VirtualDeviceSpec::new("1-3");
    crashy.driver = Some("cdc_acm".into());
    crashy.crash_on_release = true;
    let mut denied = VirtualDeviceSpec::new("1-4");
    denied.fail_claim = Some(Fault {
        stage: FaultStage::Open,
        errno: 13,
    });
    VirtualBusSpec {
        devices: vec![
            VirtualDeviceSpec {
                driver: Some("usbhid".into()),
                ..VirtualDeviceSpec::new("1-2")
            },
            crashy,
            denied,
        ],
    }
}

async fn import_loopback(addr: std::net::SocketAddr) -> Connection {
    let conn = Connection::import(addr, "1-2").await.unwrap();
    let setup = [0, 9, gadget_zero::CONFIG_LOOPBACK, 0, 0, 0, 0, 0];
    assert_eq!(
        conn.submit(Submit::control(setup, Bytes::new()))
            .await
            .unwrap()
            .status,
        0
    );
    conn
}

async fn loop_once(conn: &Connection) {
    let back = conn.start(Submit::bulk_in(1, 512)).unwrap();
    conn.submit(Submit::bulk_out(1, &b"ping"[..]))
        .await
        .unwrap();
    assert_eq!(&back.wait().await.unwrap().data[..], b"ping");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_transfer_crash_mid_unbind_and_daemon_restart_keep_claims() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let _reaper = Reaper(dir.to_path_buf());
    spec().save(&dir.join("bus.json")).unwrap();
    let daemon = start_daemon(dir, free_port());
    let first = daemon.ready(None).await;
    assert_eq!(first.health.mode, "embedded");

    // The CLI binds, and explains a failure with its code and errno.
    let out = cli(dir, &["bind", "--busid", "1-2"]);
    assert_succeeded(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("taken from kernel driver usbhid"));
    let out = cli(dir, &["bind", "--busid", "1-4"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("E020 AccessDenied"), "{err}");
    assert!(err.contains("errno 13 (EACCES)"), "{err}");
    assert!(err.contains("udev rule"), "{err}");
    assert!(cli(dir, &["bind", "--busid", "1-3"]).status.success());
    assert_eq!(daemon.kernel().devices["1-3"].driver, None);

    // kill -9 in the middle of a transfer.
    let conn = import_loopback(daemon.addr()).await;
    loop_once(&conn).await;
    let parked = conn.start(Submit::bulk_in(1, 512)).unwrap();
    let old = daemon.status().await.unwrap().health.pid;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(old as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(tokio::time::timeout(Duration::from_secs(5), parked.wait())
        .await
        .unwrap()
        .is_err());
    let restarted = daemon.ready(Some(old)).await;
    let states: Vec<(String, String)> = restarted
        .claims
        .iter()
        .map(|c| (c.busid.clone(), c.state.clone()))
        .collect();
    assert_eq!(
        states,
        vec![
            ("1-2".into(), "claimed".into()),
            ("1-3".into(), "claimed".into())
        ]
    );
    let k = daemon.kernel();
    assert_eq!(k.devices["1-2"].holder, Some(restarted.health.pid));
    assert_eq!(k.devices["1-2"].driver, None);
    let conn = import_loopback(daemon.addr()).await;
    loop_once(&conn).await;
    drop(conn);

    // The extension dies in the middle of unbinding 1-3; the next one gives it back.
    let out = cli(dir, &["unbind", "--busid", "1-3"]);
    assert!(!out.status.success());
    let after = daemon.ready(Some(restarted.health.pid)).await;
    assert!(after.claims.iter().all(|c| c.busid != "1-3"));
    assert_eq!(
        daemon.kernel().devices["1-3"].driver.as_deref(),
        Some("cdc_acm")
    );

    // Unplug mid-transfer through the cable file; replug reclaims.
    let conn = import_loopback(daemon.addr()).await;
    let parked = conn.start(Submit::bulk_in(1, 512)).unwrap();
    let mut s = spec();
    s.devices[0].plugged = false;
    s.save(&dir.join("bus.json")).unwrap();
    assert!(tokio::time::timeout(Duration::from_secs(5), parked.wait())
        .await
        .unwrap()
        .is_err());
    s.devices[0].plugged = true;
    s.save(&dir.join("bus.json")).unwrap();
    let mut reclaimed = false;
    for _ in 0..3000 {
        let st = daemon.status().await.unwrap();
        if st
            .claims
            .iter()
            .any(|c| c.busid == "1-2" && c.state == "claimed")
        {
            reclaimed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(reclaimed);

    // A daemon restart does not drop claims.
    let pid_before = daemon.status().await.unwrap().health.pid;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let mut daemon = daemon;
    // A graceful stop also stops its extension (SIGTERM), which keeps its claims on disk.
    assert!(
        eventually(|| matches!(daemon.child.try_wait(), Ok(Some(_)))).await,
        "the daemon did not stop after SIGTERM"
    );
    assert!(daemon.child.wait().unwrap().success());
    drop(daemon);
    let daemon = start_daemon(dir, free_port());
    let st = daemon.ready(Some(pid_before)).await;
    assert!(st
        .claims
        .iter()
        .any(|c| c.busid == "1-2" && c.state == "claimed"));
    let conn = import_loopback(daemon.addr()).await;
    loop_once(&conn).await;

    // Status for people and for programs (recent errors are this extension's own).
    assert!(!cli(dir, &["bind", "--busid", "1-4"]).status.success());
    let out = cli(dir, &["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Extension: running"), "{text}");
    assert!(text.contains("mode embedded"), "{text}");
    assert!(text.contains("1-2"), "{text}");
    assert!(text.contains("in use"), "{text}");
    assert!(text.contains("E020 AccessDenied"), "{text}");
    let out = cli(dir, &["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["extension"]["running"], true);
    assert_eq!(v["claims"][0]["busid"], "1-2");
    assert_eq!(v["claims"][0]["state"], "in use");
    // Unbind everything: drivers come back.
    drop(conn);
    assert!(cli(dir, &["unbind", "--all"]).status.success());
    assert_eq!(
        daemon.kernel().devices["1-2"].driver.as_deref(),
        Some("usbhid")
    );
}

/// A second `usbipd extension run` on the same state refuses to start, naming the lock file and
/// the holder's pid, before it restores or rewrites anything of the live one's claims.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_extension_on_the_same_state_refuses_and_leaves_the_claims_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    spec().save(&dir.join("bus.json")).unwrap();
    let run = |socket: &str| {
        Command::new(BIN)
            .args([
                "extension",
                "run",
                "--mode",
                "embedded",
                "--extension-socket",
            ])
            .arg(dir.join(socket))
            .arg("--state")
            .arg(dir.join("claims.json"))
            .arg("--virtual-bus")
            .arg(dir.join("bus.json"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    struct Killed(Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let first = Killed(run("ext.sock"));
    let sock = dir.join("ext.sock");
    let mut up = false;
    for _ in 0..3000 {
        if let Ok(Response::Status(_)) = client::call(&sock, &Request::Status).await {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(up, "the first extension did not come up");
    let bound = client::call(
        &sock,
        &Request::Bind {
            busid: "1-2".into(),
        },
    )
    .await
    .unwrap();
    assert!(matches!(bound, Response::Bound(_)), "{bound:?}");
    let claims = std::fs::read(dir.join("claims.json")).unwrap();

    let mut second = run("ext2.sock");
    let mut status = None;
    for _ in 0..3000 {
        if let Some(s) = second.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let Some(status) = status else {
        let _ = second.kill();
        let _ = second.wait();
        panic!("a second extension on the same state kept running");
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success());
    let lock = dir.join("extension.lock");
    assert!(err.contains(&lock.display().to_string()), "{err}");
    assert!(err.contains(&format!("pid {}", first.0.id())), "{err}");
    assert_eq!(std::fs::read(dir.join("claims.json")).unwrap(), claims);
    assert!(!dir.join("ext2.sock").exists());
    // The live one still answers.
    assert!(matches!(
        client::call(&sock, &Request::Status).await,
        Ok(Response::Status(_))
    ));
}

/// `usbipd list` as the user sees it: the state of 1-2 and its client, from the daemon's control
/// socket (which asks the extension).
fn listed(dir: &Path, busid: &str) -> (String, Option<String>) {
    let out = Command::new(BIN)
        .args(["list", "--json", "--control"])
        .arg(dir.join("control.sock"))
        .output()
        .unwrap();
    assert_succeeded(&out);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["busid"] == busid)
        .unwrap_or_else(|| panic!("{busid} not listed: {rows}"));
    (
        row["state"].as_str().unwrap().to_string(),
        row["client"].as_str().map(str::to_string),
    )
}

async fn until_listed(dir: &Path, busid: &str, state: &str) {
    for _ in 0..3000 {
        if listed(dir, busid).0 == state {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{busid} never listed {state:?}: {:?}", listed(dir, busid));
}

/// Extension mode: `usbipd list` shows a bound device as shared and an imported one as attached
/// (not "not shared"), and an unplug nobody hears (no udevd, no hotplug source) is noticed by
/// the device's ENODEV: the session ends, the claim waits, and the device is claimed again and
/// can be imported when it returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_follows_bind_import_an_unheard_unplug_replug_and_unbind() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let _reaper = Reaper(dir.to_path_buf());
    let mut bus = VirtualBusSpec {
        devices: vec![VirtualDeviceSpec {
            driver: Some("usbhid".into()),
            unplug_unheard: true,
            ..VirtualDeviceSpec::new("1-2")
        }],
    };
    bus.save(&dir.join("bus.json")).unwrap();
    let daemon = start_daemon(dir, free_port());
    daemon.ready(None).await;

    assert_eq!(listed(dir, "1-2"), ("not shared".into(), None));
    assert!(cli(dir, &["bind", "--busid", "1-2"]).status.success());
    assert_eq!(listed(dir, "1-2"), ("shared".into(), None));

    let conn = import_loopback(daemon.addr()).await;
    loop_once(&conn).await;
    let (state, client) = listed(dir, "1-2");
    assert_eq!(state, "attached");
    assert!(client.is_some_and(|c| c.starts_with("127.0.0.1:")));

    // Unplugged, unheard: the next transfer fails with ENODEV, which ends the session.
    bus.devices[0].plugged = false;
    bus.save(&dir.join("bus.json")).unwrap();
    let mut ended = false;
    for _ in 0..3000 {
        match tokio::time::timeout(
            Duration::from_secs(5),
            conn.submit(Submit::bulk_out(1, &b"ping"[..])),
        )
        .await
        .expect("a transfer on an unplugged device hangs")
        {
            Ok(c) if c.status == 0 => tokio::time::sleep(Duration::from_millis(10)).await,
            Ok(_) | Err(_) => {
                ended = true;
                break;
            }
        }
    }
    assert!(ended, "the unplugged device kept answering");
    let mut closed = false;
    for _ in 0..3000 {
        if conn
            .submit(Submit::bulk_out(1, &b"ping"[..]))
            .await
            .is_err()
        {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(closed, "the session of the departed device did not end");
    until_listed(dir, "1-2", "shared (unplugged; waiting for it to return)").await;
    let st = daemon.status().await.unwrap();
    assert_eq!(st.claims[0].state, "absent");

    // Back: claimed again without a bind, and importable.
    bus.devices[0].plugged = true;
    bus.save(&dir.join("bus.json")).unwrap();
    until_listed(dir, "1-2", "shared").await;
    let conn = import_loopback(daemon.addr()).await;
    loop_once(&conn).await;
    assert_eq!(listed(dir, "1-2").0, "attached");
    drop(conn);
    until_listed(dir, "1-2", "shared").await;

    assert!(cli(dir, &["unbind", "--busid", "1-2"]).status.success());
    assert_eq!(listed(dir, "1-2"), ("not shared".into(), None));
}

/// `usbipd detach` from the server side: a host device's session, hosted by the extension,
/// ends; the claim stays and the device can be imported again at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detach_ends_the_extensions_session_and_keeps_the_claim() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let _reaper = Reaper(dir.to_path_buf());
    spec().save(&dir.join("bus.json")).unwrap();
    let daemon = start_daemon(dir, free_port());
    daemon.ready(None).await;
    assert!(cli(dir, &["bind", "--busid", "1-2"]).status.success());

    let conn = import_loopback(daemon.addr()).await;
    loop_once(&conn).await;
    let out = cli(
        dir,
        &[
            "detach",
            "--busid",
            "1-2",
            "--control",
            "/nonexistent/c.sock",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_succeeded(&out);
    assert!(stdout.contains("detached 1-2 from 127.0.0.1:"), "{stdout}");
    let after = tokio::time::timeout(
        Duration::from_secs(5),
        conn.submit(Submit::bulk_out(1, &b"late"[..])),
    )
    .await
    .expect("the session did not end");
    assert!(after.is_err(), "a URB went through after the detach");

    let status = daemon.status().await.unwrap();
    let claim = status.claims.iter().find(|c| c.busid == "1-2").unwrap();
    assert_eq!(claim.state, "claimed", "{claim:?}");
    let again = import_loopback(daemon.addr()).await;
    loop_once(&again).await;

    // Nothing attached to 1-3: said so, as a failure.
    let out = cli(
        dir,
        &[
            "detach",
            "--busid",
            "1-3",
            "--control",
            "/nonexistent/c.sock",
        ],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no client has 1-3 attached"));
}
