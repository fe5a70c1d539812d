//! `usbipd bind` and `usbipd unbind`: ask the extension to claim or release a host device.
//! Failures print the stable error code, what to do, and the OS error code.

use super::extension::ExtensionSocketArg;
use crate::ipc::{client, IpcError, Request, Response};

#[derive(Debug, clap::Args)]
pub struct BindArgs {
    /// The device's busid (see `usbipd status --host`), e.g. 1-2 or 1-2.3
    #[arg(long, short = 'b')]
    pub busid: String,
    #[command(flatten)]
    pub socket: ExtensionSocketArg,
}

#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
pub struct UnbindTarget {
    /// The device's busid
    #[arg(long, short = 'b')]
    pub busid: Option<String>,
    /// Every bound device
    #[arg(long, short = 'a')]
    pub all: bool,
}

#[derive(Debug, clap::Args)]
pub struct UnbindArgs {
    #[command(flatten)]
    pub target: UnbindTarget,
    #[command(flatten)]
    pub socket: ExtensionSocketArg,
}

/// The CLI's rendering of an extension error: message, code, advice, OS code.
pub fn explain(e: &IpcError) -> anyhow::Error {
    let os =
        e.os.map(|o| format!("\n  OS error: {o}"))
            .unwrap_or_default();
    anyhow::anyhow!("{} [{}]\n  {}{os}", e.message, e.code, e.code.advice())
}

pub async fn bind(args: BindArgs) -> anyhow::Result<()> {
    match client::call(&args.socket.path(), &Request::Bind { busid: args.busid }).await {
        Ok(Response::Bound(c)) => {
            let driver = c
                .detached_driver
                .map(|d| format!(" (taken from kernel driver {d})"))
                .unwrap_or_default();
            println!("bound {} {:04x}:{:04x}{driver}", c.busid, c.vid, c.pid);
            Ok(())
        }
        Ok(other) => anyhow::bail!("unexpected answer from the extension: {other:?}"),
        Err(e) => Err(explain(&e)),
    }
}

pub async fn unbind(args: UnbindArgs) -> anyhow::Result<()> {
    let request = match args.target.busid {
        Some(busid) => Request::Unbind { busid },
        None => Request::UnbindAll,
    };
    match client::call(&args.socket.path(), &request).await {
        Ok(Response::Unbound { busids }) => {
            for b in busids {
                println!("unbound {b}");
            }
            Ok(())
        }
        Ok(other) => anyhow::bail!("unexpected answer from the extension: {other:?}"),
        Err(e) => Err(explain(&e)),
    }
}
