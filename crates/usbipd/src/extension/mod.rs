//! The extension: the privileged process that claims host devices exclusively, keeps its claims
//! across restarts (of itself and of the daemon), follows hotplug, and serves the imported
//! devices' sessions itself. The daemon talks to it over `ipc`.
//!
//! `bus` is its view of the hardware (usbfs/IOKit adapter, or `virtual_bus` in tests),
//! `claims` the registry file, `claim_book` the claim state machine as plain data, `service`
//! the core that carries out the book's transitions, `sessions` the imported devices' sessions,
//! `status` what it reports, `shutdown` its stop, `dispatch` its IPC face, `health` status and
//! recent errors, `supervisor` embedded mode's restarts, `link` the daemon's side. It never accepts a request
//! it has not validated, and never opens a device nobody bound.

pub mod bus;
pub mod claim_book;
pub mod claims;
pub mod dispatch;
pub mod health;
pub mod host_bus;
pub mod instance_lock;
pub mod limits;
pub mod link;
pub mod service;
pub mod sessions;
pub mod shutdown;
pub mod status;
pub mod supervisor;
#[cfg(feature = "test-support")]
pub mod virtual_bus;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use tracing::{info, warn};

use crate::ipc::peer::PeerPolicy;
use crate::ipc::signature::SignaturePolicy;
use crate::ipc::socket::IpcListener;
use crate::server::ServerConfig;
use bus::HostBus;
use claims::ClaimStore;
use dispatch::ExtensionHandler;
use health::HealthState;
use service::Extension;

/// Where the extension listens unless told otherwise.
pub fn default_socket() -> Result<PathBuf, crate::persist::NoUserDirectory> {
    Ok(crate::persist::runtime_dir()?.join("extension.sock"))
}

/// Where the claim registry lives unless told otherwise: beside the bindings.
pub fn default_state() -> Result<PathBuf, crate::persist::NoUserDirectory> {
    Ok(crate::persist::state_dir()?.join("claims.json"))
}

/// How `usbipd extension run` was asked to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub socket: PathBuf,
    pub state: PathBuf,
    /// Test double: a virtual host bus described by this spec file.
    #[cfg(feature = "test-support")]
    pub virtual_bus: Option<PathBuf>,
    pub allow_uids: Vec<u32>,
    pub allow_gids: Vec<u32>,
    /// `embedded` or `service`.
    pub mode: String,
}

fn open_bus(opts: &RunOptions) -> anyhow::Result<Arc<dyn HostBus>> {
    #[cfg(feature = "test-support")]
    if let Some(spec) = &opts.virtual_bus {
        let bus = virtual_bus::VirtualBus::open(spec)
            .map_err(|e| anyhow::anyhow!("virtual bus spec {}: {e}", spec.display()))?;
        return Ok(bus);
    }
    let _ = opts;
    #[cfg(host_usb)]
    return Ok(host_bus::UsbHostBus::system());
    #[cfg(not(host_usb))]
    anyhow::bail!("this platform has no host bus backend")
}

/// Where the platform reads code signatures (macOS), peers must be signed by our team when we
/// are signed (see `ipc::signature`); elsewhere the uid/gid check is the whole of peer
/// authentication.
fn signature_policy() -> SignaturePolicy {
    match crate::platform::code_signatures() {
        Some(reader) => {
            let (policy, why) = SignaturePolicy::for_own_signature(reader);
            info!("{why}");
            policy
        }
        None => SignaturePolicy::NotChecked,
    }
}

/// Checks privileges and logs precisely what is missing.
fn self_check(bus: &dyn HostBus) -> Vec<String> {
    let missing = crate::platform::missing_privileges();
    for m in &missing {
        if bus.kind() == "virtual" {
            info!(missing = %m, "privilege check (not needed for the virtual bus)");
        } else {
            warn!(missing = %m, "privilege check: claims of driver-held devices will fail");
        }
    }
    if missing.is_empty() {
        info!("privilege check: everything needed is there");
    }
    missing
}

/// `usbipd extension run`: restore the claims, serve IPC until SIGTERM/SIGINT. Tells systemd
/// it is ready (Type=notify) once its socket listens.
pub async fn run(opts: RunOptions) -> anyhow::Result<()> {
    let started = Instant::now();
    // Before anything that reads or writes the claims: a second instance would claim devices
    // and overwrite the registry of the live one.
    let lock = instance_lock::InstanceLock::acquire(&opts.state)?;
    info!(lock = %lock.path().display(), "instance lock held");
    let bus = open_bus(&opts)?;
    let missing = self_check(bus.as_ref());
    let health = HealthState::new(&opts.mode, bus.kind(), missing);
    let ext = Extension::new(
        bus,
        ClaimStore::new(opts.state.clone()),
        health,
        ServerConfig::default(),
    );
    ext.start().await?;
    let listener = IpcListener::bind(&opts.socket)
        .map_err(|e| anyhow::anyhow!("extension socket {}: {e}", opts.socket.display()))?;
    let policy = PeerPolicy {
        signature: signature_policy(),
        ..PeerPolicy::with_self(opts.allow_uids.clone(), opts.allow_gids.clone())
    };
    let ipc = tokio::spawn(crate::ipc::server::serve(
        listener,
        policy,
        Arc::new(ExtensionHandler(ext.clone())),
    ));
    info!(
        pid = std::process::id(),
        socket = %opts.socket.display(),
        state = %opts.state.display(),
        start_to_ready_ms = started.elapsed().as_secs_f64() * 1000.0,
        "extension ready"
    );
    match crate::platform::sd_notify::ready() {
        Ok(true) => info!("readiness sent to systemd"),
        Ok(false) => {}
        Err(e) => warn!(error = %e, "readiness not sent to systemd"),
    }
    crate::platform::signals::shutdown_signal().await;
    ipc.abort();
    ext.shutdown().await;
    let _ = std::fs::remove_file(&opts.socket);
    drop(lock);
    Ok(())
}
