//! The local control socket of a running server: `usbipd list` and `usbipd virtual type` talk
//! to it. One JSON request per line, one JSON response per line, on a Unix socket that only
//! the server's user can open (mode 0600 in a 0700 directory).
//!
//! It never accepts more than one line of [`MAX_REQUEST`] bytes per request.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tracing::{debug, warn};

use crate::activation::status::{self, Facts};
use crate::activation::Activation;
use crate::device::registry::Registry;
use crate::devices::TypeText;
use crate::extension::link::ExtensionLink;
use crate::host_exports::HostExports;
use crate::listing::DeviceEntry;

const MAX_REQUEST: u64 = 64 * 1024;

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum Request {
    List,
    Type {
        busid: String,
        text: String,
    },
    /// Re-read the bindings and the host's devices (after `usbipd bind`/`unbind`).
    Reload,
    /// The extension's activation status (`usbipd status`).
    Status,
    /// An operation that wants a device (`usbipd bind`) begins: starts installing the
    /// extension on first use, and answers the mode this operation uses.
    BeginOperation,
    /// Server-side detach: end the client session of `busid` (of every device when `None`).
    Detach {
        busid: Option<String>,
    },
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<DeviceEntry>,
    /// `Status`: the activation part of `usbipd status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation: Option<crate::activation::status::StatusReport>,
    /// `BeginOperation`: what the operation uses (`None`: this daemon has no activation, as
    /// with `--extension off|embedded|external`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<crate::activation::Mode>,
    /// `Detach`: the sessions it ended.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub detached: Vec<crate::ipc::DetachedSession>,
}

impl Response {
    fn ok() -> Response {
        Response {
            ok: true,
            error: None,
            devices: Vec::new(),
            activation: None,
            mode: None,
            detached: Vec::new(),
        }
    }

    fn error(e: impl Into<String>) -> Response {
        Response {
            ok: false,
            error: Some(e.into()),
            ..Response::ok()
        }
    }
}

/// Where the control socket lives unless `--control` says otherwise.
pub fn default_path() -> Result<PathBuf, crate::persist::NoUserDirectory> {
    Ok(crate::persist::runtime_dir()?.join("control.sock"))
}

/// What the control server can reach.
pub struct ControlContext {
    pub registry: Arc<Registry>,
    pub keyboards: HashMap<String, Arc<dyn TypeText>>,
    /// The host devices, where this platform has a host backend.
    pub host: Option<Arc<HostExports>>,
    /// `--extension auto`: the activation controller and what its status needs.
    pub activation: Option<(Activation, Facts)>,
    /// The extension, whose claims `usbipd list` shows (any mode but `--extension off`).
    pub extension: Option<Arc<ExtensionLink>>,
}

/// Binds the control socket, replacing a stale one.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    // A directory we create is made for the runtime (see `runtime_dir_mode`); one that exists
    // (say /tmp, for `--control /tmp/x.sock`) is not ours to change, only to judge: the socket
    // itself is made 0600 below.
    crate::persist::private_dir::prepare_socket_path(path, crate::persist::runtime_dir_mode())?;
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            format!(
                "another usbipd is running with control socket {}",
                path.display()
            ),
        ));
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

pub async fn serve(listener: UnixListener, ctx: Arc<ControlContext>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let ctx = ctx.clone();
                tokio::spawn(async move { handle(stream, &ctx).await });
            }
            Err(e) => {
                warn!(error = %e, "control socket accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

async fn handle(stream: UnixStream, ctx: &ControlContext) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read.take(MAX_REQUEST)).lines();
    let response = match lines.next_line().await {
        Ok(Some(line)) => match serde_json::from_str::<Request>(&line) {
            Ok(request) => answer(request, ctx).await,
            Err(e) => Response::error(format!("bad request: {e}")),
        },
        Ok(None) => return,
        Err(e) => Response::error(format!("bad request: {e}")),
    };
    debug!(ok = response.ok, "control request answered");
    let mut out = serde_json::to_vec(&response).unwrap_or_default();
    out.push(b'\n');
    let _ = write.write_all(&out).await;
}

async fn answer(request: Request, ctx: &ControlContext) -> Response {
    match request {
        Request::Reload => {
            if let Some(host) = &ctx.host {
                host.refresh_logged().await;
            }
            Response::ok()
        }
        Request::List => {
            let host: Vec<_> = ctx.host.iter().flat_map(|h| h.listing()).collect();
            let mut devices = crate::listing::own_rows(&ctx.registry, &host);
            // Extension mode: what it claimed is shared (or attached), not "not shared".
            if let Some(link) = &ctx.extension {
                if let Some(view) = link.view().await {
                    crate::listing::merge(&mut devices, &view);
                }
            }
            Response {
                devices,
                ..Response::ok()
            }
        }
        Request::Status => match &ctx.activation {
            Some((activation, facts)) => Response {
                activation: Some(status::report(&activation.snapshot(), facts)),
                mode: Some(activation.mode()),
                ..Response::ok()
            },
            None => Response::ok(),
        },
        Request::BeginOperation => Response {
            mode: ctx.activation.as_ref().map(|(a, _)| a.begin_operation()),
            ..Response::ok()
        },
        Request::Detach { busid } => {
            let ended = match &busid {
                Some(b) => ctx
                    .registry
                    .detach(b)
                    .map(|c| vec![(b.clone(), c)])
                    .unwrap_or_default(),
                None => ctx.registry.detach_all(),
            };
            for (busid, client) in &ended {
                tracing::info!(%busid, %client, "client detached on request");
            }
            Response {
                detached: ended
                    .into_iter()
                    .map(|(b, c)| crate::ipc::DetachedSession::new(b, c))
                    .collect(),
                ..Response::ok()
            }
        }
        Request::Type { busid, text } => match ctx.keyboards.get(&busid) {
            Some(kb) => match kb.type_text(&text) {
                Ok(()) => Response::ok(),
                Err(e) => Response::error(e),
            },
            None => Response::error(format!("no virtual keyboard with busid {busid}")),
        },
    }
}

/// Whether a [`request`] failed because the socket is someone else's, not because no server
/// runs.
pub fn is_untrusted(e: &anyhow::Error) -> bool {
    e.downcast_ref::<crate::persist::UntrustedPath>().is_some()
}

/// Sends one request to a running server.
pub async fn request(path: &Path, request: &Request) -> anyhow::Result<Response> {
    match crate::persist::private_dir::check_socket(path) {
        Ok(()) => {}
        // Nothing there: not running, which connecting reports below.
        Err(crate::persist::UntrustedPath::Io { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound => {}
        // Refused, not "not running": a caller that falls back when no server runs must not
        // fall back here (see `is_untrusted`).
        Err(e) => return Err(e.into()),
    }
    let mut stream = UnixStream::connect(path).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot reach a running usbipd at {}: {e} (is `usbipd server` running? use --control to point at its socket)",
            path.display()
        )
    })?;
    let mut line = serde_json::to_vec(request)?;
    line.push(b'\n');
    stream.write_all(&line).await?;
    let mut reply = String::new();
    BufReader::new(stream.take(16 * 1024 * 1024))
        .read_line(&mut reply)
        .await?;
    Ok(serde_json::from_str(&reply)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[tokio::test]
    async fn the_socket_is_private_and_a_shared_directory_keeps_its_mode() {
        let shared = tempfile::tempdir().unwrap();
        std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        let socket = shared.path().join("control.sock");
        let _listener = bind(&socket).unwrap();
        assert_eq!(
            mode(shared.path()),
            0o1777,
            "an existing directory is left alone"
        );
        assert_eq!(mode(&socket), 0o600);

        // A directory it creates is its own: private for a user, reachable but not writable by
        // others for root (the extension's allowed users connect in the same directory).
        let own = shared.path().join("usbipd");
        let _listener = bind(&own.join("control.sock")).unwrap();
        assert_eq!(mode(&own), crate::persist::runtime_dir_mode());
        assert_eq!(mode(&own) & 0o022, 0);
    }
}
