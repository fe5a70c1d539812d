//! `usbipd list`: the running server's devices and their state, or a remote server's list.

use tokio::net::lookup_host;

use super::{ControlArg, StateArg};
use crate::control::{self, Request};
use crate::listing::DeviceEntry;

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Ask this USB/IP server (HOST or HOST:PORT) for its device list
    #[arg(long, short = 'r', value_name = "HOST")]
    pub remote: Option<String>,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub control: ControlArg,
    #[command(flatten)]
    pub state: StateArg,
}

pub async fn run(args: ListArgs) -> anyhow::Result<()> {
    match &args.remote {
        Some(host) => remote(host, args.json).await,
        None => local(&args).await,
    }
}

async fn local(args: &ListArgs) -> anyhow::Result<()> {
    let devices = match control::request(&args.control.path()?, &Request::List).await {
        Ok(response) => match response.error {
            Some(e) => anyhow::bail!(e),
            None => response.devices,
        },
        Err(e) if control::is_untrusted(&e) => return Err(e),
        // No server running: the host's devices and what is bound.
        Err(_) => host_devices_offline(args)?,
    };
    if devices.is_empty() && !args.json {
        println!("no devices: no usbipd server is running and no host USB device was found");
        return Ok(());
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&devices)?);
        return Ok(());
    }
    println!(
        "{:<10} {:<10} {:<11} {:<40} STATE",
        "BUSID", "VID:PID", "SPEED", "DEVICE"
    );
    for d in devices {
        let state = match &d.client {
            Some(c) => format!("attached to {c}"),
            // `shared`, or `not shared` for a host device nobody bound.
            None => d.state.clone(),
        };
        let name = display_name(&d);
        println!(
            "{:<10} {:04x}:{:04x}  {:<11} {:<40} {state}",
            d.busid,
            d.vid,
            d.pid,
            speed_label(&d.speed),
            name
        );
    }
    Ok(())
}

/// A speed in Mbit/s as the protocol names it ("480", "5000") with its unit, for people:
/// "480 Mbit/s", "5 Gbit/s". The JSON output keeps the plain number.
fn speed_label(mbps: &str) -> String {
    match mbps.parse::<u32>() {
        Ok(n) if n >= 1000 && n % 1000 == 0 => format!("{} Gbit/s", n / 1000),
        _ if mbps.is_empty() || mbps == "unknown" => "-".to_string(),
        _ => format!("{mbps} Mbit/s"),
    }
}

/// What the device says of itself, else the names the usb.ids database has for its VID:PID.
fn display_name(d: &DeviceEntry) -> String {
    use usb_ids::FromId;
    let vendor = d
        .manufacturer
        .clone()
        .or_else(|| usb_ids::Vendor::from_id(d.vid).map(|v| v.name().to_string()));
    let product = d
        .product
        .clone()
        .or_else(|| usb_ids::Device::from_vid_pid(d.vid, d.pid).map(|p| p.name().to_string()));
    match (vendor, product) {
        // "usbipd" + "usbipd virtual keyboard": the product already names its maker.
        (Some(m), Some(p)) if p.to_lowercase().starts_with(&m.to_lowercase()) => p,
        (Some(m), Some(p)) => format!("{m} {p}"),
        (None, Some(p)) => p,
        (Some(m), None) => m,
        (None, None) => String::new(),
    }
}

#[cfg(host_usb)]
fn host_devices_offline(args: &ListArgs) -> anyhow::Result<Vec<DeviceEntry>> {
    use crate::bindings::Bindings;
    use crate::device::host::{HostBackend, NusbBackend};
    let bindings = Bindings::load(&args.state.bindings_path()?)?;
    let mut devices = Vec::new();
    // One clear line, not a table header followed by an error.
    let present = NusbBackend.list().map_err(|e| {
        anyhow::anyhow!(
            "no usbipd server is running, and host USB devices cannot be listed here: {e}"
        )
    })?;
    for info in present {
        let mut entry = DeviceEntry::unshared_host(&info);
        if bindings.is_bound(&info) {
            entry.state = "shared (server not running)".into();
        }
        devices.push(entry);
    }
    Ok(devices)
}

#[cfg(not(host_usb))]
fn host_devices_offline(_: &ListArgs) -> anyhow::Result<Vec<DeviceEntry>> {
    Ok(Vec::new())
}

async fn remote(host: &str, json: bool) -> anyhow::Result<()> {
    let target = if host.parse::<std::net::IpAddr>().is_ok() || !host.contains(':') {
        format!("{}:{}", bracket_v6(host), usbip_proto::USBIP_PORT)
    } else {
        host.to_string()
    };
    let addr = lookup_host(&target)
        .await?
        .next()
        .ok_or_else(|| anyhow::anyhow!("{host}: no address"))?;
    let devices = usbip_client::list_devices(addr)
        .await
        .map_err(|e| anyhow::anyhow!("{host}: {e}"))?;
    if json {
        let v: Vec<serde_json::Value> = devices
            .iter()
            .map(|d| {
                serde_json::json!({
                    "busid": d.record.busid,
                    "vid": d.record.id_vendor,
                    "pid": d.record.id_product,
                    "speed": d.record.speed.as_mbps(),
                    "path": d.record.path,
                    // The rest of the record as sent, so that two servers can be compared
                    // field by field.
                    "busnum": d.record.busnum,
                    "devnum": d.record.devnum,
                    "speed_code": d.record.speed as u32,
                    "bcd_device": d.record.bcd_device,
                    "class": [d.record.device_class, d.record.device_subclass, d.record.device_protocol],
                    "configuration_value": d.record.configuration_value,
                    "num_configurations": d.record.num_configurations,
                    "num_interfaces": d.record.num_interfaces,
                    "interfaces": d.interfaces.iter().map(|i| [i.class, i.subclass, i.protocol]).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("Exportable USB devices on {addr}");
    for d in devices {
        let r = &d.record;
        println!(
            "  {:<10} {:04x}:{:04x}  {}  class {:02x}/{:02x}/{:02x}  {}",
            r.busid,
            r.id_vendor,
            r.id_product,
            speed_label(r.speed.as_mbps()),
            r.device_class,
            r.device_subclass,
            r.device_protocol,
            r.path
        );
        for (n, i) in d.interfaces.iter().enumerate() {
            println!(
                "             interface {n}: class {:02x}/{:02x}/{:02x}",
                i.class, i.subclass, i.protocol
            );
        }
    }
    Ok(())
}

fn bracket_v6(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(vid: u16, pid: u16, manufacturer: Option<&str>, product: Option<&str>) -> DeviceEntry {
        DeviceEntry {
            busid: "1-1".into(),
            vid,
            pid,
            speed: "480".into(),
            manufacturer: manufacturer.map(str::to_string),
            product: product.map(str::to_string),
            interfaces: vec![],
            state: "not shared".into(),
            kind: "host".into(),
            client: None,
        }
    }

    #[test]
    fn names_come_from_the_device_then_from_usb_ids() {
        assert_eq!(
            display_name(&entry(0x0525, 0xa4a0, Some("Acme"), Some("Board"))),
            "Acme Board"
        );
        let from_db = display_name(&entry(0x0525, 0xa4a0, None, None));
        assert!(from_db.contains("Netchip"), "{from_db}");
        assert!(from_db.contains("Gadget Zero"), "{from_db}");
        assert_eq!(display_name(&entry(0xfffe, 0xfffe, None, None)), "");
        // A product that already names its maker is not prefixed again.
        assert_eq!(
            display_name(&entry(
                1,
                2,
                Some("usbipd"),
                Some("usbipd virtual keyboard")
            )),
            "usbipd virtual keyboard"
        );
    }

    #[test]
    fn speeds_carry_their_unit() {
        let labels: Vec<String> = ["1.5", "12", "480", "5000", "10000", "53.3-480", "unknown"]
            .iter()
            .map(|s| speed_label(s))
            .collect();
        assert_eq!(
            labels,
            [
                "1.5 Mbit/s",
                "12 Mbit/s",
                "480 Mbit/s",
                "5 Gbit/s",
                "10 Gbit/s",
                "53.3-480 Mbit/s",
                "-"
            ]
        );
    }
}
