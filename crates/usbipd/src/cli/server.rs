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
use crate::extension::link::ExtensionLink;
use crate::extension::supervisor::{Backoff, ChildSpec, Supervisor};
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
    /// Host devices through the extension: `embedded` (start and supervise it as a child),
    /// `external` (use one run by systemd/launchd), or `off`
    #[arg(long, default_value = "off", value_parser = ["off", "embedded", "external"])]
    pub extension: String,
    #[command(flatten)]
    pub extension_socket: super::extension::ExtensionSocketArg,
    /// Embedded mode: the extension's claim registry file
    #[arg(long, value_name = "FILE")]
    pub extension_state: Option<PathBuf>,
    /// Embedded mode, tests only: give the extension a virtual host bus from this spec file
    #[arg(long, value_name = "SPEC")]
    pub virtual_bus: Option<PathBuf>,
}

pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    // With the extension, host devices are the point: demo devices only when asked for.
    if args.demo || (config.devices.is_empty() && args.config.is_none() && args.extension == "off")
    {
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
    // With the extension, host devices are its business; fallback sharing is for when it is off.
    let host = if args.no_host || args.extension != "off" {
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
    let mut server = Server::new(registry, server_config);
    let mut supervisor = None;
    if args.extension != "off" {
        let socket = args.extension_socket.path();
        if args.extension == "embedded" {
            supervisor = Some(start_embedded(&args, &socket)?);
        }
        tokio::spawn(ExtensionLink::new(socket.clone()).follow_events());
        server = server.with_external(Arc::new(ExtensionLink::new(socket)));
    }
    tokio::select! {
        _ = server.serve(listeners) => {}
        _ = shutdown_signal() => info!("shutting down"),
    }
    if let Some(s) = supervisor {
        s.stop().await;
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

/// Starts the extension as a supervised child of this daemon.
fn start_embedded(args: &ServerArgs, socket: &std::path::Path) -> anyhow::Result<Supervisor> {
    let program = std::env::current_exe()?;
    let mut child_args: Vec<std::ffi::OsString> = vec![
        "extension".into(),
        "run".into(),
        "--mode".into(),
        "embedded".into(),
        "--extension-socket".into(),
        socket.into(),
        "--state".into(),
        args.extension_state
            .clone()
            .unwrap_or_else(crate::extension::default_state)
            .into(),
    ];
    if let Some(spec) = &args.virtual_bus {
        child_args.push("--virtual-bus".into());
        child_args.push(spec.into());
    }
    Ok(Supervisor::start(
        ChildSpec {
            program,
            args: child_args,
            socket: socket.to_path_buf(),
        },
        Backoff::default(),
    ))
}

pub(crate) async fn shutdown_signal() {
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
