//! `usbipd server`: load the configuration, build the devices, listen, serve until a signal.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tracing::info;

use super::ControlArg;
use crate::config::Config;
use crate::control::{self, ControlContext};
use crate::device::registry::Registry;
use crate::devices;
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
    #[command(flatten)]
    pub control: ControlArg,
}

pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if args.demo || config.devices.is_empty() {
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
    let ctx = Arc::new(ControlContext {
        registry: registry.clone(),
        keyboards: built.keyboards.clone(),
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
