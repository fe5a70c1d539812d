//! `usbipd server`: load the configuration, build the devices, listen, serve until a signal.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tracing::info;

use super::{ControlArg, StateArg};
use crate::config::Config;
use crate::control::{self, ControlContext};
use crate::device::registry::Registry;
use crate::devices;
use crate::host_exports::HostExports;
use crate::server::{Allowlist, Server, ServerConfig};

#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// Address to listen on; repeat for several (IPv4 and IPv6) [default: 0.0.0.0:3240]
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Vec<SocketAddr>,
    /// Only accept clients from this network (CIDR); repeat for several [default: everyone]
    #[arg(long, value_name = "CIDR")]
    pub allow: Vec<ipnet::IpNet>,
    /// Configuration file (TOML)
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Serve one virtual device of each kind (the default when nothing is configured)
    #[arg(long)]
    pub demo: bool,
    /// Serve only the virtual devices; never look at the host's USB devices
    #[arg(long)]
    pub no_host: bool,
    #[command(flatten)]
    pub control: ControlArg,
    #[command(flatten)]
    pub state: StateArg,
}

pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if args.demo || (config.devices.is_empty() && args.config.is_none()) {
        info!("serving the demo virtual devices");
        config.devices.extend(devices::demo_config().devices);
    }
    let mut listen = if args.listen.is_empty() {
        config.listen.clone()
    } else {
        args.listen.clone()
    };
    if listen.is_empty() {
        listen.push(SocketAddr::from(([0, 0, 0, 0], usbip_proto::USBIP_PORT)));
    }
    let mut server_config = ServerConfig::default();
    config.limits.apply(&mut server_config);
    let mut allow = config.allow.clone();
    allow.extend(args.allow.iter().copied());
    server_config.allow = Allowlist::new(allow);

    let built = devices::build(&config).await?;
    let registry = Registry::new();
    for device in &built.devices {
        let d = device.describe();
        info!(busid = %d.record.busid, vid_pid = %format!("{:04x}:{:04x}", d.record.id_vendor, d.record.id_product), "exporting");
        registry.add(device.clone());
    }

    let control_path = args.control.path();
    let control_listener = control::bind(&control_path)?;
    info!(path = %control_path.display(), "control socket ready");
    let host = if args.no_host {
        None
    } else {
        host_devices(&registry, &args.state).await
    };
    let ctx = Arc::new(ControlContext {
        registry: registry.clone(),
        keyboards: built.keyboards.clone(),
        host,
    });
    tokio::spawn(control::serve(control_listener, ctx));

    let listeners = Server::bind(&listen).await?;
    let server = Server::new(registry, server_config);
    tokio::select! {
        _ = server.serve(listeners) => {}
        _ = shutdown_signal() => info!("shutting down"),
    }
    let _ = std::fs::remove_file(&control_path);
    drop(built);
    Ok(())
}

/// Shares the bound host devices and follows hotplug, where the platform has a host backend.
#[cfg(any(target_os = "linux", target_os = "macos"))]
async fn host_devices(registry: &Arc<Registry>, state: &StateArg) -> Option<Arc<HostExports>> {
    use crate::device::host::NusbBackend;
    let exports = HostExports::new(
        Arc::new(NusbBackend),
        registry.clone(),
        state.bindings_path(),
    );
    exports.refresh_logged().await;
    tokio::spawn(crate::host_exports::follow_hotplug(exports.clone()));
    Some(exports)
}

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
async fn host_devices(_: &Arc<Registry>, _: &StateArg) -> Option<Arc<HostExports>> {
    None
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
