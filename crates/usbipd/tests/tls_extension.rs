//! A device held by the extension, imported over TLS (issue 17): the real `usbipd` daemon in
//! embedded mode on a virtual host bus, with a TLS listener. The extension takes a TCP socket,
//! so the daemon keeps the TLS session and relays its plaintext to the extension through a
//! loopback connection; URBs go through both ways, an untrusted key is still refused in the
//! handshake, and `usbipd detach` ends the extension's session, the relay and the client's
//! connection (the device can be imported again).

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use usbip_client::{Connection, Submit};
use usbipd::client::tls::ClientTls;
use usbipd::device::r#virtual::gadget_zero;
use usbipd::extension::virtual_bus::{VirtualBusSpec, VirtualDeviceSpec};
use usbipd::ipc::{client, Request, Response};
use usbipd::tls::trust::Trust;

mod common;

use common::process::{assert_succeeded, embedded_daemon, free_port, Reaper};

const BIN: &str = env!("CARGO_BIN_EXE_usbipd");

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The daemon: plain listener, TLS listener, embedded extension on a one-device virtual bus
/// (gadget zero at 1-2), its TLS key and trust store in `dir/state`.
fn start_daemon(dir: &Path, port: u16, tls_port: u16) -> Daemon {
    VirtualBusSpec {
        devices: vec![VirtualDeviceSpec {
            driver: Some("usbhid".into()),
            ..VirtualDeviceSpec::new("1-2")
        }],
    }
    .save(&dir.join("bus.json"))
    .unwrap();
    let log = std::fs::File::create(dir.join("daemon.log")).unwrap();
    let child = embedded_daemon(dir, port)
        .args(["--listen-tls", &format!("127.0.0.1:{tls_port}")])
        .arg("--state-dir")
        .arg(dir.join("state"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    Daemon(child)
}

/// Waits until the extension answers (its pid recorded for the reaper) and the TLS listener
/// accepts.
async fn ready(dir: &Path, tls: SocketAddr) {
    for _ in 0..3000 {
        if let Ok(Response::Status(s)) = client::call(&dir.join("ext.sock"), &Request::Status).await
        {
            std::fs::write(dir.join("ext.pid"), s.health.pid.to_string()).unwrap();
            if tokio::net::TcpStream::connect(tls).await.is_ok() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("daemon not ready: {}", log(dir));
}

fn log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default()
}

/// `usbipd ARGS --extension-socket dir/ext.sock`, which must succeed.
fn cli(dir: &Path, args: &[&str]) {
    let out = Command::new(BIN)
        .args(args)
        .arg("--extension-socket")
        .arg(dir.join("ext.sock"))
        .output()
        .unwrap();
    assert_succeeded(&out);
}

/// Imports 1-2 over TLS, retrying while the extension still has the last client's session.
async fn import(dir: &Path, client: &ClientTls, tls: SocketAddr) -> Connection {
    let mut last = String::new();
    for _ in 0..600 {
        let stream = client.connect(&tls.to_string(), tls, None).await.unwrap();
        match Connection::import_over(stream, "1-2").await {
            Ok(conn) => return conn,
            Err(e) => last.push_str(&format!("{e}; ")),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("1-2 not importable over TLS in 5 s: {last}\n{}", log(dir));
}

/// Selects gadget zero's loopback configuration and loops 4 KiB through it.
async fn loop_through(conn: &Connection) {
    let setup = [0, 9, gadget_zero::CONFIG_LOOPBACK, 0, 0, 0, 0, 0];
    let done = conn.submit(Submit::control(setup, Bytes::new())).await;
    assert_eq!(done.unwrap().status, 0);
    let back = conn.start(Submit::bulk_in(1, 4096)).unwrap();
    let data: Vec<u8> = (0..4096u32).map(|i| (i * 7) as u8).collect();
    let sent = conn
        .submit(Submit::bulk_out(1, data.clone()))
        .await
        .unwrap();
    assert_eq!(sent.status, 0);
    assert_eq!(&back.wait().await.unwrap().data[..], &data[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extension_device_is_served_over_tls_through_the_daemons_relay() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let _reaper = Reaper(dir.to_path_buf());
    let client_dir = tempfile::tempdir().unwrap();
    let (port, tls_port) = (free_port(), free_port());
    let tls: SocketAddr = ([127, 0, 0, 1], tls_port).into();
    let _daemon = start_daemon(dir, port, tls_port);
    ready(dir, tls).await;
    cli(dir, &["bind", "--busid", "1-2"]);

    // Not trusted yet: refused in the handshake, before the extension hears of it.
    let client = ClientTls::open(client_dir.path(), None).unwrap();
    let listed = match client.connect(&tls.to_string(), tls, None).await {
        Ok(mut stream) => usbip_client::list_devices_over(&mut stream).await.is_ok(),
        Err(_) => false,
    };
    assert!(!listed, "an untrusted client got a device list");

    Trust::new(&dir.join("state"))
        .add(client.fingerprint(), "test")
        .unwrap();
    let conn = import(dir, &client, tls).await;
    loop_through(&conn).await;
    let daemon_log = log(dir);
    assert!(
        daemon_log.contains("TLS import handed to the extension"),
        "{daemon_log}"
    );

    // `usbipd detach` ends the extension's session: the relay ends with it, the client's
    // connection closes, and the device is imported again over TLS.
    cli(
        dir,
        &[
            "detach",
            "--busid",
            "1-2",
            "--control",
            "/nonexistent/c.sock",
        ],
    );
    let after = tokio::time::timeout(
        Duration::from_secs(5),
        conn.submit(Submit::bulk_out(1, &b"late"[..])),
    )
    .await
    .expect("the session did not end");
    assert!(after.is_err(), "a URB went through after the detach");
    let conn = import(dir, &client, tls).await;
    loop_through(&conn).await;
    let daemon_log = log(dir);
    assert!(
        daemon_log.contains("TLS relay to the extension ended"),
        "{daemon_log}"
    );
}
