//! The first phase of every connection: read one OP_REQ, answer it, and for a successful
//! import hand the connection to a URB session.
//!
//! A malformed or late request closes this connection only, with a log line saying why.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::{info, warn};
use usbip_proto::{OpReply, OpRequest, OpStatus};

use super::stream::Conn;
use super::{session, External, ServerConfig};
use crate::device::registry::Registry;
use crate::device::{Completer, OpenError};

/// Called once a client's import was accepted and its reply sent (the device is "in use").
pub(crate) type OnAttached = Box<dyn FnOnce() + Send>;

pub(super) async fn handle<S: Conn>(
    mut stream: S,
    peer: SocketAddr,
    registry: &Arc<Registry>,
    external: Option<&Arc<dyn External>>,
    config: &ServerConfig,
) {
    let mut buf = BytesMut::with_capacity(64);
    let request = match tokio::time::timeout(
        config.handshake_timeout,
        read_request(&mut stream, &mut buf),
    )
    .await
    {
        Ok(Ok(Some(request))) => request,
        Ok(Ok(None)) => return, // closed before asking anything (a port probe)
        Ok(Err(e)) => {
            warn!(%peer, error = %e, "closing connection: bad handshake");
            return;
        }
        Err(_) => {
            warn!(%peer, timeout = ?config.handshake_timeout, "closing connection: handshake_timeout exceeded");
            return;
        }
    };

    match request {
        OpRequest::DevList => {
            let mut devices = registry.list_for(peer.ip());
            if let Some(external) = external {
                devices.extend(external.list().await);
            }
            let mut out = Vec::new();
            OpReply::DevList(devices).encode(&mut out);
            if let Err(e) = send(&mut stream, &out).await {
                warn!(%peer, error = %e, "device list not sent");
            }
        }
        OpRequest::Import { busid } => match external {
            // Devices held by the extension are served there: the connection is handed over.
            Some(external) if !registry.contains(&busid) => {
                let mut out = Vec::new();
                OpReply::Import(Err(OpStatus::NoDev)).encode(&mut out);
                match stream.into_tcp() {
                    Ok(tcp) => {
                        if let Err(mut tcp) = external.import(tcp, peer, busid.clone(), buf).await {
                            info!(%peer, %busid, "import refused: no such device");
                            let _ = send(&mut tcp, &out).await;
                        }
                    }
                    // A TLS session stays here: the extension gets a loopback relay of it.
                    Err(stream) => {
                        super::tls::hand_over_relayed(stream, peer, busid, buf, external, &out)
                            .await
                    }
                }
            }
            _ => serve_import(stream, peer, busid, buf, registry, config, None).await,
        },
    }
}

/// Answers OP_REQ_IMPORT for `busid` from `registry` and, if accepted, runs the URB session
/// until the client leaves. `leftover` holds bytes that arrived after the request. The
/// extension calls this on connections the daemon handed over.
pub(crate) async fn serve_import<S: Conn>(
    mut stream: S,
    peer: SocketAddr,
    busid: String,
    leftover: BytesMut,
    registry: &Arc<Registry>,
    config: &ServerConfig,
    on_attached: Option<OnAttached>,
) {
    let refuse = |status: OpStatus, why: &str| {
        info!(%peer, %busid, ?status, "import refused: {why}");
        let mut out = Vec::new();
        OpReply::Import(Err(status)).encode(&mut out);
        out
    };
    let claim = match registry.claim(&busid, peer) {
        Ok(claim) => claim,
        Err(status) => {
            let why = match status {
                OpStatus::DevBusy => "in use by another client",
                OpStatus::Na => "not exported to this client",
                _ => "no such device",
            };
            let _ = send(&mut stream, &refuse(status, why)).await;
            return;
        }
    };
    let (completer, completions) = Completer::channel();
    let inline = completer.inline();
    let device_session = match claim.device().open(completer) {
        Ok(s) => s,
        Err(e) => {
            let status = match e {
                OpenError::Busy => OpStatus::DevBusy,
                OpenError::Gone => OpStatus::NoDev,
                OpenError::Failed(_) => OpStatus::DevErr,
            };
            let _ = send(&mut stream, &refuse(status, &e.to_string())).await;
            return;
        }
    };
    let record = claim.device().describe().record;
    let mut out = Vec::new();
    OpReply::Import(Ok(record.clone())).encode(&mut out);
    if let Err(e) = send(&mut stream, &out).await {
        warn!(%peer, %busid, error = %e, "import reply not sent");
        return;
    }
    info!(%peer, %busid, vid_pid = %format!("{:04x}:{:04x}", record.id_vendor, record.id_product), "imported");
    if let Some(on_attached) = on_attached {
        on_attached();
    }
    let end = session::run(
        stream,
        leftover,
        session::Attached {
            peer,
            busid: &busid,
            devid: record.devid(),
            busnum: record.busnum,
            devnum: record.devnum,
            device: device_session,
            inline,
            completions,
            revoked: claim.revoked(),
        },
        config,
    )
    .await;
    // The device session was dropped inside run(), so the device is released before the claim.
    drop(claim);
    match end {
        // The client left, or the device was taken away on purpose (unbind, `usbipd detach`)
        // or unplugged: expected, not a fault.
        session::End::ClientClosed | session::End::Revoked => {
            info!(%peer, %busid, reason = %end, "detached")
        }
        // A broken protocol, an exceeded limit or a failed device: worth a warning.
        _ => warn!(%peer, %busid, reason = %end, "detached"),
    }
}

/// Reads until one whole request has arrived. `Ok(None)`: the peer closed first.
/// Writes a whole reply and flushes it (TLS buffers; TCP does not).
pub(super) async fn send(
    stream: &mut (impl AsyncWrite + Unpin),
    bytes: &[u8],
) -> std::io::Result<()> {
    stream.write_all(bytes).await?;
    stream.flush().await
}

async fn read_request(
    stream: &mut (impl AsyncRead + Unpin),
    buf: &mut BytesMut,
) -> Result<Option<OpRequest>, Box<dyn std::error::Error + Send + Sync>> {
    loop {
        if let Some((request, used)) = OpRequest::decode(buf)? {
            let _ = buf.split_to(used);
            return Ok(Some(request));
        }
        if stream.read_buf(buf).await? == 0 {
            if buf.is_empty() {
                return Ok(None);
            }
            return Err("connection closed in the middle of a request".into());
        }
    }
}
