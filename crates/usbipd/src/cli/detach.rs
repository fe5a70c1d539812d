//! `usbipd detach`: ends a client's session from the server side, as usbipd-win's `detach`
//! does; the device stays shared (and claimed) and can be attached again at once.
//!
//! Sessions live where the import was served: virtual and fallback host devices in the daemon
//! (asked over the control socket), host devices in extension mode in the extension (over
//! IPC). Both are asked; what either ended is reported.

use crate::control::{self, Request};
use crate::ipc::{self, DetachedSession, ErrorCode};

use super::extension::ExtensionSocketArg;
use super::ControlArg;

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["busid", "all"])))]
pub struct DetachArgs {
    /// The device whose client to detach
    #[arg(long, short = 'b')]
    pub busid: Option<String>,
    /// Detach every client
    #[arg(long, short = 'a')]
    pub all: bool,
    #[command(flatten)]
    pub control: ControlArg,
    #[command(flatten)]
    pub socket: ExtensionSocketArg,
}

pub async fn run(args: DetachArgs) -> anyhow::Result<()> {
    let busid = if args.all { None } else { args.busid.clone() };
    let mut ended: Vec<DetachedSession> = Vec::new();
    let mut reached = false;
    if let Ok(path) = args.control.path() {
        match control::request(
            &path,
            &Request::Detach {
                busid: busid.clone(),
            },
        )
        .await
        {
            Ok(r) if r.ok => {
                reached = true;
                ended.extend(r.detached);
            }
            Ok(r) => anyhow::bail!(r.error.unwrap_or_else(|| "refused".into())),
            Err(e) if control::is_untrusted(&e) => return Err(e),
            Err(_) => {}
        }
    }
    if let Ok(path) = args.socket.path() {
        match ipc::client::call(
            &path,
            &ipc::Request::Detach {
                busid: busid.clone(),
            },
        )
        .await
        {
            Ok(ipc::Response::Detached { sessions }) => {
                reached = true;
                ended.extend(sessions);
            }
            Ok(other) => anyhow::bail!("unexpected answer from the extension: {other:?}"),
            Err(e) if e.code == ErrorCode::Unavailable => {}
            Err(e) => return Err(super::binding::explain(&e)),
        }
    }
    if !reached {
        anyhow::bail!("no running usbipd server or extension to ask (is `usbipd server` running?)");
    }
    match (&busid, ended.is_empty()) {
        (Some(b), true) => anyhow::bail!("no client has {b} attached"),
        (None, true) => println!("no client was attached"),
        _ => {}
    }
    for s in ended {
        println!("detached {} from {}", s.busid, s.client);
    }
    Ok(())
}
