//! Other local users against the real binary: the extension (run as root, as the README's test
//! command runs the suite) refuses a peer that is neither root nor allowed, and the CLI run by
//! that peer says so instead of falling back; a supplementary group named by `--allow-gid`
//! lets a peer in; a state directory or socket that another user owns is refused.
//!
//! Other users are played by children that drop to uid 65534 (nobody) before exec.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use usbipd::extension::virtual_bus::{KernelState, VirtualBusSpec, VirtualDeviceSpec};

mod common;

use common::process::Reaper;

const BIN: &str = env!("CARGO_BIN_EXE_usbipd");
const NOBODY: u32 = 65534;
/// A group nobody is in unless a test puts it there.
const DAEMON_GROUP: u32 = 4242;

fn root_only() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests play other users by dropping root privileges in children: run them as root"
    );
}

/// setgroups(2) through libc: nix offers it on Linux only (macOS's takes an int count; the
/// tests pass a handful of groups). Async-signal-safe: no allocation.
fn set_groups(groups: &[nix::libc::gid_t]) -> std::io::Result<()> {
    // SAFETY: the pointer and count describe `groups`, which outlives the call.
    let rc = unsafe { nix::libc::setgroups(groups.len() as _, groups.as_ptr()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// `usbipd <args>` as uid/gid 65534 with exactly `groups` as supplementary groups, in an
/// environment without a home directory.
fn as_nobody(args: &[&str], groups: &[u32]) -> Output {
    let groups = groups.to_vec();
    let mut cmd = Command::new(BIN);
    cmd.args(args).env_clear().env("PATH", "/usr/bin:/bin");
    // SAFETY: only async-signal-safe system calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            set_groups(&groups)?;
            nix::unistd::setgid(nix::unistd::Gid::from_raw(NOBODY))?;
            nix::unistd::setuid(nix::unistd::Uid::from_raw(NOBODY))?;
            Ok(())
        });
    }
    cmd.output().unwrap()
}

struct Extension(Child);

impl Drop for Extension {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `usbipd extension run` as root on a virtual bus with 1-2 held by usbhid, allowing
/// `DAEMON_GROUP`. The directory is 0755, so that nobody can reach the socket at all.
fn start_extension(dir: &Path) -> Extension {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    VirtualBusSpec {
        devices: vec![VirtualDeviceSpec {
            driver: Some("usbhid".into()),
            ..VirtualDeviceSpec::new("1-2")
        }],
    }
    .save(&dir.join("bus.json"))
    .unwrap();
    let ext = Extension(
        Command::new(BIN)
            .args(["extension", "run", "--extension-socket"])
            .arg(dir.join("ext.sock"))
            .arg("--state")
            .arg(dir.join("claims.json"))
            .arg("--virtual-bus")
            .arg(dir.join("bus.json"))
            .args(["--allow-gid", &DAEMON_GROUP.to_string()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("ext.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    std::fs::write(dir.join("ext.pid"), ext.0.id().to_string()).unwrap();
    for _ in 0..3000 {
        if std::os::unix::net::UnixStream::connect(dir.join("ext.sock")).is_ok() {
            return ext;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!(
        "the extension did not listen; its log:\n{}",
        std::fs::read_to_string(dir.join("ext.log")).unwrap_or_default()
    );
}

fn driver(dir: &Path) -> Option<String> {
    KernelState::load(&KernelState::path_for(&dir.join("bus.json")))
        .unwrap()
        .devices["1-2"]
        .driver
        .clone()
}

#[test]
fn a_peer_neither_root_nor_allowed_is_refused_and_told_so() {
    root_only();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let _reaper = Reaper(dir.to_path_buf());
    let _ext = start_extension(dir);
    let socket = dir.join("ext.sock");
    let socket = socket.to_str().unwrap();
    // A state directory of nobody's own, so that a fallback would have somewhere to write.
    let state = dir.join("nobody-state");
    std::fs::create_dir(&state).unwrap();
    nix::unistd::chown(&state, Some(nix::unistd::Uid::from_raw(NOBODY)), None).unwrap();
    let state = state.to_str().unwrap();

    let out = as_nobody(
        &[
            "bind",
            "--busid",
            "1-2",
            "--extension-socket",
            socket,
            "--state-dir",
            state,
        ],
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "nobody bound a device: {err}");
    assert!(err.contains("E003 NotAuthorized"), "{err}");
    assert!(err.contains("may not control the extension"), "{err}");
    assert_eq!(driver(dir).as_deref(), Some("usbhid"), "the device moved");
    let log = std::fs::read_to_string(dir.join("ext.log")).unwrap();
    assert!(log.contains("IPC peer refused"), "{log}");

    // The same user, with the allowed group among its supplementary groups, gets in.
    let out = as_nobody(
        &[
            "bind",
            "--busid",
            "1-2",
            "--extension-socket",
            socket,
            "--state-dir",
            state,
        ],
        &[100, DAEMON_GROUP],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("bound 1-2"),
        "{err}"
    );
    assert_eq!(driver(dir), None, "claimed from usbhid");
}

#[test]
fn a_socket_or_state_directory_of_another_user_is_refused() {
    root_only();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let nobody = Some(nix::unistd::Uid::from_raw(NOBODY));

    // Another user got there first: a state directory of theirs, with bindings planted in it.
    let planted = dir.join("planted");
    std::fs::create_dir(&planted).unwrap();
    std::fs::write(
        planted.join("bindings.json"),
        br#"{"version":1,"bindings":[{"busid":"1-9"}]}"#,
    )
    .unwrap();
    nix::unistd::chown(&planted, nobody, None).unwrap();
    let out = Command::new(BIN)
        .args(["list", "--state-dir"])
        .arg(&planted)
        .arg("--control")
        .arg(dir.join("none.sock"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "planted bindings were read: {err}");
    assert!(err.contains("owned by uid 65534"), "{err}");

    // A directory writable by everyone (not sticky) is refused as well.
    let open = dir.join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = Command::new(BIN)
        .args(["bind", "--hardware-id", "0525:a4a0", "--state-dir"])
        .arg(&open)
        .arg("--extension-socket")
        .arg(dir.join("none.sock"))
        .arg("--control")
        .arg(dir.join("none.sock"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "bound into a shared directory: {err}"
    );
    assert!(err.contains("writable by other users"), "{err}");
    assert!(!open.join("bindings.json").exists());

    // A control socket that another user put where ours belongs is not talked to.
    let theirs = dir.join("control.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&theirs).unwrap();
    nix::unistd::chown(&theirs, nobody, None).unwrap();
    let out = Command::new(BIN)
        .args(["list", "--control"])
        .arg(&theirs)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("owned by uid 65534"), "{err}");

    // Nor is a server started on it: it would replace another user's socket.
    let mut server = Command::new(BIN)
        .args(["server", "--listen", "127.0.0.1:0", "--control"])
        .arg(&theirs)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    for _ in 0..3000 {
        if server.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    if server.try_wait().unwrap().is_none() {
        let _ = server.kill();
        panic!("the server started on another user's control socket");
    }
    let out = server.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("owned by uid 65534"), "{err}");
}
