//! Hosting the sessions of imported devices: the daemon hands over a client's TCP connection
//! (with the bytes it already read), the extension serves it against its own export table, and
//! the claim book keeps the session's task with its device so unbind, unplug and shutdown can
//! end it. Server-side detach ends sessions and keeps the claims.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::task::JoinHandle;
use tracing::info;

use super::service::{Extension, ExtensionError};
use crate::ipc::{DetachedSession, SessionLimits};

impl Extension {
    /// Hands an imported client's connection to its device's session.
    pub fn import(
        self: &Arc<Self>,
        fd: OwnedFd,
        busid: String,
        peer: SocketAddr,
        leftover: Vec<u8>,
        limits: Option<SessionLimits>,
    ) -> Result<(), ExtensionError> {
        // The daemon's limits where it sent them (validated at parse), ours otherwise. Either
        // way the count against the server-wide budget is `server_config`'s, one for every
        // session this extension hosts.
        let config = match limits {
            Some(limits) => super::limits::apply(&limits, &self.server_config),
            None => self.server_config.clone(),
        };
        let std_stream = std::net::TcpStream::from(fd);
        let stream = std_stream
            .set_nonblocking(true)
            .and_then(|()| tokio::net::TcpStream::from_std(std_stream))
            .map_err(ExtensionError::NotTcp)?;
        let ext = self.clone();
        let id = busid.clone();
        let task = tokio::spawn(async move {
            let on_attached = {
                let id = id.clone();
                Box::new(
                    move || info!(busid = %id, %peer, transition = "claimed -> in use", "client attached"),
                )
            };
            crate::server::serve_import(
                stream,
                peer,
                id.clone(),
                BytesMut::from(&leftover[..]),
                &ext.exports,
                &config,
                Some(on_attached),
            )
            .await;
            info!(busid = %id, %peer, transition = "in use -> claimed", "client gone; the claim stays until unbind");
        });
        // Not bound: the task is dropped (detached); serve_import answers NODEV by itself.
        drop(self.book().add_session(&busid, task, |t| !t.is_finished()));
        Ok(())
    }

    /// Server-side detach: ends the client session of `busid` (of every device when `None`);
    /// the claims stay.
    pub fn detach(&self, busid: Option<&str>) -> Vec<DetachedSession> {
        let ended = match busid {
            Some(b) => self
                .exports
                .detach(b)
                .map(|c| vec![(b.to_string(), c)])
                .unwrap_or_default(),
            None => self.exports.detach_all(),
        };
        for (busid, client) in &ended {
            info!(%busid, %client, "client detached on request");
        }
        ended
            .into_iter()
            .map(|(b, c)| DetachedSession::new(b, c))
            .collect()
    }
}

/// Aborts session tasks and waits until each has dropped its device session and socket, so
/// the device is no longer in use when this returns.
pub(super) async fn end_sessions(sessions: Vec<JoinHandle<()>>) {
    for task in sessions {
        task.abort();
        let _ = task.await;
    }
}
