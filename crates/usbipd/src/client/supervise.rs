//! The `--auto` loop: performs what `auto.rs` decides. Attaches, watches the port in the
//! kernel's `status` until our device is gone from it, attaches again (a device chosen by
//! hardware id is looked up again, wherever it now is), and on SIGTERM or SIGINT detaches and
//! returns. Each transition is logged.

use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};

use super::attach::{attach, detach};
use super::auto::{self, Action, Event};
use super::remote::Selector;
use super::sysfs::Vhci;

/// How often the port is looked at while attached.
const WATCH_INTERVAL: Duration = Duration::from_millis(250);
/// One attach (connect, list, import) may take this long before it counts as failed.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(15);

pub async fn run(vhci: &Vhci, remote: &str, selector: &Selector) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (mut phase, mut action) = auto::start();
    tracing::info!("auto: keeping {selector} from {remote} attached");
    loop {
        let event = match action {
            Action::Exit => {
                tracing::info!("auto: exiting");
                return Ok(());
            }
            Action::Detach { port } => {
                detach(vhci, port)?;
                tracing::info!("auto: detached port {port}; exiting");
                return Ok(());
            }
            Action::AttachAfter(wait) => {
                if !wait.is_zero() {
                    tracing::info!("auto: next attach in {} ms", wait.as_millis());
                }
                tokio::select! {
                    _ = term.recv() => Event::Terminate,
                    _ = int.recv() => Event::Terminate,
                    event = attach_after(vhci, remote, selector, wait) => event,
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

async fn attach_after(vhci: &Vhci, remote: &str, selector: &Selector, wait: Duration) -> Event {
    tokio::time::sleep(wait).await;
    match tokio::time::timeout(ATTACH_TIMEOUT, attach(vhci, remote, selector)).await {
        Ok(Ok(a)) => {
            tracing::info!(
                "auto: attached {} ({:04x}:{:04x}) from {remote} on port {}",
                a.busid,
                a.vid,
                a.pid,
                a.port
            );
            Event::AttachOk {
                port: a.port,
                devid: a.devid,
            }
        }
        Ok(Err(e)) => {
            tracing::warn!("auto: attach failed: {e:#}");
            Event::AttachFailed
        }
        Err(_) => {
            tracing::warn!("auto: attach took over {} s", ATTACH_TIMEOUT.as_secs());
            Event::AttachFailed
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
