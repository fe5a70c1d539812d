//! The TCP side of a virtual serial device: one peer at a time, bytes both ways.
//!
//! One tokio task per device, aborted when the device is dropped. It never holds the pipe
//! lock across an await and never reads more from the peer than the pipe has room for.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::Shared;

const CHUNK: usize = 16 * 1024;
/// After a failed accept (e.g. out of file descriptors), wait instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Aborts the bridge task, and so closes its listener and peer, when dropped.
pub struct BridgeTask(JoinHandle<()>);

impl Drop for BridgeTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub fn spawn(listener: TcpListener, shared: Arc<Shared>) -> BridgeTask {
    BridgeTask(tokio::spawn(run(listener, shared)))
}

async fn run(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((stream, addr)) => serve(stream, addr, &listener, &shared).await,
            Err(e) => {
                tracing::warn!(error = %e, "serial bridge: accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// Bridges one peer until it leaves or fails; others who connect meanwhile are turned away.
async fn serve(stream: TcpStream, addr: SocketAddr, listener: &TcpListener, shared: &Shared) {
    tracing::debug!(%addr, "serial bridge: peer connected");
    // Serial traffic is often a keystroke at a time: do not let Nagle sit on it.
    let _ = stream.set_nodelay(true);
    shared.pipes().peer_connected(addr);
    let (reader, writer) = stream.into_split();
    let result = tokio::select! {
        r = from_peer(reader, shared) => r,
        r = to_peer(writer, shared) => r,
        () = refuse_others(listener) => Ok(()),
    };
    shared.pipes().peer_gone();
    match result {
        Ok(()) => tracing::debug!(%addr, "serial bridge: peer left"),
        Err(e) => tracing::debug!(%addr, error = %e, "serial bridge: peer failed"),
    }
}

/// Peer -> USB host. Ends at the peer's end of stream.
async fn from_peer(mut reader: OwnedReadHalf, shared: &Shared) -> io::Result<()> {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let room = shared.pipes().to_host_room();
        if room == 0 {
            // Backpressure: leave the bytes in the socket until IN URBs drain the pipe.
            shared.to_host_room.notified().await;
            continue;
        }
        let n = reader.read(&mut buf[..room.min(CHUNK)]).await?;
        if n == 0 {
            return Ok(());
        }
        shared.pipes().push_from_peer(&buf[..n]);
    }
}

/// USB host -> peer. Ends when a write fails.
async fn to_peer(mut writer: OwnedWriteHalf, shared: &Shared) -> io::Result<()> {
    loop {
        let chunk = shared.pipes().take_for_peer(CHUNK);
        if chunk.is_empty() {
            shared.to_peer_ready.notified().await;
            continue;
        }
        writer.write_all(&chunk).await?;
    }
}

async fn refuse_others(listener: &TcpListener) {
    loop {
        match listener.accept().await {
            Ok((_stream, addr)) => {
                tracing::info!(%addr, "serial bridge: refused, another peer is connected");
            }
            Err(_) => tokio::time::sleep(ACCEPT_BACKOFF).await,
        }
    }
}
