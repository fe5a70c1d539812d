//! `usbipd server`: load the configuration, build the devices, listen, serve until a signal.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use tracing::{info, warn};

use super::{ControlArg, StateArg};
use crate::activation::controller::LogNotifier;
use crate::activation::installer::{self, Platform};
use crate::activation::state_file::StateFile;
use crate::activation::status::{Facts, Os};
use crate::activation::{Activation, ActivationConfig};
use crate::capture::{self, Capture};
use crate::config::Config;
use crate::control::{self, ControlContext};
use crate::device::registry::Registry;
use crate::devices;
use crate::extension::link::ExtensionLink;
use crate::extension::supervisor::{
    Backoff, ChildSpec, EmbeddedSupervisor, SupervisedChild, Supervisor,
};
use crate::host_exports::HostExports;
use crate::server::{Allowlist, Server, ServerConfig, TlsServer};

#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// The logging flags, given again to the extension child (set by `main`, not a flag).
    #[arg(skip)]
    pub log_args: Vec<std::ffi::OsString>,
    /// Address to listen on; repeat for several (IPv4 and IPv6) [default: 127.0.0.1:3240].
    /// To share on a network: --listen 0.0.0.0:3240 together with --allow CIDR
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Vec<SocketAddr>,
    /// Also serve USB/IP inside TLS 1.3 on this address (port 3241 when not given); repeat for
    /// several. Clients must present a trusted key (usbipd trust add, usbipd pair)
    #[arg(long, value_name = "ADDR[:PORT]", value_parser = parse_tls_listen)]
    pub listen_tls: Vec<SocketAddr>,
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
    /// Record every URB, its completion and unlinks to this pcapng file for Wireshark or tshark
    /// (USB Linux usbmon format; overwrites the file)
    #[arg(long, value_name = "FILE")]
    pub capture: Option<PathBuf>,
    /// Bytes of each URB's data kept in the capture [default: 65535]
    #[arg(long, value_name = "BYTES")]
    pub capture_snaplen: Option<u32>,
    #[command(flatten)]
    pub control: ControlArg,
    #[command(flatten)]
    pub state: StateArg,
    /// Host devices through the extension: `auto` (start in fallback mode, install the
    /// extension in the background: systemd unit, launchd daemon, or a supervised child; then
    /// use it), `embedded` (start and supervise it as a child), `external` (use one run by
    /// systemd/launchd), or `off` (fallback mode only)
    #[arg(long, default_value = "auto", value_parser = ["off", "auto", "embedded", "external"])]
    pub extension: String,
    /// Tests only: the embedded installation waits until this file exists (to see fallback
    /// mode first)
    #[cfg(feature = "test-support")]
    #[arg(long, value_name = "FILE")]
    pub extension_install_gate: Option<PathBuf>,
    #[command(flatten)]
    pub extension_socket: super::extension::ExtensionSocketArg,
    /// Embedded mode: the extension's claim registry file
    #[arg(long, value_name = "FILE")]
    pub extension_state: Option<PathBuf>,
    /// Embedded mode, tests only: give the extension a virtual host bus from this spec file
    #[cfg(feature = "test-support")]
    #[arg(long, value_name = "SPEC")]
    pub virtual_bus: Option<PathBuf>,
}

pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    // With the extension, host devices are the point: demo devices only when asked for.
    // (`auto` starts in fallback mode, as `off` does.)
    let fallback = matches!(args.extension.as_str(), "off" | "auto");
    if args.demo || (config.devices.is_empty() && args.config.is_none() && fallback) {
        info!("serving the demo virtual devices");
        config.devices.extend(devices::demo_config().devices);
    }
    let listen = listen_addresses(&args.listen, &config.listen);
    let mut server_config = ServerConfig::default();
    config.limits.apply(&mut server_config);
    let mut allow = config.allow.clone();
    allow.extend(args.allow.iter().copied());
    let exposed = beyond_loopback(&listen);
    if exposed.is_empty() {
        info!(
            "listening on loopback only; to share on a network, add --listen 0.0.0.0:3240 \
             together with --allow <CIDR of your clients>"
        );
    } else if allow.is_empty() {
        warn!(
            addresses = ?exposed,
            "listening beyond loopback with no --allow list: anyone who reaches these addresses \
             can use the shared devices (USB/IP has no authentication); add --allow CIDR"
        );
    }
    server_config.allow = Allowlist::new(allow);
    let capture_writer = match args.capture.as_ref().or(config.capture.as_ref()) {
        Some(path) => {
            let snaplen = args
                .capture_snaplen
                .or(config.capture_snaplen)
                .unwrap_or(capture::DEFAULT_SNAPLEN);
            let (capture, writer) = Capture::open(path, snaplen)
                .with_context(|| format!("cannot create the capture file {}", path.display()))?;
            info!(path = %path.display(), snaplen, "capturing every URB (pcapng, usbmon records)");
            server_config.capture = Some(capture);
            Some(writer)
        }
        None => None,
    };

    let built = devices::build(&config).await?;
    let registry = Registry::new();
    for device in &built.devices {
        let d = device.describe();
        info!(busid = %d.record.busid, vid_pid = %format!("{:04x}:{:04x}", d.record.id_vendor, d.record.id_product), "exporting");
        registry.add(device.clone());
    }

    let control_path = args.control.path()?;
    let control_listener = control::bind(&control_path)?;
    info!(path = %control_path.display(), "control socket ready");
    // With the extension, host devices are its business; fallback sharing is for when it is
    // off, and for `auto` until the extension is there (what fallback shared stays shared).
    let host = if args.no_host || !fallback {
        None
    } else {
        host_devices(&registry, args.state.bindings_path()?).await
    };
    let socket = args.extension_socket.path()?;
    let mut auto = None;
    let activation = if args.extension == "auto" {
        // Activation is a bonus on top of fallback mode: if it cannot even start, serve anyway.
        match start_activation(&args, &socket) {
            Ok((activation, facts, supervisor)) => {
                auto = Some(supervisor);
                Some((activation, facts))
            }
            Err(e) => {
                warn!(error = %e, "extension activation unavailable; staying in fallback mode");
                None
            }
        }
    } else {
        None
    };
    let ctx = Arc::new(ControlContext {
        registry: registry.clone(),
        keyboards: built.keyboards.clone(),
        host,
        activation,
        extension: (args.extension != "off").then(|| Arc::new(ExtensionLink::new(socket.clone()))),
    });
    tokio::spawn(control::serve(control_listener, ctx));

    let listeners = Server::bind(&listen).await?;
    let tls_listeners = Server::bind(&args.listen_tls).await?;
    let link_limits = server_config.clone();
    let mut server = Server::new(registry, server_config);
    if !args.listen_tls.is_empty() {
        let tls = TlsServer::open(&args.state.dir()?)?;
        info!(addresses = ?args.listen_tls, fingerprint = %tls.fingerprint(), "serving USB/IP in TLS; clients pin this server key");
        server = server.with_tls(Arc::new(tls));
    }
    let mut supervisor = None;
    if args.extension != "off" {
        if args.extension == "embedded" {
            supervisor = Some(Supervisor::start(
                child_spec(&args, &socket)?,
                Backoff::default(),
            ));
        }
        // In `auto` mode the link finds nothing until the extension runs: DEVLIST shows its
        // devices and imports of its busids are handed over from then on.
        tokio::spawn(ExtensionLink::new(socket.clone()).follow_events());
        server = server.with_external(Arc::new(
            ExtensionLink::new(socket).with_limits(&link_limits),
        ));
    }
    tokio::select! {
        _ = server.serve_tls(listeners, tls_listeners) => {}
        _ = crate::platform::signals::shutdown_signal() => info!("shutting down"),
    }
    if let Some(s) = supervisor {
        s.stop().await;
    }
    if let Some(s) = auto {
        s.shutdown().await;
    }
    let _ = std::fs::remove_file(&control_path);
    built.flush_disks().await;
    drop(built);
    if let Some(writer) = capture_writer {
        tokio::task::spawn_blocking(move || writer.close()).await?;
    }
    Ok(())
}

/// Shares the bound host devices and follows hotplug, where the platform has a host backend.
#[cfg(host_usb)]
async fn host_devices(registry: &Arc<Registry>, bindings: PathBuf) -> Option<Arc<HostExports>> {
    use crate::device::host::NusbBackend;
    let exports = HostExports::new(Arc::new(NusbBackend), registry.clone(), bindings);
    exports.refresh_logged().await;
    tokio::spawn(crate::host_exports::follow_hotplug(exports.clone()));
    Some(exports)
}

#[cfg(not(host_usb))]
async fn host_devices(_: &Arc<Registry>, _: PathBuf) -> Option<Arc<HostExports>> {
    None
}

/// `--extension auto`: the activation controller over this platform's installer (systemd,
/// launchd, or the embedded supervisor), started in the background.
fn start_activation(
    args: &ServerArgs,
    socket: &std::path::Path,
) -> anyhow::Result<(Activation, Facts, Arc<EmbeddedSupervisor>)> {
    let supervisor = Arc::new(EmbeddedSupervisor::new(
        child_spec(args, socket)?,
        tokio::runtime::Handle::current(),
        install_gate(args),
    ));
    let mut platform = Platform::detect()?;
    // A virtual bus is the tests' stand-in for the host's USB: a service manager's unit would
    // run the extension without it, so only the embedded installer (our child, given the same
    // bus) can serve it, with or without systemd.
    if virtual_bus(args).is_some() {
        platform.systemd = false;
    }
    let as_installer: Arc<dyn SupervisedChild> = supervisor.clone();
    let installer = installer::for_platform(&platform, Some(as_installer));
    let state_file = args.state.activation_path()?;
    let activation = Activation::new(
        installer,
        StateFile::new(&state_file),
        Arc::new(LogNotifier),
        ActivationConfig::default(),
    );
    activation.start();
    let facts = Facts {
        os: Os::current(),
        exe: platform.exe,
        state_file,
    };
    Ok((activation, facts, supervisor))
}

/// The virtual host bus the tests give the extension (never one in the product).
fn virtual_bus(args: &ServerArgs) -> Option<&std::path::Path> {
    #[cfg(feature = "test-support")]
    return args.virtual_bus.as_deref();
    #[cfg(not(feature = "test-support"))]
    {
        let _ = args;
        None
    }
}

/// The file the embedded installation waits for (tests only; none in the product).
fn install_gate(args: &ServerArgs) -> Option<PathBuf> {
    #[cfg(feature = "test-support")]
    return args.extension_install_gate.clone();
    #[cfg(not(feature = "test-support"))]
    {
        let _ = args;
        None
    }
}

/// How to run the extension as this daemon's child.
fn child_spec(args: &ServerArgs, socket: &std::path::Path) -> anyhow::Result<ChildSpec> {
    let program = std::env::current_exe()?;
    let state = match &args.extension_state {
        Some(state) => state.clone(),
        None => crate::extension::default_state()?,
    };
    let mut child_args: Vec<std::ffi::OsString> = vec![
        "extension".into(),
        "run".into(),
        "--mode".into(),
        "embedded".into(),
        "--extension-socket".into(),
        socket.into(),
        "--state".into(),
        state.into(),
    ];
    child_args.extend(args.log_args.iter().cloned());
    if let Some(spec) = virtual_bus(args) {
        child_args.push("--virtual-bus".into());
        child_args.push(spec.into());
    }
    Ok(ChildSpec {
        program,
        args: child_args,
        socket: socket.to_path_buf(),
    })
}

/// Where to listen: the command line's addresses, else the configuration's, else loopback.
/// Loopback by default: Docker Desktop, Lima, Colima and QEMU user networking reach the host's
/// loopback through their gateway, and nobody else can reach the devices.
fn listen_addresses(cli: &[SocketAddr], config: &[SocketAddr]) -> Vec<SocketAddr> {
    if !cli.is_empty() {
        cli.to_vec()
    } else if !config.is_empty() {
        config.to_vec()
    } else {
        vec![SocketAddr::from(([127, 0, 0, 1], usbip_proto::USBIP_PORT))]
    }
}

/// `--listen-tls`: `ADDR:PORT`, or an address alone for port 3241.
fn parse_tls_listen(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    s.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
        .map(|ip| SocketAddr::new(ip, crate::tls::DEFAULT_TLS_PORT))
        .map_err(|_| format!("`{s}` is not ADDR or ADDR:PORT"))
}

/// The listen addresses that other machines can reach (anything but loopback).
fn beyond_loopback(listen: &[SocketAddr]) -> Vec<SocketAddr> {
    listen
        .iter()
        .copied()
        .filter(|a| !a.ip().is_loopback())
        .collect()
}

#[cfg(test)]
mod exposure_tests {
    use super::*;

    #[test]
    fn only_non_loopback_addresses_count_as_exposed() {
        let listen: Vec<SocketAddr> = [
            "127.0.0.1:3240",
            "[::1]:3240",
            "0.0.0.0:3240",
            "[::]:3240",
            "192.0.2.7:3240",
        ]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
        let exposed = beyond_loopback(&listen);
        assert_eq!(exposed, listen[2..].to_vec());
        assert!(beyond_loopback(&listen[..2]).is_empty());
    }

    #[test]
    fn tls_listen_addresses_default_to_port_3241() {
        assert_eq!(
            parse_tls_listen("127.0.0.1").unwrap(),
            "127.0.0.1:3241".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            parse_tls_listen("[::1]").unwrap(),
            "[::1]:3241".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            parse_tls_listen("0.0.0.0:4000").unwrap(),
            "0.0.0.0:4000".parse::<SocketAddr>().unwrap()
        );
        assert!(parse_tls_listen("host").is_err());
    }

    #[test]
    fn the_default_listen_address_is_loopback_and_the_command_line_wins() {
        let default = listen_addresses(&[], &[]);
        assert_eq!(
            default,
            vec!["127.0.0.1:3240".parse::<SocketAddr>().unwrap()]
        );
        assert!(beyond_loopback(&default).is_empty());
        let wide: SocketAddr = "0.0.0.0:3240".parse().unwrap();
        let other: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        assert_eq!(listen_addresses(&[], &[wide]), vec![wide]);
        assert_eq!(listen_addresses(&[other], &[wide]), vec![other]);
    }
}
