//! One attach: find the device on the server, import it (the OP_REQ_IMPORT handshake through
//! `usbip-client`), and hand the connected socket to vhci-hcd on a free port of the device's
//! speed. One detach: free a port.

use std::os::fd::{AsRawFd, RawFd};

use anyhow::Context;
use tokio::net::lookup_host;

use super::records::{self, Origin};
use super::remote::{pick, socket_target, Selector};
use super::status::{attach_line, detach_line, free_port, Hub};
use super::sysfs::Vhci;

/// A device the kernel now drives.
#[derive(Debug, Clone)]
pub struct Attached {
    pub port: u32,
    pub busid: String,
    pub vid: u16,
    pub pid: u16,
    pub speed: usbip_proto::Speed,
    /// What the kernel's `status` shows for the port.
    pub devid: u32,
}

/// How often a lost race for a free port (another client took it first) is retried.
const PORT_RACE_TRIES: usize = 4;

/// Imports the device `selector` names from `remote` (`HOST[:PORT]`) and attaches it.
pub async fn attach(vhci: &Vhci, remote: &str, selector: &Selector) -> anyhow::Result<Attached> {
    let target = socket_target(remote);
    let addr = lookup_host(&target)
        .await
        .with_context(|| format!("{remote}: cannot resolve"))?
        .next()
        .ok_or_else(|| anyhow::anyhow!("{remote}: no address"))?;
    let busid = match selector {
        Selector::Busid(b) => b.clone(),
        Selector::HardwareId { .. } => {
            let devices = usbip_client::list_devices(addr)
                .await
                .map_err(|e| anyhow::anyhow!("{addr}: cannot list devices: {e}"))?;
            match pick(&devices, selector) {
                Some(b) => b.to_string(),
                None => anyhow::bail!("{addr} exports no device with {selector}"),
            }
        }
    };
    // The client's errors carry their cause in their text: as a context it would print twice.
    let (stream, record) = usbip_client::import_socket(addr, &busid)
        .await
        .map_err(|e| anyhow::anyhow!("{addr}: cannot import {busid}: {e}"))?;
    // vhci-hcd's receive thread blocks on the socket: hand it over in blocking mode.
    let socket = stream.into_std().context("taking the socket from tokio")?;
    socket
        .set_nonblocking(false)
        .context("making the socket blocking")?;
    let origin = Origin {
        host: addr.ip().to_string(),
        port: addr.port().to_string(),
        busid: busid.clone(),
    };
    // The kernel holds its own reference to the socket; ours closes on drop.
    hand_over(vhci, socket.as_raw_fd(), &record, origin)
}

/// Gives the connected socket `fd`, at the start of the URB phase of the import of `record`,
/// to vhci-hcd on a free port of the device's speed, and records the port as `usbip` does.
pub fn hand_over(
    vhci: &Vhci,
    fd: RawFd,
    record: &usbip_proto::DeviceRecord,
    origin: Origin,
) -> anyhow::Result<Attached> {
    let busid = origin.busid.clone();
    let mut last_error = None;
    for _ in 0..PORT_RACE_TRIES {
        let ports = vhci.ports()?;
        let Some(port) = free_port(&ports, record.speed) else {
            anyhow::bail!(
                "no free vhci-hcd port on the {} hub for {busid} ({} Mbit/s); `usbipd client port` shows what is attached",
                match Hub::for_speed(record.speed) {
                    Hub::Hs => "USB 2 (hs)",
                    Hub::Ss => "USB 3 (ss)",
                },
                record.speed.as_mbps()
            );
        };
        let line = attach_line(port, fd, record.devid(), record.speed);
        tracing::debug!("attach: {line}");
        match vhci.write_attach(&line) {
            Ok(()) => {
                records::save(port, &origin);
                return Ok(Attached {
                    port,
                    busid,
                    vid: record.id_vendor,
                    pid: record.id_product,
                    speed: record.speed,
                    devid: record.devid(),
                });
            }
            // EBUSY: the port was taken between reading status and writing attach.
            Err(e) if is_busy(&e) => last_error = Some(e),
            Err(e) => return Err(e).context(format!("attaching {busid} on port {port}")),
        }
    }
    Err(anyhow::anyhow!(
        "every free port was taken by someone else while attaching {busid}: {}",
        last_error.map(|e| e.to_string()).unwrap_or_default()
    ))
}

fn is_busy(e: &super::sysfs::VhciError) -> bool {
    matches!(e, super::sysfs::VhciError::Io { source, .. } if source.raw_os_error() == Some(nix::libc::EBUSY))
}

/// Detaches the device on `port`.
pub fn detach(vhci: &Vhci, port: u32) -> anyhow::Result<()> {
    vhci.write_detach(&detach_line(port))
        .with_context(|| format!("detaching port {port}"))?;
    records::remove(port);
    Ok(())
}
