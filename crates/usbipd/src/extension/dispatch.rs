//! The extension's IPC face: each request to the method that serves it, and each domain error
//! to its wire code (`ipc::ErrorCode`) and message, here at the edge and nowhere else.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use futures_core::future::BoxFuture;
use tokio::sync::broadcast;

use super::claim_book::BookError;
use super::service::{Extension, ExtensionError};
use crate::ipc::server::Handler;
use crate::ipc::{from_hex, to_hex, ErrorCode, Event, IpcError, Request, Response};

/// A domain error as the client sees it: a stable code, a message, the OS error behind it.
impl From<ExtensionError> for IpcError {
    fn from(e: ExtensionError) -> IpcError {
        let message = e.to_string();
        match e {
            ExtensionError::Book(b) => {
                let code = match b {
                    BookError::AlreadyBound(_) => ErrorCode::AlreadyBound,
                    BookError::NoSuchDevice(_) => ErrorCode::NoSuchDevice,
                    BookError::NotBound(_) => ErrorCode::NotBound,
                    BookError::Vanished(_) => {
                        return IpcError::new(ErrorCode::Internal, "claim vanished")
                    }
                };
                IpcError::new(code, message)
            }
            ExtensionError::StateFile(_) => IpcError::new(ErrorCode::StateFile, message),
            ExtensionError::Claim { cause, .. } | ExtensionError::Release { cause, .. } => {
                IpcError {
                    code: cause.code,
                    message,
                    os: cause.os,
                }
            }
            ExtensionError::NotTcp(_) => IpcError::new(ErrorCode::InvalidRequest, message),
        }
    }
}

/// The IPC face of the extension.
pub struct ExtensionHandler(pub Arc<Extension>);

impl Handler for ExtensionHandler {
    fn handle(&self, request: Request, fd: Option<OwnedFd>) -> BoxFuture<'_, Response> {
        Box::pin(async move {
            let ext = &self.0;
            let result: Result<Response, IpcError> = match request {
                Request::Status => Ok(Response::Status(ext.status())),
                Request::HostDevices => Ok(Response::HostDevices(ext.host_devices())),
                Request::Bind { busid } => ext
                    .bind(&busid)
                    .await
                    .map(Response::Bound)
                    .map_err(Into::into),
                Request::Unbind { busid } => ext
                    .unbind(&busid)
                    .await
                    .map(|()| Response::Unbound {
                        busids: vec![busid],
                    })
                    .map_err(Into::into),
                Request::Detach { busid } => Ok(Response::Detached {
                    sessions: ext.detach(busid.as_deref()),
                }),
                Request::UnbindAll => ext
                    .unbind_all()
                    .await
                    .map(|busids| Response::Unbound { busids })
                    .map_err(Into::into),
                Request::Exported => Ok(Response::Exported {
                    devlist: to_hex(&ext.exported()),
                }),
                Request::Import {
                    busid,
                    peer,
                    leftover,
                    limits,
                } => match (fd, peer.parse(), from_hex(&leftover)) {
                    (Some(fd), Ok(peer), Some(leftover)) => ext
                        .import(fd, busid, peer, leftover, limits)
                        .map(|()| Response::Accepted)
                        .map_err(Into::into),
                    _ => Err(IpcError::new(ErrorCode::InvalidRequest, "bad import")),
                },
                Request::Subscribe => Ok(Response::Subscribed),
            };
            result.unwrap_or_else(Response::Error)
        })
    }

    fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.0.subscribe()
    }
}
