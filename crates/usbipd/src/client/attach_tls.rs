//! `usbipd client attach --tls`: the import over TLS (see `client::tls`), then the socket the
//! kernel gets: the TCP socket itself with kernel TLS on it, where the kernel has it, so the
//! process is done; else one end of a socket pair that this process relays through TLS for as
//! long as the device is attached.

use std::os::fd::AsRawFd;

use tokio::net::lookup_host;

use super::attach::{hand_over, Attached};
use super::records::Origin;
use super::remote::{pick, socket_target_on, Selector};
use super::sysfs::Vhci;
use super::tls::{ClientConn, ClientTls};
use crate::tls::ktls::Outcome;
use crate::tls::{relay, DEFAULT_TLS_PORT};

/// How the kernel reaches the server.
pub enum Transport {
    /// Kernel TLS on the TCP socket: nothing left for this process to do.
    KernelTls,
    /// The relay to run until the device is detached (or the server leaves).
    Relay(tokio::task::JoinHandle<std::io::Result<(u64, u64)>>),
}

/// Imports the device `selector` names from `remote` (`HOST[:PORT]`, port 3241 by default)
/// over TLS and attaches it; `pair` is a pairing code to give on the first connection;
/// `kernel_tls` allows the kernel-TLS path.
pub async fn attach_tls(
    vhci: &Vhci,
    remote: &str,
    selector: &Selector,
    tls: &ClientTls,
    mut pair: Option<&str>,
    kernel_tls: bool,
) -> anyhow::Result<(Attached, Transport)> {
    let name = socket_target_on(remote, DEFAULT_TLS_PORT);
    let addr = lookup_host(&name)
        .await
        .map_err(|e| anyhow::anyhow!("{remote}: cannot resolve: {e}"))?
        .next()
        .ok_or_else(|| anyhow::anyhow!("{remote}: no address"))?;
    let busid = match selector {
        Selector::Busid(b) => b.clone(),
        Selector::HardwareId { .. } => {
            let mut stream = tls.connect(&name, addr, pair.take()).await?;
            let devices = usbip_client::list_devices_over(&mut stream)
                .await
                .map_err(|e| tls.explain(&name, e))?;
            match pick(&devices, selector) {
                Some(b) => b.to_string(),
                None => anyhow::bail!("{name} exports no device with {selector}"),
            }
        }
    };
    let mut stream: ClientConn = tls.connect(&name, addr, pair).await?;
    let record = usbip_client::import_over(&mut stream, &busid)
        .await
        .map_err(|e| tls.explain(&name, format!("cannot import {busid}: {e}")))?;
    tracing::info!(
        cipher_suite = ?stream.get_ref().1.negotiated_cipher_suite().map(|s| s.suite()),
        "TLS session established"
    );
    let origin = Origin {
        host: addr.ip().to_string(),
        port: addr.port().to_string(),
        busid: busid.clone(),
    };
    if kernel_tls {
        match crate::tls::ktls::try_enable(stream)? {
            Outcome::Enabled(socket) => {
                let attached = hand_over(vhci, socket.as_raw_fd(), &record, origin)?;
                return Ok((attached, Transport::KernelTls));
            }
            Outcome::Unavailable { stream: back, why } => {
                tracing::info!("kernel TLS unavailable ({why}); relaying TLS in this process");
                stream = *back;
            }
        }
    }
    let (kernel, ours) = relay::socket_pair()?;
    let attached = hand_over(vhci, kernel.as_raw_fd(), &record, origin)?;
    drop(kernel); // the kernel holds its own reference
    Ok((
        attached,
        Transport::Relay(tokio::spawn(relay::relay(stream, ours))),
    ))
}
