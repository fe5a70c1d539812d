//! Accepts TCP connections on every listen address and hands each to its own task.
//!
//! Connection-level policy lives here: the connection limit and socket options (TCP_NODELAY,
//! keepalive). It never reads or writes protocol bytes itself.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use super::policy::PerAddress;
use super::tls::TlsServer;
use super::{handshake, External, ServerConfig};
use crate::device::registry::Registry;

/// A running USB/IP server: its registry of exported devices and its configuration.
#[derive(Clone)]
pub struct Server {
    registry: Arc<Registry>,
    config: Arc<ServerConfig>,
    connections: Arc<Semaphore>,
    per_address: Arc<PerAddress>,
    external: Option<Arc<dyn External>>,
    tls: Option<Arc<TlsServer>>,
}

impl Server {
    pub fn new(registry: Arc<Registry>, config: ServerConfig) -> Server {
        Server {
            connections: Arc::new(Semaphore::new(
                config.max_connections.min(Semaphore::MAX_PERMITS),
            )),
            per_address: Arc::default(),
            registry,
            config: Arc::new(config),
            external: None,
            tls: None,
        }
    }

    /// Also lists and serves the devices of `external` (the extension).
    pub fn with_external(mut self, external: Arc<dyn External>) -> Server {
        self.external = Some(external);
        self
    }

    /// Serves the listeners given to [`Server::serve_tls`] with TLS, as `tls` says.
    pub fn with_tls(mut self, tls: Arc<TlsServer>) -> Server {
        self.tls = Some(tls);
        self
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Binds every address; fails if any cannot be bound.
    pub async fn bind(addrs: &[SocketAddr]) -> std::io::Result<Vec<TcpListener>> {
        let mut listeners = Vec::with_capacity(addrs.len());
        for addr in addrs {
            let listener = TcpListener::bind(addr).await.map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}"))
            })?;
            info!(addr = %listener.local_addr()?, "listening");
            listeners.push(listener);
        }
        Ok(listeners)
    }

    /// Accepts on all listeners until the task is dropped.
    pub async fn serve(&self, listeners: Vec<TcpListener>) {
        self.serve_tls(listeners, Vec::new()).await
    }

    /// Accepts plain USB/IP on `plain` and USB/IP in TLS on `tls` (which needs
    /// [`Server::with_tls`]) until the task is dropped.
    pub async fn serve_tls(&self, plain: Vec<TcpListener>, tls: Vec<TcpListener>) {
        let mut tasks = tokio::task::JoinSet::new();
        let tls_server = self.tls.clone();
        let all = plain
            .into_iter()
            .map(|l| (l, None))
            .chain(tls.into_iter().map(|l| (l, tls_server.clone())));
        for (listener, tls) in all {
            let server = self.clone();
            tasks.spawn(async move { server.accept_loop(listener, tls).await });
        }
        while tasks.join_next().await.is_some() {}
    }

    async fn accept_loop(&self, listener: TcpListener, tls: Option<Arc<TlsServer>>) {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(conn) => conn,
                Err(e) => {
                    // EMFILE and friends: wait instead of spinning; the listener stays.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if !self.config.allow.permits(peer.ip()) {
                warn!(%peer, "connection refused: client address not in the allow list");
                continue;
            }
            let Ok(permit) = self.connections.clone().try_acquire_owned() else {
                warn!(%peer, limit = self.config.max_connections, "connection refused: max_connections reached");
                continue;
            };
            let Some(slot) = self
                .per_address
                .acquire(peer.ip(), self.config.max_connections_per_address)
            else {
                warn!(%peer, limit = self.config.max_connections_per_address, "connection refused: max_connections_per_address reached");
                continue;
            };
            configure_socket(&stream);
            let server = self.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                debug!(%peer, tls = tls.is_some(), "connected");
                let (registry, external, config) =
                    (&server.registry, server.external.as_ref(), &*server.config);
                match tls {
                    None => handshake::handle(stream, peer, registry, external, config).await,
                    Some(tls) => {
                        if let Some(stream) =
                            tls.accept(stream, peer, config.handshake_timeout).await
                        {
                            handshake::handle(stream, peer, registry, external, config).await
                        }
                    }
                }
                debug!(%peer, "disconnected");
                drop((permit, slot));
            });
        }
    }
}

/// TCP_NODELAY (URBs are latency-bound), and keepalive as usbipd-win sets it (10 s idle, 1 s
/// interval, 5 probes) so that a client that vanished without FIN frees its device. Keepalive
/// only probes an idle connection; one with replies unacknowledged (a client that vanished
/// mid-transfer) is ended by TCP_USER_TIMEOUT (Linux) instead of after ~15 minutes of
/// retransmissions.
fn configure_socket(stream: &TcpStream) {
    if let Err(e) = stream.set_nodelay(true) {
        debug!(error = %e, "TCP_NODELAY not set");
    }
    let keepalive = TcpKeepalive::new()
        .with_time(Duration::from_secs(10))
        .with_interval(Duration::from_secs(1))
        .with_retries(5);
    let socket = SockRef::from(stream);
    if let Err(e) = socket.set_tcp_keepalive(&keepalive) {
        debug!(error = %e, "TCP keepalive not set");
    }
    if let Err(e) = crate::platform::net::set_user_timeout(&socket, UNACKNOWLEDGED_TIMEOUT) {
        debug!(error = %e, "TCP_USER_TIMEOUT not set");
    }
}

/// How long sent data may stay unacknowledged before the connection is given up: well above
/// any pause of a healthy client, far below TCP's own retransmission give-up.
const UNACKNOWLEDGED_TIMEOUT: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_sockets_get_nodelay_keepalive_and_a_user_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (accepted, _client) = tokio::join!(listener.accept(), client);
        let (stream, _) = accepted.unwrap();
        configure_socket(&stream);
        let socket = SockRef::from(&stream);
        assert!(socket.nodelay().unwrap());
        assert!(socket.keepalive().unwrap());
        assert_eq!(socket.keepalive_time().unwrap(), Duration::from_secs(10));
        use crate::platform::net::{user_timeout, HAS_USER_TIMEOUT};
        assert_eq!(
            user_timeout(&socket).unwrap(),
            HAS_USER_TIMEOUT.then_some(UNACKNOWLEDGED_TIMEOUT)
        );
    }
}
