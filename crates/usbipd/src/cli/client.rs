//! `usbipd client attach|detach|port`: the VM side, on Linux with vhci-hcd. Imports devices from
//! a USB/IP server into this machine's kernel (as Linux's `usbip attach` does, without it).

use crate::bindings::{parse_hardware_id, Binding};
use crate::client::attach::{attach, detach};
use crate::client::records;
use crate::client::remote::Selector;
use crate::client::status::{attached, PortState};
use crate::client::sysfs::Vhci;
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
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["busid", "hardware_id"])))]
pub struct ServiceFileArgs {
    /// The USB/IP server: HOST or HOST:PORT
    #[arg(long, short = 'r', value_name = "HOST[:PORT]")]
    pub remote: String,
    #[arg(long, short = 'b')]
    pub busid: Option<String>,
    #[arg(long, short = 'i', value_name = "VID:PID")]
    pub hardware_id: Option<String>,
    /// The executable the unit runs [default: this executable]
    #[arg(long, value_name = "PATH")]
    pub exe: Option<std::path::PathBuf>,
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["busid", "hardware_id"])))]
pub struct AttachArgs {
    /// The USB/IP server: HOST or HOST:PORT (default port 3240)
    #[arg(long, short = 'r', value_name = "HOST[:PORT]")]
    pub remote: String,
    /// The device's busid on the server (`usbipd list --remote HOST`)
    #[arg(long, short = 'b')]
    pub busid: Option<String>,
    /// The first device the server exports with this VID:PID, whatever its busid
    #[arg(long, short = 'i', value_name = "VID:PID")]
    pub hardware_id: Option<String>,
    /// Stay running and keep the device attached: attach again (with backoff) whenever the
    /// kernel frees the port; detach and exit on SIGTERM
    #[arg(long)]
    pub auto: bool,
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
    let selector = selector(args.busid, args.hardware_id)?;
    let vhci = Vhci::open()?;
    if args.auto {
        return supervise::run(&vhci, &args.remote, &selector).await;
    }
    let a = attach(&vhci, &args.remote, &selector).await?;
    println!(
        "attached {} ({:04x}:{:04x}, {} Mbit/s) from {} on port {}",
        a.busid,
        a.vid,
        a.pid,
        a.speed.as_mbps(),
        args.remote,
        a.port
    );
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
    let selector = selector(args.busid, args.hardware_id)?;
    let exe = match args.exe {
        Some(p) => p,
        None => std::env::current_exe()?,
    };
    let text = unit::unit(&exe, &args.remote, &selector)?;
    println!("# /etc/systemd/system/{}", unit::unit_name(&selector));
    print!("{text}");
    Ok(())
}
