//! The extension in-process, over its real IPC socket and with a daemon in front, on a virtual
//! host bus: claims and their errors, handover and exclusivity, hotplug, persistence and
//! recovery, peer authentication.

use std::sync::Arc;
use std::time::Duration;

use usbip_client::{Connection, Error as ClientError, Submit};
use usbip_proto::OpStatus;
use usbipd::device::r#virtual::gadget_zero;
use usbipd::device::registry::Registry;
use usbipd::extension::bus::HostBus;
use usbipd::extension::claims::ClaimStore;
use usbipd::extension::health::HealthState;
use usbipd::extension::link::ExtensionLink;
use usbipd::extension::service::Extension;
use usbipd::extension::virtual_bus::{Fault, FaultStage, VirtualBus, VirtualBusSpec};
use usbipd::ipc::client::{self, Client};
use usbipd::ipc::peer::PeerPolicy;
use usbipd::ipc::{ErrorCode, EventKind, OsCode, Request, Response};
use usbipd::server::{Server, ServerConfig};

mod common;

use common::extension_rig::*;

/// The extension's next event, failing (not hanging) when none comes within 30 s.
async fn next_event(events: &Client) -> Option<usbipd::ipc::Event> {
    tokio::time::timeout(Duration::from_secs(30), events.next_event())
        .await
        .expect("an event within 30 s")
}

#[tokio::test]
async fn bind_detaches_the_kernel_driver_and_unbind_gives_it_back() {
    let r = rig(vec![spec("1-2", Some("usbhid"), None)]).await;
    assert_eq!(
        r.bus.kernel("1-2").unwrap().driver.as_deref(),
        Some("usbhid")
    );
    let events = Client::connect(&r.socket).await.unwrap();
    events.subscribe().await.unwrap();
    match r
        .call(Request::Bind {
            busid: "1-2".into(),
        })
        .await
        .unwrap()
    {
        Response::Bound(c) => {
            assert_eq!(c.state, "claimed");
            assert_eq!(c.detached_driver.as_deref(), Some("usbhid"));
            assert_eq!(
                (c.vid, c.pid),
                (gadget_zero::VENDOR_ID, gadget_zero::PRODUCT_ID)
            );
        }
        other => panic!("{other:?}"),
    }
    let k = r.bus.kernel("1-2").unwrap();
    assert_eq!(k.driver, None);
    assert_eq!(k.holder, Some(std::process::id()));
    assert_eq!(next_event(&events).await.unwrap().kind, EventKind::Claimed);
    let again = r
        .call(Request::Bind {
            busid: "1-2".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(again.code, ErrorCode::AlreadyBound);

    r.call(Request::Unbind {
        busid: "1-2".into(),
    })
    .await
    .unwrap();
    let k = r.bus.kernel("1-2").unwrap();
    assert_eq!(k.driver.as_deref(), Some("usbhid"));
    assert_eq!(k.holder, None);
    assert_eq!(next_event(&events).await.unwrap().kind, EventKind::Released);
    assert!(r.status().await.claims.is_empty());
    let e = r
        .call(Request::Unbind {
            busid: "1-2".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::NotBound);
}

#[tokio::test]
async fn claim_failures_carry_stable_codes_os_errors_and_land_in_recent_errors() {
    let mut denied = spec("1-2", Some("usbhid"), None);
    denied.fail_claim = Some(Fault {
        stage: FaultStage::Open,
        errno: 13,
    });
    let mut busy = spec("1-3", None, None);
    busy.held_by_program = true;
    let mut stuck = spec("1-4", Some("usb-storage"), None);
    stuck.fail_claim = Some(Fault {
        stage: FaultStage::Detach,
        errno: 16,
    });
    let r = rig(vec![denied, busy, stuck]).await;
    let cases = [
        ("1-2", ErrorCode::AccessDenied, Some(OsCode::Errno(13))),
        ("1-3", ErrorCode::DeviceBusy, Some(OsCode::Errno(16))),
        ("1-4", ErrorCode::DetachFailed, Some(OsCode::Errno(16))),
        ("1-9", ErrorCode::NoSuchDevice, None),
        ("1-2;reboot", ErrorCode::InvalidBusid, None),
    ];
    for (busid, code, os) in cases {
        let e = r
            .call(Request::Bind {
                busid: busid.into(),
            })
            .await
            .unwrap_err();
        assert_eq!((e.code, e.os), (code, os), "{busid}");
    }
    // A failed claim leaves the device with its driver, and nothing bound.
    assert_eq!(
        r.bus.kernel("1-2").unwrap().driver.as_deref(),
        Some("usbhid")
    );
    let status = r.status().await;
    assert!(status.claims.is_empty());
    let codes: Vec<ErrorCode> = status.errors.iter().map(|e| e.code).collect();
    assert_eq!(
        codes,
        vec![
            ErrorCode::AccessDenied,
            ErrorCode::DeviceBusy,
            ErrorCode::DetachFailed
        ]
    );
    assert_eq!(status.errors[0].busid.as_deref(), Some("1-2"));
    assert_eq!(status.errors[0].os, Some(OsCode::Errno(13)));
}

#[tokio::test]
async fn imports_are_handed_over_exclusive_and_a_disconnect_keeps_the_claim() {
    let r = rig(vec![
        spec("1-2", Some("usbhid"), None),
        spec("1-3", None, None),
    ])
    .await;
    r.bind("1-2").await;
    // Only held devices are listed and importable.
    let list = usbip_client::list_devices(r.daemon).await.unwrap();
    let busids: Vec<_> = list.iter().map(|d| d.record.busid.as_str()).collect();
    assert_eq!(busids, vec!["1-2"]);
    assert!(matches!(
        Connection::import(r.daemon, "1-3").await,
        Err(ClientError::Refused(OpStatus::NoDev))
    ));

    let first = import_loopback(r.daemon, "1-2").await;
    loop_once(&first, b"through the extension").await;
    assert_eq!(r.state_of("1-2").await.as_deref(), Some("in use"));
    let client = r.status().await.claims[0].client.clone();
    assert!(client.is_some_and(|c| c.starts_with("127.0.0.1:")));
    assert!(matches!(
        Connection::import(r.daemon, "1-2").await,
        Err(ClientError::Refused(OpStatus::DevBusy))
    ));

    drop(first);
    assert!(eventually(|| async { r.state_of("1-2").await.as_deref() == Some("claimed") }).await);
    assert_eq!(
        r.bus.kernel("1-2").unwrap().driver,
        None,
        "still held after the client left"
    );
    let second = import_loopback(r.daemon, "1-2").await;
    loop_once(&second, b"again").await;
}

/// A session handed to the extension keeps the daemon's configured limits: here a 4 KiB
/// transfer limit, so a larger URB ends that connection (and only it).
#[tokio::test]
async fn a_handed_over_session_keeps_the_daemons_limits() {
    let r = rig(vec![spec("1-2", None, None)]).await;
    r.bind("1-2").await;
    let mut config = ServerConfig::default();
    config.limits.max_transfer_length = 4096;
    let listeners = Server::bind(&["127.0.0.1:0".parse().unwrap()])
        .await
        .unwrap();
    let strict = listeners[0].local_addr().unwrap();
    let server = Server::new(Registry::new(), config.clone()).with_external(Arc::new(
        ExtensionLink::new(r.socket.clone()).with_limits(&config),
    ));
    tokio::spawn(async move { server.serve(listeners).await });

    let echo = |conn: &Connection, len: usize| {
        let back = conn.start(Submit::bulk_in(1, len as u32));
        let out = conn.start(Submit::bulk_out(1, vec![7u8; len]));
        async move { (back.unwrap().wait().await, out.unwrap().wait().await) }
    };
    let conn = import_loopback(strict, "1-2").await;
    let (back, out) = echo(&conn, 4096).await;
    assert_eq!((back.unwrap().data.len(), out.unwrap().status), (4096, 0));
    let too_big = conn.start(Submit::bulk_in(1, 8192)).unwrap();
    assert!(too_big.wait().await.is_err(), "the connection is closed");
    assert!(conn.is_closed());

    // The claim stays and the device serves the next client, held to its own daemon's limits.
    let mut other = None;
    for _ in 0..1500 {
        if let Ok(c) = Connection::import(r.daemon, "1-2").await {
            other = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let other = other.expect("the device is importable again");
    let c = other
        .submit(set_configuration(gadget_zero::CONFIG_LOOPBACK))
        .await
        .unwrap();
    assert_eq!(c.status, 0);
    let (back, out) = echo(&other, 8192).await;
    assert_eq!((back.unwrap().data.len(), out.unwrap().status), (8192, 0));
}

/// The daemon's server-wide budget (`max_total_buffered_bytes`) rides with each import, and the
/// extension counts every session it hosts against one budget: two clients, each well under
/// its own limit, pass it together; the one whose bytes pass it is closed, the other goes on.
#[tokio::test]
async fn handed_over_sessions_share_the_daemons_server_wide_budget() {
    const MIB: usize = 1024 * 1024;
    let r = rig(vec![spec("1-2", None, None), spec("1-3", None, None)]).await;
    r.bind("1-2").await;
    r.bind("1-3").await;
    let config = ServerConfig {
        max_buffered_bytes: 256 * MIB,
        max_total_buffered_bytes: 8 * MIB,
        ..ServerConfig::default()
    };
    let listeners = Server::bind(&["127.0.0.1:0".parse().unwrap()])
        .await
        .unwrap();
    let daemon = listeners[0].local_addr().unwrap();
    let server = Server::new(Registry::new(), config.clone()).with_external(Arc::new(
        ExtensionLink::new(r.socket.clone()).with_limits(&config),
    ));
    tokio::spawn(async move { server.serve(listeners).await });

    // Gadget zero takes the first 1 MiB OUT transfer and holds the next ones (its loopback
    // buffer is full): 5 MiB held for each client after six.
    let hold = |conn: &Connection| {
        (0..6)
            .map(|_| conn.start(Submit::bulk_out(1, vec![0x5a; MIB])).unwrap())
            .collect::<Vec<_>>()
    };
    let first = import_loopback(daemon, "1-2").await;
    let second = import_loopback(daemon, "1-3").await;
    let _first_held = hold(&first);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!first.is_closed(), "5 MiB is under the 8 MiB budget");
    let _second_held = hold(&second);
    assert!(
        eventually(|| async { second.is_closed() }).await,
        "10 MiB held by the extension's sessions together: the one passing the budget is closed"
    );
    assert!(!first.is_closed(), "the other client goes on");
    let back = first.submit(Submit::bulk_in(1, MIB as u32)).await.unwrap();
    assert_eq!((back.status, back.data.len()), (0, MIB));
}

#[tokio::test]
async fn unbind_ends_the_session_of_a_client_in_use() {
    let r = rig(vec![spec("1-2", Some("usbhid"), None)]).await;
    r.bind("1-2").await;
    let conn = import_loopback(r.daemon, "1-2").await;
    let parked = conn.start(Submit::bulk_in(1, 512)).unwrap();
    r.call(Request::Unbind {
        busid: "1-2".into(),
    })
    .await
    .unwrap();
    assert!(tokio::time::timeout(Duration::from_secs(5), parked.wait())
        .await
        .unwrap()
        .is_err());
    assert_eq!(
        r.bus.kernel("1-2").unwrap().driver.as_deref(),
        Some("usbhid")
    );
}

#[tokio::test]
async fn unplug_mid_transfer_releases_and_replug_reclaims_without_user_action() {
    let r = rig(vec![
        spec("1-2", Some("usbhid"), None),
        spec("1-5", None, Some("SER-1")),
    ])
    .await;
    r.bind("1-2").await;
    r.bind("1-5").await;
    let events = Client::connect(&r.socket).await.unwrap();
    events.subscribe().await.unwrap();

    let conn = import_loopback(r.daemon, "1-2").await;
    let parked = conn.start(Submit::bulk_in(1, 512)).unwrap();
    r.bus.unplug("1-2");
    let gone = next_event(&events).await.unwrap();
    assert_eq!((gone.kind, gone.busid.as_str()), (EventKind::Gone, "1-2"));
    assert!(tokio::time::timeout(Duration::from_secs(5), parked.wait())
        .await
        .unwrap()
        .is_err());
    assert_eq!(r.state_of("1-2").await.as_deref(), Some("absent"));
    assert!(usbip_client::list_devices(r.daemon)
        .await
        .unwrap()
        .iter()
        .all(|d| d.record.busid != "1-2"));

    // Same port, same VID:PID, no serial: claimed again.
    r.bus.plug(spec("1-2", Some("usbhid"), None));
    let back = next_event(&events).await.unwrap();
    assert_eq!(
        (back.kind, back.busid.as_str()),
        (EventKind::Reclaimed, "1-2")
    );
    assert_eq!(r.state_of("1-2").await.as_deref(), Some("claimed"));
    assert_eq!(r.bus.kernel("1-2").unwrap().driver, None);
    let conn = import_loopback(r.daemon, "1-2").await;
    loop_once(&conn, b"back").await;

    // A device with a serial is recognised on another port.
    r.bus.unplug("1-5");
    assert_eq!(next_event(&events).await.unwrap().kind, EventKind::Gone);
    r.bus.plug(spec("2-1", None, Some("SER-1")));
    let moved = next_event(&events).await.unwrap();
    assert_eq!(
        (moved.kind, moved.busid.as_str()),
        (EventKind::Reclaimed, "2-1")
    );
    let busids: Vec<String> = r
        .status()
        .await
        .claims
        .into_iter()
        .map(|c| c.busid)
        .collect();
    assert_eq!(busids, vec!["1-2".to_string(), "2-1".to_string()]);
    // A different device on a bound port is left alone.
    r.bus.unplug("1-2");
    let _ = next_event(&events).await;
    let mut other = spec("1-2", Some("usbhid"), None);
    other.pid = 0x9999;
    r.bus.plug(other);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        r.bus.kernel("1-2").unwrap().driver.as_deref(),
        Some("usbhid")
    );
    assert_eq!(r.state_of("1-2").await.as_deref(), Some("absent"));
}

#[tokio::test]
async fn a_restart_restores_claims_and_finishes_an_interrupted_unbind() {
    let r = rig(vec![
        spec("1-2", Some("usbhid"), None),
        spec("1-3", Some("cdc_acm"), None),
        spec("1-4", None, None),
    ])
    .await;
    r.bind("1-2").await;
    r.bind("1-3").await;
    r.bind("1-4").await;
    let store = ClaimStore::new(r.dir.path().join("claims.json"));
    let mut saved = store.load().unwrap();
    assert_eq!(saved.len(), 3);
    // Crash: the process goes without any cleanup, in the middle of unbinding 1-3.
    saved[1].phase = usbipd::extension::claims::Phase::Releasing;
    store.save(&saved).unwrap();
    r.ipc.abort();
    let Rig { bus, dir, ext, .. } = r;
    // Closes the devices as the kernel closes a dead process's files: drivers stay detached.
    ext.shutdown().await;
    assert_eq!(bus.kernel("1-3").unwrap().driver, None);
    bus.unplug("1-4"); // and one device is unplugged while nobody runs

    let (ext2, socket, _ipc) = start_extension(
        bus.clone(),
        dir.path(),
        PeerPolicy::with_self(vec![], vec![]),
    )
    .await;
    let status = match client::call(&socket, &Request::Status).await.unwrap() {
        Response::Status(s) => s,
        other => panic!("{other:?}"),
    };
    let claims: Vec<(String, String)> = status
        .claims
        .iter()
        .map(|c| (c.busid.clone(), c.state.clone()))
        .collect();
    assert_eq!(
        claims,
        vec![
            ("1-2".to_string(), "claimed".to_string()),
            ("1-4".to_string(), "absent".to_string())
        ]
    );
    assert_eq!(bus.kernel("1-2").unwrap().driver, None);
    assert_eq!(
        bus.kernel("1-3").unwrap().driver.as_deref(),
        Some("cdc_acm")
    );
    assert_eq!(store.load().unwrap().len(), 2);
    // The absent one is claimed when it comes back.
    bus.plug(spec("1-4", None, None));
    assert!(
        eventually(|| async {
            ext2.status()
                .claims
                .iter()
                .any(|c| c.busid == "1-4" && c.state == "claimed")
        })
        .await
    );
}

#[tokio::test]
async fn a_claim_registry_from_the_future_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("claims.json"),
        r#"{"version":7,"claims":[]}"#,
    )
    .unwrap();
    let ext = Extension::new(
        VirtualBus::new(VirtualBusSpec::default()) as Arc<dyn HostBus>,
        ClaimStore::new(dir.path().join("claims.json")),
        HealthState::new("embedded", "virtual", vec![]),
        ServerConfig::default(),
    );
    let e = ext.start().await.unwrap_err();
    assert!(e.to_string().contains("version 7"), "{e}");
}

/// The macOS signature rule through the real IPC server, with a stand-in for the Security
/// framework: a signed extension refuses even root when the peer is not signed by its team.
#[tokio::test]
async fn peers_whose_code_signature_is_not_the_extensions_team_are_refused() {
    use std::os::fd::BorrowedFd;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use usbipd::ipc::signature::{SignatureError, SignaturePolicy, SignatureReader};

    /// Our team is A1B2C3D4E5; the n-th check of the peer answers `peer(n)`.
    struct Team {
        peer: fn(usize) -> bool,
        checks: AtomicUsize,
    }
    impl SignatureReader for Team {
        fn own_team(&self) -> Result<Option<String>, SignatureError> {
            Ok(Some("A1B2C3D4E5".into()))
        }
        fn peer_satisfies(
            &self,
            _: BorrowedFd<'_>,
            requirement: &str,
        ) -> Result<bool, SignatureError> {
            assert!(requirement.contains("\"A1B2C3D4E5\""), "{requirement}");
            Ok((self.peer)(self.checks.fetch_add(1, Ordering::SeqCst)))
        }
    }
    let start = |peer: fn(usize) -> bool| async move {
        let dir = tempfile::tempdir().unwrap();
        let bus = VirtualBus::new(VirtualBusSpec {
            devices: vec![spec("1-2", Some("usbhid"), None)],
        });
        let reader = Arc::new(Team {
            peer,
            checks: AtomicUsize::new(0),
        });
        let policy = PeerPolicy {
            signature: SignaturePolicy::for_own_signature(reader).0,
            ..PeerPolicy::with_self(vec![], vec![])
        };
        let (ext, socket, ipc) = start_extension(bus.clone(), dir.path(), policy).await;
        (dir, bus, socket, ext, ipc)
    };
    let bind_as = |peer: fn(usize) -> bool| async move {
        let (_dir, bus, socket, _ext, _ipc) = start(peer).await;
        let request = Request::Bind {
            busid: "1-2".into(),
        };
        let answer = client::call(&socket, &request).await;
        let driver = bus.kernel("1-2").unwrap().driver;
        (answer, driver)
    };

    // A request written before the check is not served: the extension answers with a
    // challenge, and only a request carrying its nonce is carried out.
    {
        use usbipd::ipc::socket::IpcSocket;
        let (_dir, bus, socket, _ext, _ipc) = start(|_| true).await;
        let sock = IpcSocket::connect(&socket).await.unwrap();
        let ask = |raw: String| {
            let sock = &sock;
            async move {
                sock.send(raw.as_bytes(), None).await.unwrap();
                let m = sock.recv(1 << 20).await.unwrap().unwrap();
                serde_json::from_slice::<serde_json::Value>(&m.data).unwrap()
            }
        };
        let bind = r#"{"version":1,"request":{"bind":{"busid":"1-2"}}"#;
        let v = ask(format!("{bind}}}")).await;
        let nonce = v["response"]["challenge"]["nonce"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(nonce.len(), 32);
        assert_eq!(bus.kernel("1-2").unwrap().driver.as_deref(), Some("usbhid"));
        let v = ask(format!(r#"{bind},"nonce":"{}"}}"#, "0".repeat(32))).await;
        assert_eq!(v["response"]["error"]["code"], 4, "a wrong nonce: {v}");
        assert_eq!(bus.kernel("1-2").unwrap().driver.as_deref(), Some("usbhid"));
    }

    let (answer, driver) = bind_as(|_| true).await;
    assert!(answer.is_ok(), "{answer:?}");
    assert_eq!(driver, None, "bound");

    let (answer, driver) = bind_as(|_| false).await;
    let e = answer.unwrap_err();
    assert_eq!(e.code, ErrorCode::UntrustedSignature);
    assert!(e.message.contains("team A1B2C3D4E5"), "{}", e.message);
    assert_eq!(driver.as_deref(), Some("usbhid"));

    // Signed at connect, but the message comes from another image (a forked child, an exec):
    // refused, because each message is checked again.
    let (answer, driver) = bind_as(|n| n == 0).await;
    assert_eq!(answer.unwrap_err().code, ErrorCode::UntrustedSignature);
    assert_eq!(driver.as_deref(), Some("usbhid"));
}

#[tokio::test]
async fn malformed_oversized_and_future_requests_are_refused_one_by_one() {
    use usbipd::ipc::socket::IpcSocket;
    let r = rig(vec![spec("1-2", None, None)]).await;
    let sock = IpcSocket::connect(&r.socket).await.unwrap();
    let answer = |raw: &'static [u8]| {
        let sock = &sock;
        async move {
            sock.send(raw, None).await.unwrap();
            let m = sock.recv(1 << 20).await.unwrap().unwrap();
            serde_json::from_slice::<serde_json::Value>(&m.data).unwrap()
        }
    };
    let v = answer(br#"{"version":9,"request":"status"}"#).await;
    assert_eq!(v["response"]["error"]["code"], 2);
    let v = answer(b"not json").await;
    assert_eq!(v["response"]["error"]["code"], 1);
    // The same connection still works after refusals.
    let v = answer(br#"{"version":1,"request":"status"}"#).await;
    assert_eq!(v["response"]["status"]["health"]["running"], true);
    // A message over the limit closes the connection without being read (the refusal may be
    // lost to the reset of the unread bytes).
    let _ = sock
        .send(&vec![b' '; usbipd::ipc::MAX_MESSAGE + 1], None)
        .await;
    if let Ok(Some(m)) = sock.recv(1 << 20).await {
        let v: serde_json::Value = serde_json::from_slice(&m.data).unwrap();
        assert_eq!(v["response"]["error"]["code"], 1);
    }
    assert!(!matches!(sock.recv(1 << 20).await, Ok(Some(_))));
}
