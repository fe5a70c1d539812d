//! The `--auto` loop: performs what `auto.rs` decides. Attaches, watches the port in the
//! kernel's `status` until our device is gone from it, attaches again (a device chosen by
//! hardware id is looked up again, wherever it now is), and on SIGTERM or SIGINT detaches and
//! returns. Each transition is logged. Over TLS each attach is a new TLS handshake against the
//! pinned server key (a changed key fails the attach, and is retried with backoff like any
//! failure); a relayed session's relay runs until its port is lost.

use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};

use super::attach::{attach, detach, Attached};
use super::attach_tls::{attach_tls, Transport};
use super::auto::{self, Action, Event};
use super::remote::Selector;
use super::sysfs::Vhci;
use super::tls::ClientTls;

/// How each attach reaches the server.
pub enum Via {
    /// Plain USB/IP.
    Plain,
    /// `--tls`: the client's keys and pins; `pair` is given on the first successful
    /// connection only (a code is good once); `kernel_tls` allows the kernel-TLS path.
    Tls {
        tls: ClientTls,
        pair: Option<String>,
        kernel_tls: bool,
    },
}

impl Via {
    /// One attach; the relay to keep running while the device is attached, if any.
    async fn attach(
        &mut self,
        vhci: &Vhci,
        remote: &str,
        selector: &Selector,
    ) -> anyhow::Result<(Attached, Option<tokio::task::JoinHandle<()>>)> {
        match self {
            Via::Plain => Ok((attach(vhci, remote, selector).await?, None)),
            Via::Tls {
                tls,
                pair,
                kernel_tls,
            } => {
                let (a, transport) =
                    attach_tls(vhci, remote, selector, tls, pair.as_deref(), *kernel_tls).await?;
                // registered now: the code is spent, the key trusted from here on
                *pair = None;
                let relay = match transport {
                    Transport::KernelTls => None,
                    Transport::Relay(relay) => {
                        let port = a.port;
                        Some(tokio::spawn(async move {
                            match relay.await {
                                Ok(Ok((down, up))) => tracing::info!(
                                    port,
                                    bytes_from_server = down,
                                    bytes_to_server = up,
                                    "auto: relay ended"
                                ),
                                Ok(Err(e)) => tracing::info!(port, error = %e, "auto: relay ended"),
                                Err(e) => {
                                    tracing::warn!(port, error = %e, "auto: relay task failed")
                                }
                            }
                        }))
                    }
                };
                Ok((a, relay))
            }
        }
    }
}

/// How often the port is looked at while attached.
const WATCH_INTERVAL: Duration = Duration::from_millis(250);
/// One attach (connect, list, import) may take this long before it counts as failed.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(15);

pub async fn run(
    vhci: &Vhci,
    remote: &str,
    selector: &Selector,
    mut via: Via,
) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (mut phase, mut action) = auto::start();
    // the relay of the attached device, when it is relayed
    let mut relay: Option<tokio::task::JoinHandle<()>> = None;
    let over = if matches!(via, Via::Tls { .. }) {
        " over TLS"
    } else {
        ""
    };
    tracing::info!("auto: keeping {selector} from {remote} attached{over}");
    loop {
        let event = match action {
            Action::Exit => {
                tracing::info!("auto: exiting");
                return Ok(());
            }
            Action::Detach { port } => {
                detach(vhci, port)?;
                tracing::info!("auto: detached port {port}; exiting");
                if let Some(relay) = relay.take() {
                    // the kernel closed its end: the relay ends by itself
                    let _ = tokio::time::timeout(Duration::from_secs(5), relay).await;
                }
                return Ok(());
            }
            Action::AttachAfter(wait) => {
                if !wait.is_zero() {
                    tracing::info!("auto: next attach in {} ms", wait.as_millis());
                }
                tokio::select! {
                    _ = term.recv() => Event::Terminate,
                    _ = int.recv() => Event::Terminate,
                    (event, new_relay) = attach_after(vhci, remote, selector, &mut via, wait) => {
                        relay = new_relay;
                        event
                    }
                }
            }
            Action::Watch { port, devid } => tokio::select! {
                _ = term.recv() => Event::Terminate,
                _ = int.recv() => Event::Terminate,
                () = port_lost(vhci, port, devid) => {
                    tracing::info!("auto: port {port} is free (device gone or connection lost); attaching again");
                    Event::PortFree
                }
            },
        };
        (phase, action) = auto::next(phase, event);
    }
}

async fn attach_after(
    vhci: &Vhci,
    remote: &str,
    selector: &Selector,
    via: &mut Via,
    wait: Duration,
) -> (Event, Option<tokio::task::JoinHandle<()>>) {
    tokio::time::sleep(wait).await;
    match tokio::time::timeout(ATTACH_TIMEOUT, via.attach(vhci, remote, selector)).await {
        Ok(Ok((a, relay))) => {
            tracing::info!(
                "auto: attached {} ({:04x}:{:04x}) from {remote} on port {}",
                a.busid,
                a.vid,
                a.pid,
                a.port
            );
            let event = Event::AttachOk {
                port: a.port,
                devid: a.devid,
            };
            (event, relay)
        }
        Ok(Err(e)) => {
            tracing::warn!("auto: attach failed: {e:#}");
            (Event::AttachFailed, None)
        }
        Err(_) => {
            tracing::warn!("auto: attach took over {} s", ATTACH_TIMEOUT.as_secs());
            (Event::AttachFailed, None)
        }
    }
}

/// Returns once `port` no longer carries our device.
async fn port_lost(vhci: &Vhci, port: u32, devid: u32) {
    loop {
        tokio::time::sleep(WATCH_INTERVAL).await;
        match vhci.ports() {
            Ok(ports) if !auto::still_ours(&ports, port, devid) => return,
            Ok(_) => {}
            Err(e) => tracing::warn!("auto: cannot read vhci status: {e}"),
        }
    }
}
