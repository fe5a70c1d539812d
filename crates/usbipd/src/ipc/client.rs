//! The asking side of the IPC socket, used by the daemon and the CLI: one request, one
//! response, with a timeout; or a stream of events.
//!
//! It never waits on the extension without a deadline.

use std::os::fd::BorrowedFd;
use std::path::Path;
use std::time::Duration;

use super::socket::IpcSocket;
use super::{
    ErrorCode, Event, IpcError, Request, RequestMessage, Response, ResponseMessage, MAX_MESSAGE,
    PROTOCOL_VERSION,
};

/// How long a request may take before the extension counts as unavailable. Binding a real
/// device (detach, open, claim) takes milliseconds; this is for a hung extension.
pub const TIMEOUT: Duration = Duration::from_secs(10);

pub struct Client {
    sock: IpcSocket,
    /// The nonce the extension challenged this connection with, sent with every request.
    nonce: std::sync::Mutex<Option<String>>,
}

fn unavailable(path: &Path, e: impl std::fmt::Display) -> IpcError {
    IpcError::new(
        ErrorCode::Unavailable,
        format!("cannot reach the extension at {}: {e}", path.display()),
    )
}

impl Client {
    /// Connects to the extension at `path`, after checking that the socket and its directory
    /// belong to us or root (see `persist::private_dir`).
    pub async fn connect(path: &Path) -> Result<Client, IpcError> {
        match crate::persist::private_dir::check_socket(path) {
            Ok(()) => {}
            // Nothing there: not running, which connecting reports below.
            Err(crate::persist::UntrustedPath::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(IpcError::new(ErrorCode::UntrustedSocket, e.to_string())),
        }
        let sock = IpcSocket::connect(path)
            .await
            .map_err(|e| unavailable(path, e))?;
        Ok(Client {
            sock,
            nonce: std::sync::Mutex::new(None),
        })
    }

    /// Sends one request and waits for its response; an `Error` response is returned as `Err`.
    pub async fn request(&self, request: &Request) -> Result<Response, IpcError> {
        self.request_with_fd(request, None).await
    }

    /// As [`Client::request`], handing `fd` over with the request.
    pub async fn request_with_fd(
        &self,
        request: &Request,
        fd: Option<BorrowedFd<'_>>,
    ) -> Result<Response, IpcError> {
        let encode = |nonce: Option<String>| {
            serde_json::to_vec(&RequestMessage {
                version: PROTOCOL_VERSION,
                request: request.clone(),
                nonce,
            })
            .map_err(|e| std::io::Error::other(e.to_string()))
        };
        let exchange = async {
            if let Err(e) = self.sock.send(&encode(self.nonce())?, fd).await {
                // The extension refuses a peer it does not allow before reading anything, and
                // closes: its reason is waiting to be read, and is the answer.
                return match self.recv().await {
                    Ok(refusal @ Response::Error(_)) => Ok(refusal),
                    _ => Err(e),
                };
            }
            match self.recv().await? {
                // Asked again, after the extension checked who we are: the same request with
                // the nonce (once; a second challenge is an answer like any other).
                Response::Challenge { nonce } => {
                    self.set_nonce(nonce.clone());
                    self.sock.send(&encode(Some(nonce))?, fd).await?;
                    self.recv().await
                }
                other => Ok(other),
            }
        };
        match tokio::time::timeout(TIMEOUT, exchange).await {
            Ok(Ok(Response::Error(e))) => Err(e),
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(IpcError::new(ErrorCode::Unavailable, e.to_string())),
            Err(_) => Err(IpcError::new(
                ErrorCode::Unavailable,
                "the extension did not answer in time",
            )),
        }
    }

    fn nonce(&self) -> Option<String> {
        self.nonce.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_nonce(&self, nonce: String) {
        *self.nonce.lock().unwrap_or_else(|e| e.into_inner()) = Some(nonce);
    }

    async fn recv(&self) -> std::io::Result<Response> {
        let msg = self
            .sock
            .recv(MAX_MESSAGE)
            .await?
            .ok_or_else(|| std::io::Error::other("the extension closed the connection"))?;
        let reply: ResponseMessage =
            serde_json::from_slice(&msg.data).map_err(std::io::Error::other)?;
        Ok(reply.response)
    }

    /// Subscribes to events; then call [`Client::next_event`].
    pub async fn subscribe(&self) -> Result<(), IpcError> {
        match self.request(&Request::Subscribe).await? {
            Response::Subscribed => Ok(()),
            other => Err(IpcError::new(
                ErrorCode::Internal,
                format!("unexpected answer {other:?}"),
            )),
        }
    }

    /// The next event, or `None` when the extension went away.
    pub async fn next_event(&self) -> Option<Event> {
        match self.recv().await {
            Ok(Response::Event(e)) => Some(e),
            _ => None,
        }
    }
}

/// Connects, asks once, disconnects.
pub async fn call(path: &Path, request: &Request) -> Result<Response, IpcError> {
    Client::connect(path).await?.request(request).await
}
