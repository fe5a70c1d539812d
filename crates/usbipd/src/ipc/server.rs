//! The extension's side of the IPC socket: authenticate each connection by its kernel peer
//! credentials, validate every request, hand valid ones to the [`Handler`].
//!
//! It never passes a request it has not validated, nor a descriptor that came with anything
//! but an import, and it logs peers by uid/pid only.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use serde::Deserialize;
use tokio::sync::broadcast;
use tracing::{debug, warn};

use super::peer::PeerPolicy;
use super::socket::{IpcListener, IpcSocket};
use super::{
    from_hex, validate_busid, ErrorCode, Event, IpcError, Request, RequestMessage, Response,
    ResponseMessage, MAX_LEFTOVER, MAX_MESSAGE, PROTOCOL_VERSION,
};
use futures_core::future::BoxFuture;

/// What answers validated requests (the extension service).
pub trait Handler: Send + Sync + 'static {
    /// Answers one request. `fd` is the client's TCP socket of an `Import`, `None` otherwise.
    fn handle(&self, request: Request, fd: Option<OwnedFd>) -> BoxFuture<'_, Response>;

    /// Events for a `Subscribe` connection.
    fn subscribe(&self) -> broadcast::Receiver<Event>;
}

/// Accepts connections until the task is dropped.
pub async fn serve(listener: IpcListener, policy: PeerPolicy, handler: Arc<dyn Handler>) {
    let policy = Arc::new(policy);
    loop {
        match listener.accept().await {
            Ok(sock) => {
                let (policy, handler) = (policy.clone(), handler.clone());
                tokio::spawn(async move { connection(sock, &policy, handler.as_ref()).await });
            }
            Err(e) => {
                warn!(error = %e, "IPC accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

async fn connection(sock: IpcSocket, policy: &PeerPolicy, handler: &dyn Handler) {
    let cred = match sock.peer_cred() {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "IPC peer without credentials refused");
            return;
        }
    };
    if !policy.permits(&cred) {
        warn!(
            uid = cred.uid,
            gid = cred.gid,
            pid = cred.pid,
            "IPC peer refused: not root nor an allowed user or group"
        );
        let e = IpcError::new(
            ErrorCode::NotAuthorized,
            format!(
                "uid {} gid {} may not use the extension",
                cred.uid, cred.gid
            ),
        );
        let _ = send(&sock, &Response::Error(e)).await;
        return;
    }
    if let Err(refusal) = policy.signature.check(sock.as_fd()) {
        warn!(
            uid = cred.uid,
            pid = cred.pid,
            reason = %refusal,
            "IPC peer refused: code signature"
        );
        let e = IpcError::new(ErrorCode::UntrustedSignature, refusal.to_string());
        let _ = send(&sock, &Response::Error(e)).await;
        return;
    }
    let mut challenge: Option<String> = None;
    loop {
        let msg = match sock.recv(MAX_MESSAGE).await {
            Ok(Some(m)) => m,
            Ok(None) => return,
            Err(e) => {
                if e.kind() == std::io::ErrorKind::InvalidData {
                    warn!(uid = cred.uid, pid = cred.pid, reason = %e, "IPC connection closed: protocol error");
                    let e = IpcError::new(ErrorCode::InvalidRequest, e.to_string());
                    let _ = send(&sock, &Response::Error(e)).await;
                } else {
                    debug!(error = %e, "IPC connection ended");
                }
                return;
            }
        };
        // Again for each message: the kernel's token names whoever used the socket last, so a
        // process sharing the connection (a forked child) is checked for what it sends.
        if let Err(refusal) = policy.signature.check(sock.as_fd()) {
            warn!(uid = cred.uid, reason = %refusal, "IPC message refused: code signature");
            let e = IpcError::new(ErrorCode::UntrustedSignature, refusal.to_string());
            let _ = send(&sock, &Response::Error(e)).await;
            return;
        }
        let (request, nonce) = match parse(&msg.data, msg.fd.is_some()) {
            Ok(r) => r,
            Err(e) => {
                debug!(uid = cred.uid, code = %e.code, "IPC request refused");
                if send(&sock, &Response::Error(e)).await.is_err() {
                    return;
                }
                continue;
            }
        };
        if policy.signature.is_checked() {
            match (&challenge, &nonce) {
                (Some(sent), Some(got)) if sent == got => {}
                (Some(_), Some(_)) => {
                    warn!(uid = cred.uid, "IPC message refused: wrong nonce");
                    let e = IpcError::new(ErrorCode::UntrustedSignature, "wrong nonce");
                    let _ = send(&sock, &Response::Error(e)).await;
                    return;
                }
                _ => {
                    // Not served: it may have been written before the check (see Challenge).
                    let Some(fresh) = new_nonce() else {
                        warn!("IPC peer refused: no randomness for a challenge");
                        return;
                    };
                    challenge = Some(fresh.clone());
                    if send(&sock, &Response::Challenge { nonce: fresh })
                        .await
                        .is_err()
                    {
                        return;
                    }
                    continue;
                }
            }
        }
        if request == Request::Subscribe {
            stream_events(&sock, handler.subscribe()).await;
            return;
        }
        let response = handler.handle(request, msg.fd).await;
        if send(&sock, &response).await.is_err() {
            return;
        }
    }
}

/// 128 random bits, hex; `None` if the OS gives no randomness.
fn new_nonce() -> Option<String> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .ok()?;
    Some(super::to_hex(&bytes))
}

/// Checks version, shape and every field of one request; returns it with its nonce.
pub fn parse(data: &[u8], has_fd: bool) -> Result<(Request, Option<String>), IpcError> {
    #[derive(Deserialize)]
    struct Version {
        version: u32,
    }
    let version = serde_json::from_slice::<Version>(data)
        .map_err(|e| IpcError::new(ErrorCode::InvalidRequest, format!("bad request: {e}")))?
        .version;
    if version != PROTOCOL_VERSION {
        return Err(IpcError::new(
            ErrorCode::UnsupportedVersion,
            format!("protocol version {version}; this extension speaks {PROTOCOL_VERSION}"),
        ));
    }
    let RequestMessage { request, nonce, .. } = serde_json::from_slice::<RequestMessage>(data)
        .map_err(|e| IpcError::new(ErrorCode::InvalidRequest, format!("bad request: {e}")))?;
    match &request {
        Request::Bind { busid } | Request::Unbind { busid } => validate_busid(busid)?,
        Request::Detach { busid: Some(busid) } => validate_busid(busid)?,
        Request::Import {
            busid,
            peer,
            leftover,
            limits,
        } => {
            validate_busid(busid)?;
            if let Some(limits) = limits {
                limits.validate()?;
            }
            if peer.len() > 64 || peer.parse::<SocketAddr>().is_err() {
                return Err(IpcError::new(ErrorCode::InvalidRequest, "bad peer address"));
            }
            if leftover.len() > 2 * MAX_LEFTOVER || from_hex(leftover).is_none() {
                return Err(IpcError::new(
                    ErrorCode::InvalidRequest,
                    format!("leftover must be hex of at most {MAX_LEFTOVER} bytes"),
                ));
            }
            if !has_fd {
                return Err(IpcError::new(
                    ErrorCode::InvalidRequest,
                    "an import must carry the client's socket",
                ));
            }
        }
        _ => {}
    }
    if has_fd && !matches!(request, Request::Import { .. }) {
        // The descriptor is closed when the caller drops it.
        return Err(IpcError::new(
            ErrorCode::InvalidRequest,
            "only an import may carry a descriptor",
        ));
    }
    Ok((request, nonce))
}

async fn stream_events(sock: &IpcSocket, mut events: broadcast::Receiver<Event>) {
    if send(sock, &Response::Subscribed).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Ok(e) => {
                    if send(sock, &Response::Event(e)).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    warn!(missed = n, "IPC subscriber too slow; events dropped");
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            // A subscriber sends nothing more; anything (or EOF) ends the stream.
            _ = sock.recv(16) => return,
        }
    }
}

async fn send(sock: &IpcSocket, response: &Response) -> std::io::Result<()> {
    let msg = ResponseMessage {
        version: PROTOCOL_VERSION,
        response: response.clone(),
    };
    let bytes = serde_json::to_vec(&msg).map_err(std::io::Error::other)?;
    sock.send(&bytes, None).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_refuses_bad_versions_fields_and_stray_descriptors() {
        let v2 = br#"{"version":2,"request":"status"}"#;
        assert_eq!(
            parse(v2, false).unwrap_err().code,
            ErrorCode::UnsupportedVersion
        );
        let junk = b"{\"version\":1,\"request\":\"launch\"}";
        assert_eq!(
            parse(junk, false).unwrap_err().code,
            ErrorCode::InvalidRequest
        );
        let status = br#"{"version":1,"request":"status"}"#;
        assert_eq!(parse(status, false).unwrap(), (Request::Status, None));
        assert_eq!(
            parse(status, true).unwrap_err().code,
            ErrorCode::InvalidRequest
        );
        let bind = br#"{"version":1,"request":{"bind":{"busid":"1-2/../x"}}}"#;
        assert_eq!(
            parse(bind, false).unwrap_err().code,
            ErrorCode::InvalidBusid
        );
        let import = |peer: &str, leftover: &str| {
            format!(
                r#"{{"version":1,"request":{{"import":{{"busid":"1-2","peer":"{peer}","leftover":"{leftover}"}}}}}}"#
            )
        };
        assert!(parse(import("10.0.0.1:5", "00ff").as_bytes(), true).is_ok());
        assert!(parse(import("10.0.0.1:5", "").as_bytes(), false).is_err());
        assert!(parse(import("nonsense", "").as_bytes(), true).is_err());
        let big = "00".repeat(MAX_LEFTOVER + 1);
        assert!(parse(import("10.0.0.1:5", &big).as_bytes(), true).is_err());
    }
}
