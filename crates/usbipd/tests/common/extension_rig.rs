//! The extension in-process on a virtual host bus, with its real IPC socket and a daemon in
//! front (`Rig`), and the small client steps the extension tests repeat.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use usbip_client::{Connection, Submit};
use usbipd::device::r#virtual::gadget_zero;
use usbipd::device::registry::Registry;
use usbipd::extension::bus::HostBus;
use usbipd::extension::claims::ClaimStore;
use usbipd::extension::dispatch::ExtensionHandler;
use usbipd::extension::health::HealthState;
use usbipd::extension::link::ExtensionLink;
use usbipd::extension::service::Extension;
use usbipd::extension::virtual_bus::{VirtualBus, VirtualBusSpec, VirtualDeviceSpec};
use usbipd::ipc::client;
use usbipd::ipc::peer::PeerPolicy;
use usbipd::ipc::socket::IpcListener;
use usbipd::ipc::{Request, Response, StatusReport};
use usbipd::server::{Server, ServerConfig};

pub struct Rig {
    pub dir: tempfile::TempDir,
    pub bus: Arc<VirtualBus>,
    pub socket: PathBuf,
    pub daemon: std::net::SocketAddr,
    pub ext: Arc<Extension>,
    pub ipc: tokio::task::JoinHandle<()>,
}

pub fn spec(busid: &str, driver: Option<&str>, serial: Option<&str>) -> VirtualDeviceSpec {
    VirtualDeviceSpec {
        driver: driver.map(Into::into),
        serial: serial.map(Into::into),
        ..VirtualDeviceSpec::new(busid)
    }
}

pub async fn start_extension(
    bus: Arc<VirtualBus>,
    dir: &Path,
    policy: PeerPolicy,
) -> (Arc<Extension>, PathBuf, tokio::task::JoinHandle<()>) {
    let ext = Extension::new(
        bus as Arc<dyn HostBus>,
        ClaimStore::new(dir.join("claims.json")),
        HealthState::new("embedded", "virtual", vec![]),
        ServerConfig::default(),
    );
    ext.start().await.unwrap();
    let socket = dir.join("ext.sock");
    let listener = IpcListener::bind(&socket).unwrap();
    let ipc = tokio::spawn(usbipd::ipc::server::serve(
        listener,
        policy,
        Arc::new(ExtensionHandler(ext.clone())),
    ));
    (ext, socket, ipc)
}

pub async fn rig(devices: Vec<VirtualDeviceSpec>) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let bus = VirtualBus::new(VirtualBusSpec { devices });
    let (ext, socket, ipc) = start_extension(
        bus.clone(),
        dir.path(),
        PeerPolicy::with_self(vec![], vec![]),
    )
    .await;
    let listeners = Server::bind(&["127.0.0.1:0".parse().unwrap()])
        .await
        .unwrap();
    let daemon = listeners[0].local_addr().unwrap();
    let server = Server::new(Registry::new(), ServerConfig::default())
        .with_external(Arc::new(ExtensionLink::new(socket.clone())));
    tokio::spawn(async move { server.serve(listeners).await });
    Rig {
        dir,
        bus,
        socket,
        daemon,
        ext,
        ipc,
    }
}

impl Rig {
    pub async fn call(&self, request: Request) -> Result<Response, usbipd::ipc::IpcError> {
        client::call(&self.socket, &request).await
    }

    pub async fn status(&self) -> StatusReport {
        match self.call(Request::Status).await.unwrap() {
            Response::Status(s) => s,
            other => panic!("{other:?}"),
        }
    }

    pub async fn state_of(&self, busid: &str) -> Option<String> {
        self.status()
            .await
            .claims
            .into_iter()
            .find(|c| c.busid == busid)
            .map(|c| c.state)
    }

    pub async fn bind(&self, busid: &str) {
        match self
            .call(Request::Bind {
                busid: busid.into(),
            })
            .await
        {
            Ok(Response::Bound(_)) => {}
            other => panic!("bind {busid}: {other:?}"),
        }
    }
}

/// Polls `cond` for up to 30 s (a deadline for a slow machine that saves with fsync).
pub async fn eventually<F: std::future::Future<Output = bool>>(
    mut cond: impl FnMut() -> F,
) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        if cond().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cond().await
}

pub fn set_configuration(value: u8) -> Submit {
    Submit::control([0, 9, value, 0, 0, 0, 0, 0], Bytes::new())
}

/// Imports through the daemon and switches Gadget Zero to loopback.
pub async fn import_loopback(addr: std::net::SocketAddr, busid: &str) -> Connection {
    let conn = Connection::import(addr, busid).await.unwrap();
    let c = conn
        .submit(set_configuration(gadget_zero::CONFIG_LOOPBACK))
        .await
        .unwrap();
    assert_eq!(c.status, 0);
    conn
}

pub async fn loop_once(conn: &Connection, msg: &[u8]) {
    let back = conn.start(Submit::bulk_in(1, 512)).unwrap();
    conn.submit(Submit::bulk_out(1, msg.to_vec()))
        .await
        .unwrap();
    assert_eq!(&back.wait().await.unwrap().data[..], msg);
}
