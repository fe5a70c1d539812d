//! `usbipd client attach|detach|port`: the VM side, on Linux with vhci-hcd. Imports devices from
//! a USB/IP server into this machine's kernel (as Linux's `usbip attach` does, without it).

use crate::bindings::{parse_hardware_id, Binding};
use crate::client::attach::{attach, detach, Attached};
use crate::client::attach_tls::{attach_tls, Transport};
use crate::client::records;
use crate::client::remote::Selector;
use crate::client::status::{attached, PortState};
use crate::client::sysfs::Vhci;
use crate::client::tls::ClientTls;
use crate::client::{supervise, unit};

#[derive(Debug, clap::Subcommand)]
pub enum ClientCommand {
    /// Import a device from a USB/IP server and attach it to this machine (vhci-hcd).
    Attach(AttachArgs),
    /// Detach imported devices.
    Detach(DetachArgs),
    /// The vhci-hcd ports in use.
    Port(PortArgs),
    /// Print a systemd unit that keeps a device attached (`attach ... --auto` as a service).
    ServiceFile(ServiceFileArgs),
    /// Print this client's TLS key (created on first use) for `usbipd trust add` on a server.
    Key(KeyArgs),
}

#[derive(Debug, clap::Args)]
pub struct KeyArgs {
    #[command(flatten)]
    pub state: super::StateArg,
}

/// Which device of which server: `--remote` and one of `--busid`/`--hardware-id`, shared by
/// `client attach` and `client service-file`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["busid", "hardware_id"])))]
pub struct RemoteDeviceArgs {
    /// The USB/IP server: HOST or HOST:PORT (default port 3240)
    #[arg(long, short = 'r', value_name = "HOST[:PORT]")]
    pub remote: String,
    /// The device's busid on the server (`usbipd list --remote HOST`)
    #[arg(long, short = 'b')]
    pub busid: Option<String>,
    /// The first device the server exports with this VID:PID, whatever its busid
    #[arg(long, short = 'i', value_name = "VID:PID")]
    pub hardware_id: Option<String>,
}

impl RemoteDeviceArgs {
    fn selector(&self) -> anyhow::Result<Selector> {
        selector(self.busid.clone(), self.hardware_id.clone())
    }
}

#[derive(Debug, clap::Args)]
pub struct ServiceFileArgs {
    #[command(flatten)]
    pub device: RemoteDeviceArgs,
    /// The executable the unit runs [default: this executable]
    #[arg(long, value_name = "PATH")]
    pub exe: Option<std::path::PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct AttachArgs {
    #[command(flatten)]
    pub device: RemoteDeviceArgs,
    /// Stay running and keep the device attached: attach again (with backoff) whenever the
    /// kernel frees the port; detach and exit on SIGTERM. With --tls each attach is a new
    /// handshake against the pinned server key
    #[arg(long)]
    pub auto: bool,
    /// Connect to the server's TLS listener (default port 3241): the server's key is pinned
    /// on first use (or with --fingerprint) and this client presents its own key. Stays running
    /// while the device is attached when the kernel has no TLS (it relays)
    #[arg(long)]
    pub tls: bool,
    /// The server key to expect (SHA256:..., from `usbipd pair` or the server's log)
    #[arg(long, value_name = "SHA256:...", requires = "tls")]
    pub fingerprint: Option<crate::tls::Fingerprint>,
    /// A one-time code from `usbipd pair` on the server: registers this client's key there
    #[arg(long, value_name = "CODE", requires = "tls")]
    pub pair: Option<String>,
    /// Relay TLS in this process even where the kernel could do TLS itself
    #[arg(long, requires = "tls")]
    pub no_kernel_tls: bool,
    #[command(flatten)]
    pub state: super::StateArg,
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["port", "busid", "all"])))]
pub struct DetachArgs {
    /// The vhci port (`usbipd client port`)
    #[arg(long, short = 'p')]
    pub port: Option<u32>,
    /// The ports holding this remote busid (as recorded at attach, `usbipd client port`)
    #[arg(long, short = 'b')]
    pub busid: Option<String>,
    /// Every attached port
    #[arg(long, short = 'a')]
    pub all: bool,
}

#[derive(Debug, clap::Args)]
pub struct PortArgs {
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

pub async fn run(cmd: ClientCommand) -> anyhow::Result<()> {
    match cmd {
        ClientCommand::Attach(args) => run_attach(args).await,
        ClientCommand::Detach(args) => run_detach(args),
        ClientCommand::Port(args) => run_port(args),
        ClientCommand::ServiceFile(args) => run_service_file(args),
        ClientCommand::Key(args) => run_key(args),
    }
}

fn selector(busid: Option<String>, hardware_id: Option<String>) -> anyhow::Result<Selector> {
    match (busid, hardware_id) {
        (Some(b), _) => Ok(Selector::Busid(b)),
        (None, Some(id)) => match parse_hardware_id(&id) {
            Some(Binding::HardwareId { vid, pid }) => Ok(Selector::HardwareId { vid, pid }),
            _ => anyhow::bail!("--hardware-id {id}: expected VID:PID, four hex digits each"),
        },
        (None, None) => anyhow::bail!("give --busid or --hardware-id"),
    }
}

async fn run_attach(args: AttachArgs) -> anyhow::Result<()> {
    let selector = args.device.selector()?;
    let vhci = Vhci::open()?;
    if args.auto {
        let via = if args.tls {
            supervise::Via::Tls {
                tls: ClientTls::open(&args.state.dir()?, args.fingerprint)?,
                pair: args.pair.clone(),
                kernel_tls: !args.no_kernel_tls,
            }
        } else {
            supervise::Via::Plain
        };
        return supervise::run(&vhci, &args.device.remote, &selector, via).await;
    }
    if args.tls {
        return run_attach_tls(&vhci, &args, &selector).await;
    }
    let a = attach(&vhci, &args.device.remote, &selector).await?;
    println!("{}", attached_line(&a, &args.device.remote));
    Ok(())
}

/// What `client attach` prints once the device is attached.
fn attached_line(a: &Attached, remote: &str) -> String {
    format!(
        "attached {} ({:04x}:{:04x}, {} Mbit/s) from {remote} on port {}",
        a.busid,
        a.vid,
        a.pid,
        a.speed.as_mbps(),
        a.port
    )
}

async fn run_attach_tls(vhci: &Vhci, args: &AttachArgs, selector: &Selector) -> anyhow::Result<()> {
    let tls = ClientTls::open(&args.state.dir()?, args.fingerprint)?;
    let (a, transport) = attach_tls(
        vhci,
        &args.device.remote,
        selector,
        &tls,
        args.pair.as_deref(),
        !args.no_kernel_tls,
    )
    .await?;
    let how = match transport {
        Transport::KernelTls => "kernel TLS",
        Transport::Relay(_) => "TLS relayed by this process",
    };
    println!("{} ({how})", attached_line(&a, &args.device.remote));
    let Transport::Relay(relay) = transport else {
        return Ok(());
    };
    // The device lives as long as the relay: until the kernel lets the port go (detach, the
    // device gone) or the server closes; a signal detaches first.
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        done = relay => match done {
            Ok(Ok((down, up))) => tracing::info!(port = a.port, bytes_from_server = down, bytes_to_server = up, "relay ended: the port was detached or the server closed"),
            Ok(Err(e)) => tracing::info!(port = a.port, error = %e, "relay ended"),
            Err(e) => tracing::warn!(port = a.port, error = %e, "relay task failed"),
        },
        _ = term.recv() => detach_quietly(vhci, a.port),
        _ = tokio::signal::ctrl_c() => detach_quietly(vhci, a.port),
    }
    Ok(())
}

/// Detaches `port` on the way out; it may be free already.
fn detach_quietly(vhci: &Vhci, port: u32) {
    match detach(vhci, port) {
        Ok(()) => println!("detached port {port}"),
        Err(e) => tracing::info!(port, error = %e, "detach on exit"),
    }
}

fn run_key(args: KeyArgs) -> anyhow::Result<()> {
    let dir = args.state.dir()?;
    let (identity, _) = crate::tls::Identity::load_or_create(&dir.join(crate::tls::CLIENT_KEY))?;
    println!("{}", identity.public_key().to_line("usbipd-client"));
    println!("fingerprint: {}", identity.fingerprint());
    Ok(())
}

fn run_detach(args: DetachArgs) -> anyhow::Result<()> {
    let vhci = Vhci::open()?;
    let used: Vec<u32> = attached(&vhci.ports()?).iter().map(|p| p.port).collect();
    let ports: Vec<u32> = match (args.port, &args.busid) {
        (Some(p), _) => vec![p],
        (None, Some(busid)) => {
            let ports: Vec<u32> = used
                .into_iter()
                .filter(|p| records::load(*p).is_some_and(|o| o.busid == *busid))
                .collect();
            if ports.is_empty() {
                anyhow::bail!(
                    "no attached port holds remote busid {busid} (see `usbipd client port`)"
                );
            }
            ports
        }
        (None, None) => used,
    };
    for port in ports {
        detach(&vhci, port)?;
        println!("detached port {port}");
    }
    Ok(())
}

fn run_port(args: PortArgs) -> anyhow::Result<()> {
    let vhci = Vhci::open()?;
    let ports = vhci.ports()?;
    let used = attached(&ports);
    if args.json {
        let v: Vec<serde_json::Value> = used
            .iter()
            .map(|p| {
                let mut v = serde_json::to_value(p).unwrap_or_default();
                v["remote"] = serde_json::to_value(records::load(p.port)).unwrap_or_default();
                v
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    if used.is_empty() {
        println!("no device attached");
    }
    for p in used {
        let state = match p.state {
            PortState::Used => String::new(),
            other => format!(" [{other:?}]"),
        };
        let remote = records::load(p.port)
            .map(|o| format!("  from {}:{} busid {}", o.host, o.port, o.busid))
            .unwrap_or_default();
        println!(
            "port {:>2} ({:?})  {} Mbit/s  devid {:08x}  local {}{remote}{state}",
            p.port,
            p.hub,
            usbip_proto::Speed::from_u32(p.speed).as_mbps(),
            p.devid,
            p.local_busid
        );
    }
    Ok(())
}

fn run_service_file(args: ServiceFileArgs) -> anyhow::Result<()> {
    let selector = args.device.selector()?;
    let exe = match args.exe {
        Some(p) => p,
        None => std::env::current_exe()?,
    };
    let text = unit::unit(&exe, &args.device.remote, &selector)?;
    println!("# /etc/systemd/system/{}", unit::unit_name(&selector));
    print!("{text}");
    Ok(())
}
