//! The network side: accept connections, answer the handshake, run the URB phase.
//!
//! `listener` accepts and applies connection-level policy, `handshake` answers DEVLIST and
//! IMPORT, `session` runs one imported device's URB traffic in one task, `inflight` is that
//! session's in-flight/unlink table as plain data, `writer` its queue of replies to the socket.

mod handshake;
mod inflight;
mod listener;
pub mod policy;
mod read_window;
mod session;
pub mod stream;
pub mod tls;
mod writer;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use futures_core::future::BoxFuture;
use tokio::net::TcpStream;
use usbip_proto::ExportedDevice;

use crate::capture::Capture;
pub use crate::device::allowlist::Allowlist;

pub(crate) use handshake::serve_import;
pub use listener::Server;
pub use tls::TlsServer;
use usbip_proto::Limits;
pub use writer::TotalBuffered;

/// Tunables of the server core. Every limit closes only the connection that exceeds it.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Sizes a peer's messages may not exceed.
    pub limits: Limits,
    /// URBs one connection may have in flight at once.
    pub max_in_flight: usize,
    /// Bytes one connection may hold in memory: replies queued for a client that does not
    /// read them fast enough (headers, IN data, iso descriptors), what it sent that is not yet
    /// decoded, and the OUT payload of its URBs in flight (a device may hold those without
    /// completing them). Should be well above `limits.max_transfer_length`.
    pub max_buffered_bytes: usize,
    /// Bytes all connections together may hold, counted as for `max_buffered_bytes`, so that
    /// `max_connections` clients cannot exhaust the machine; the client whose bytes pass it is
    /// closed.
    pub max_total_buffered_bytes: usize,
    /// The count against `max_total_buffered_bytes`, shared by every clone of this config
    /// (one server, its connections, the extension's sessions).
    pub total_buffered: writer::TotalBuffered,
    /// Connections open at once, in total.
    pub max_connections: usize,
    /// Connections open at once from one client address.
    pub max_connections_per_address: usize,
    /// Client networks allowed to connect at all; refused ones are closed before any byte.
    pub allow: Allowlist,
    /// How long a new connection may take to send its handshake request.
    pub handshake_timeout: Duration,
    /// Where every URB and its completion is recorded (`--capture`), if anywhere.
    pub capture: Option<Capture>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            limits: Limits::default(),
            // vhci-hcd itself never has more than a few hundred URBs queued per device.
            max_in_flight: 4096,
            // A client that reads its replies holds at most what it has outstanding, e.g. 64
            // URBs of 1 MiB in the benchmark; eight of the largest transfers is well above that.
            max_buffered_bytes: 128 * 1024 * 1024,
            // Eight connections at their limit.
            max_total_buffered_bytes: 1024 * 1024 * 1024,
            total_buffered: writer::TotalBuffered::default(),
            max_connections: 256,
            max_connections_per_address: 64,
            allow: Allowlist::default(),
            handshake_timeout: Duration::from_secs(30),
            capture: None,
        }
    }
}

/// Devices served by another process (the extension): listed with the server's own, and
/// imported by handing the client's connection over.
pub trait External: Send + Sync + 'static {
    /// The devices to add to a device list.
    fn list(&self) -> BoxFuture<'_, Vec<ExportedDevice>>;

    /// Hands the connection of a client that asked to import `busid` over; `leftover` holds
    /// bytes that arrived after the request. `Err` gives the connection back when it could not
    /// be handed over (the caller answers NODEV).
    fn import(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        busid: String,
        leftover: BytesMut,
    ) -> BoxFuture<'_, Result<(), TcpStream>>;
}
