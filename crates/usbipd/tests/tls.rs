//! USB/IP inside TLS between our two ends (issue 17), in one process: a trusted client lists
//! and imports and runs URBs; an untrusted one is refused before any device is listed; a
//! pairing code registers a client key once; a server whose key changed is refused with both
//! fingerprints; and the bytes on the wire carry no plaintext USB/IP.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use common::ScriptedDevice;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use usbip_client::{Connection, Submit};
use usbipd::client::tls::ClientTls;
use usbipd::device::registry::Registry;
use usbipd::server::{Server, ServerConfig, TlsServer};
use usbipd::tls::known_servers::{Expect, KnownServers};
use usbipd::tls::pairing::Pairing;
use usbipd::tls::trust::Trust;

/// A server with one scripted device (busid 1-1) on a TLS listener only; its state in `dir`.
async fn tls_server(dir: &Path) -> (SocketAddr, Arc<ScriptedDevice>, TlsServer) {
    let device = ScriptedDevice::new("1-1");
    let registry = Registry::new();
    registry.add(device.clone());
    let listeners = Server::bind(&["127.0.0.1:0".parse().unwrap()])
        .await
        .unwrap();
    let addr = listeners[0].local_addr().unwrap();
    let server = Server::new(registry, ServerConfig::default())
        .with_tls(Arc::new(TlsServer::open(dir).unwrap()));
    tokio::spawn(async move { server.serve_tls(Vec::new(), listeners).await });
    (addr, device, TlsServer::open(dir).unwrap())
}

fn name(addr: SocketAddr) -> String {
    addr.to_string()
}

#[tokio::test]
async fn a_trusted_client_lists_imports_and_runs_urbs_and_pins_the_server_key() {
    let server_dir = tempfile::tempdir().unwrap();
    let client_dir = tempfile::tempdir().unwrap();
    let (addr, device, server) = tls_server(server_dir.path()).await;
    let client = ClientTls::open(client_dir.path(), None).unwrap();
    Trust::new(server_dir.path())
        .add(client.fingerprint(), "test")
        .unwrap();

    let mut stream = client.connect(&name(addr), addr, None).await.unwrap();
    let devices = usbip_client::list_devices_over(&mut stream).await.unwrap();
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].record.busid, "1-1");
    // First use pinned the server's key.
    assert_eq!(
        KnownServers::new(client_dir.path())
            .expect(&name(addr), None)
            .unwrap(),
        Expect::Known(server.fingerprint())
    );

    let stream = client.connect(&name(addr), addr, None).await.unwrap();
    let conn = Connection::import_over(stream, "1-1").await.unwrap();
    for len in [64u32, 4096, 65536] {
        let done = conn.submit(Submit::bulk_in(3, len)).await.unwrap();
        assert_eq!(done.status, 0);
        let expected: Vec<u8> = (0..len).map(|i| i as u8).collect();
        assert_eq!(&done.data[..], &expected[..]);
    }
    assert_eq!(device.script.lock().unwrap().opened, 1);
}

#[tokio::test]
async fn an_untrusted_client_is_refused_before_any_device_is_listed() {
    let server_dir = tempfile::tempdir().unwrap();
    let client_dir = tempfile::tempdir().unwrap();
    let (addr, device, _) = tls_server(server_dir.path()).await;
    let client = ClientTls::open(client_dir.path(), None).unwrap();
    // TLS 1.3: the client's side of the handshake completes; the refusal is the first thing
    // it reads.
    let mut stream = client.connect(&name(addr), addr, None).await.unwrap();
    let err = usbip_client::list_devices_over(&mut stream)
        .await
        .expect_err("an untrusted key must not see the device list");
    let explained = client.explain(&name(addr), err).to_string();
    assert!(
        explained.contains("does not trust this client's key")
            && explained.contains(&client.fingerprint().to_string()),
        "{explained}"
    );
    let stream = client.connect(&name(addr), addr, None).await.unwrap();
    assert!(Connection::import_over(stream, "1-1").await.is_err());
    assert_eq!(device.script.lock().unwrap().opened, 0);

    // Trusted from now on; removed again, refused again.
    let trust = Trust::new(server_dir.path());
    trust.add(client.fingerprint(), "").unwrap();
    let mut stream = client.connect(&name(addr), addr, None).await.unwrap();
    assert_eq!(
        usbip_client::list_devices_over(&mut stream)
            .await
            .unwrap()
            .len(),
        1
    );
    trust.remove(&client.fingerprint()).unwrap();
    let mut stream = client.connect(&name(addr), addr, None).await.unwrap();
    assert!(usbip_client::list_devices_over(&mut stream).await.is_err());
}

#[tokio::test]
async fn a_pairing_code_registers_one_client_key_once() {
    let server_dir = tempfile::tempdir().unwrap();
    let (addr, _, _) = tls_server(server_dir.path()).await;
    let code = Pairing::new(server_dir.path()).issue().unwrap();

    let first_dir = tempfile::tempdir().unwrap();
    let first = ClientTls::open(first_dir.path(), None).unwrap();
    let wrong = first
        .connect(&name(addr), addr, Some("00000-00000"))
        .await
        .expect_err("a wrong code is refused")
        .to_string();
    assert!(wrong.contains("refused the pairing code"), "{wrong}");
    let mut stream = first.connect(&name(addr), addr, Some(&code)).await.unwrap();
    // The same connection goes on with USB/IP.
    assert_eq!(
        usbip_client::list_devices_over(&mut stream)
            .await
            .unwrap()
            .len(),
        1
    );
    let trusted = Trust::new(server_dir.path()).list().unwrap();
    assert_eq!(trusted.len(), 1);
    assert_eq!(trusted[0].fingerprint, first.fingerprint());
    assert!(trusted[0].name.starts_with("paired from 127.0.0.1"));
    // Without the code from now on.
    let mut stream = first.connect(&name(addr), addr, None).await.unwrap();
    assert!(usbip_client::list_devices_over(&mut stream).await.is_ok());

    // The code is used up: another client cannot use it.
    let second_dir = tempfile::tempdir().unwrap();
    let second = ClientTls::open(second_dir.path(), None).unwrap();
    let err = second
        .connect(&name(addr), addr, Some(&code))
        .await
        .expect_err("a used code is refused")
        .to_string();
    assert!(err.contains("refused the pairing code"), "{err}");
    assert_eq!(Trust::new(server_dir.path()).list().unwrap().len(), 1);
}

#[tokio::test]
async fn a_changed_server_key_is_refused_with_the_old_and_new_fingerprints() {
    let client_dir = tempfile::tempdir().unwrap();
    let client = ClientTls::open(client_dir.path(), None).unwrap();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (addr_a, _, server_a) = tls_server(dir_a.path()).await;
    let (addr_b, _, server_b) = tls_server(dir_b.path()).await;
    for dir in [&dir_a, &dir_b] {
        Trust::new(dir.path())
            .add(client.fingerprint(), "")
            .unwrap();
    }
    // "host" is A at first; later the same name reaches B, whose key differs.
    client.connect("host:3241", addr_a, None).await.unwrap();
    let err = client
        .connect("host:3241", addr_b, None)
        .await
        .expect_err("a changed key is refused")
        .to_string();
    assert!(err.contains("KEY CHANGED"), "{err}");
    assert!(err.contains(&server_a.fingerprint().to_string()), "{err}");
    assert!(err.contains(&server_b.fingerprint().to_string()), "{err}");

    // --fingerprint pins up front: the wrong pin is refused, the right one accepted (and
    // recorded for the next time).
    let pinned_a = ClientTls::open(client_dir.path(), Some(server_a.fingerprint())).unwrap();
    let err = pinned_a
        .connect("other:3241", addr_b, None)
        .await
        .expect_err("a pin mismatch is refused")
        .to_string();
    assert!(err.contains("--fingerprint"), "{err}");
    let pinned_b = ClientTls::open(client_dir.path(), Some(server_b.fingerprint())).unwrap();
    pinned_b.connect("host:3241", addr_b, None).await.unwrap();
    client.connect("host:3241", addr_b, None).await.unwrap();
}

/// A TCP proxy that records what crosses it, both ways.
async fn recording_proxy(to: SocketAddr) -> (SocketAddr, Arc<Mutex<(Vec<u8>, Vec<u8>)>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Arc<Mutex<(Vec<u8>, Vec<u8>)>> = Arc::default();
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = TcpStream::connect(to).await.unwrap();
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            let up = record.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                while let Ok(n @ 1..) = cr.read(&mut buf).await {
                    up.lock().unwrap().0.extend_from_slice(&buf[..n]);
                    if sw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
            let down = record.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                while let Ok(n @ 1..) = sr.read(&mut buf).await {
                    down.lock().unwrap().1.extend_from_slice(&buf[..n]);
                    if cw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (addr, seen)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn the_wire_carries_no_plaintext_usbip() {
    let server_dir = tempfile::tempdir().unwrap();
    let client_dir = tempfile::tempdir().unwrap();
    let (addr, _, _) = tls_server(server_dir.path()).await;
    let (proxy, seen) = recording_proxy(addr).await;
    let client = ClientTls::open(client_dir.path(), None).unwrap();
    Trust::new(server_dir.path())
        .add(client.fingerprint(), "")
        .unwrap();
    let stream = client.connect("server:3241", proxy, None).await.unwrap();
    let conn = Connection::import_over(stream, "1-1").await.unwrap();
    let done = conn.submit(Submit::bulk_in(3, 4096)).await.unwrap();
    assert_eq!(done.data.len(), 4096);
    let done = conn
        .submit(Submit::bulk_out(2, vec![0x5a; 4096]))
        .await
        .unwrap();
    assert_eq!(done.status, 0);
    drop(conn);
    let (up, down) = seen.lock().unwrap().clone();
    assert!(
        up.len() > 4096 && down.len() > 4096,
        "traffic went through the proxy"
    );
    // OP_REQ_IMPORT (version 0x0111, code 0x8003) and its busid; OP_REP_IMPORT; the IN
    // data's counting pattern; the OUT payload.
    assert!(!contains(&up, &[0x01, 0x11, 0x80, 0x03]));
    assert!(!contains(&up, b"1-1\0"));
    assert!(!contains(&down, &[0x01, 0x11, 0x00, 0x03]));
    let pattern: Vec<u8> = (16u8..48).collect();
    assert!(!contains(&down, &pattern));
    assert!(!contains(&up, &[0x5a; 32]));
    // The same exchange in plain USB/IP does show them: the checks can fail.
    let mut plain = Vec::new();
    usbip_proto::OpRequest::Import {
        busid: "1-1".into(),
    }
    .encode(&mut plain);
    assert!(contains(&plain, &[0x01, 0x11, 0x80, 0x03]) && contains(&plain, b"1-1\0"));
}
