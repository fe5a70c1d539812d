//! The daemon's side of the extension: its bound devices appear in the daemon's device list,
//! imports of them are handed over (the client's TCP socket travels to the extension with
//! SCM_RIGHTS), and its events are logged.
//!
//! It never touches a URB: after the handover the daemon is out of the data path.

use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::Duration;

use bytes::BytesMut;
use tokio::net::TcpStream;
use tracing::{debug, info, warn};
use usbip_proto::{ExportedDevice, Limits, OpReply, OpRequest};

use crate::ipc::client::{self, Client};
use crate::ipc::{
    from_hex, to_hex, BusDeviceReport, ClaimInfo, EventKind, Request, Response, SessionLimits,
    MAX_LEFTOVER,
};
use futures_core::future::BoxFuture;

use crate::server::{External, ServerConfig};

/// What the extension says of its devices: the exported records, its claims and the host's
/// devices as it sees them.
#[derive(Debug, Clone, Default)]
pub struct ExtensionView {
    pub exported: Vec<ExportedDevice>,
    pub claims: Vec<ClaimInfo>,
    pub host: Vec<BusDeviceReport>,
}

pub struct ExtensionLink {
    socket: PathBuf,
    /// Sent with each import: the session in the extension keeps the daemon's limits.
    limits: SessionLimits,
}

impl ExtensionLink {
    /// A link whose imports carry the default limits.
    pub fn new(socket: PathBuf) -> ExtensionLink {
        ExtensionLink {
            socket,
            limits: super::limits::session_limits(&ServerConfig::default()),
        }
    }

    /// Imports carry the limits of this daemon's configuration.
    pub fn with_limits(mut self, config: &ServerConfig) -> ExtensionLink {
        self.limits = super::limits::session_limits(config);
        self
    }

    async fn list_devices(&self) -> Vec<ExportedDevice> {
        let devlist = match client::call(&self.socket, &Request::Exported).await {
            Ok(Response::Exported { devlist }) => devlist,
            Ok(_) => return Vec::new(),
            Err(e) => {
                debug!(error = %e, "extension devices not listed");
                return Vec::new();
            }
        };
        let Some(bytes) = from_hex(&devlist) else {
            return Vec::new();
        };
        match OpReply::decode(&OpRequest::DevList, &bytes, &Limits::default()) {
            Ok(Some((OpReply::DevList(devices), _))) => devices,
            _ => Vec::new(),
        }
    }

    /// The extension's claims, exported devices and host devices, for `usbipd list`; `None`
    /// when it does not answer.
    pub async fn view(&self) -> Option<ExtensionView> {
        let claims = match client::call(&self.socket, &Request::Status).await {
            Ok(Response::Status(status)) => status.claims,
            _ => return None,
        };
        let host = match client::call(&self.socket, &Request::HostDevices).await {
            Ok(Response::HostDevices(devices)) => devices,
            _ => Vec::new(),
        };
        Some(ExtensionView {
            exported: self.list_devices().await,
            claims,
            host,
        })
    }

    async fn hand_over(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        busid: String,
        leftover: BytesMut,
    ) -> Result<(), TcpStream> {
        if leftover.len() > MAX_LEFTOVER {
            return Err(stream);
        }
        let Ok(client) = Client::connect(&self.socket).await else {
            return Err(stream);
        };
        let request = Request::Import {
            busid: busid.clone(),
            peer: peer.to_string(),
            leftover: to_hex(&leftover),
            limits: Some(self.limits),
        };
        match client.request_with_fd(&request, Some(stream.as_fd())).await {
            Ok(Response::Accepted) => {
                debug!(%peer, %busid, "import handed to the extension");
                Ok(()) // our copy of the socket closes here; the extension has its own
            }
            Ok(_) => Err(stream),
            Err(e) => {
                warn!(%peer, %busid, code = %e.code, "import not handed to the extension");
                Err(stream)
            }
        }
    }

    /// Logs the extension's events (claims, hotplug) for as long as the daemon runs,
    /// reconnecting when the extension restarts.
    pub async fn follow_events(self) {
        loop {
            if let Ok(client) = Client::connect(&self.socket).await {
                if client.subscribe().await.is_ok() {
                    while let Some(e) = client.next_event().await {
                        let vid_pid = format!("{:04x}:{:04x}", e.vid, e.pid);
                        match e.kind {
                            EventKind::ClaimFailed | EventKind::Gone => {
                                warn!(busid = %e.busid, %vid_pid, event = ?e.kind, "extension")
                            }
                            _ => info!(busid = %e.busid, %vid_pid, event = ?e.kind, "extension"),
                        }
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl External for ExtensionLink {
    fn list(&self) -> BoxFuture<'_, Vec<ExportedDevice>> {
        Box::pin(self.list_devices())
    }

    fn import(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        busid: String,
        leftover: BytesMut,
    ) -> BoxFuture<'_, Result<(), TcpStream>> {
        Box::pin(self.hand_over(stream, peer, busid, leftover))
    }
}
