//! `usbipd detach` against the real server in fallback mode: the client of a virtual device is
//! cut off from the server side, and the device stays exported for the next import.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use usbip_client::{Connection, Submit};
use usbipd::device::r#virtual::gadget_zero;

mod common;

use common::process::free_port;

const BIN: &str = env!("CARGO_BIN_EXE_usbipd");

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn detach(dir: &std::path::Path, which: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .arg("detach")
        .args(which)
        .arg("--control")
        .arg(dir.join("control.sock"))
        .arg("--extension-socket")
        .arg(dir.join("no-extension.sock"))
        .output()
        .unwrap()
}

async fn set_configuration(conn: &Connection) -> Result<i32, usbip_client::Error> {
    let setup = [0, 9, gadget_zero::CONFIG_LOOPBACK, 0, 0, 0, 0, 0];
    Ok(conn
        .submit(Submit::control(setup, Bytes::new()))
        .await?
        .status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detach_cuts_the_client_off_and_the_device_stays_shared() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let port = free_port();
    let _server = Server(
        Command::new(BIN)
            .args(["server", "--extension", "off", "--no-host", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--control")
            .arg(dir.join("control.sock"))
            .arg("--state-dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut conn = None;
    for _ in 0..3000 {
        if let Ok(c) = Connection::import(addr, "0-4").await {
            conn = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let conn = conn.expect("the server did not come up");
    assert_eq!(set_configuration(&conn).await.unwrap(), 0);

    let out = detach(dir, &["--busid", "0-4"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("detached 0-4 from 127.0.0.1:"), "{stdout}");
    let after = tokio::time::timeout(Duration::from_secs(5), set_configuration(&conn))
        .await
        .expect("the session did not end");
    assert!(after.is_err(), "a URB went through after the detach");

    // Still shared: imported again at once, and detached again with --all.
    let again = Connection::import(addr, "0-4").await.unwrap();
    assert_eq!(set_configuration(&again).await.unwrap(), 0);
    let out = detach(dir, &["--all"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("detached 0-4"));

    // Nobody attached: a clear failure for one busid, a plain note for --all.
    let out = detach(dir, &["--busid", "0-1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no client has 0-1 attached"));
    let out = detach(dir, &["--all"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("no client was attached"));
}
