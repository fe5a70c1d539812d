//! Network policy: server-wide and per-device allowlists, and per-address connection limits.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{start_server, start_server_with, ScriptedDevice};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use usbip_client::{list_devices, Connection, Error};
use usbip_proto::OpStatus;
use usbipd::device::registry::Registry;
use usbipd::device::Device;
use usbipd::server::{Allowlist, ServerConfig};

/// The server closes the connection without sending a byte.
async fn closed_without_reply(addr: std::net::SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return true;
    };
    let mut buf = Vec::new();
    matches!(
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test]
async fn clients_outside_the_server_allowlist_are_closed_before_the_handshake() {
    let config = ServerConfig {
        allow: Allowlist::new(vec!["10.0.0.0/8".parse().unwrap()]),
        ..ServerConfig::default()
    };
    let addr = start_server(vec![ScriptedDevice::new("9-4") as Arc<dyn Device>], config).await;
    assert!(closed_without_reply(addr).await);
    assert!(list_devices(addr).await.is_err());

    let config = ServerConfig {
        allow: Allowlist::new(vec!["127.0.0.0/8".parse().unwrap()]),
        ..ServerConfig::default()
    };
    let addr = start_server(vec![ScriptedDevice::new("9-4") as Arc<dyn Device>], config).await;
    assert_eq!(list_devices(addr).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_device_allowlist_hides_the_device_and_refuses_its_import() {
    let registry = Registry::new();
    registry.add(ScriptedDevice::new("9-4"));
    registry.add_with_allowlist(
        ScriptedDevice::new("9-5"),
        Allowlist::new(vec!["192.0.2.0/24".parse().unwrap()]),
    );
    let addr = start_server_with(registry, ServerConfig::default()).await;
    let list = list_devices(addr).await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].record.busid, "9-4");
    assert!(matches!(
        Connection::import(addr, "9-5").await,
        Err(Error::Refused(OpStatus::Na))
    ));
    assert!(Connection::import(addr, "9-4").await.is_ok());
}

#[tokio::test]
async fn connections_per_address_are_limited() {
    let config = ServerConfig {
        max_connections_per_address: 2,
        ..ServerConfig::default()
    };
    let addr = start_server(vec![ScriptedDevice::new("9-4") as Arc<dyn Device>], config).await;
    let _a = TcpStream::connect(addr).await.unwrap();
    let _b = TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(closed_without_reply(addr).await);
    drop(_a);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(list_devices(addr).await.is_ok());
}
