//! `usbipd detach`: ends a client's session from the server side, as usbipd-win's `detach`
//! does; the device stays shared (and claimed) and can be attached again at once.
//!
//! A device that `usbipd attach --lima/--docker` attached has its client in the VM stopped
//! first (`vm::plan::detach_plan`; an `--auto` client would attach it again otherwise).
//!
//! Sessions live where the import was served: virtual and fallback host devices in the daemon
//! (asked over the control socket), host devices in extension mode in the extension (over
//! IPC). Both are asked; what either ended is reported.

use crate::control::{self, Request};
use crate::ipc::{self, DetachedSession, ErrorCode};

use crate::vm::plan::detach_plan;
use crate::vm::records::{self, Attachments};
use crate::vm::runner::{run_plan, Processes, Runner};

use super::extension::ExtensionSocketArg;
use super::{ControlArg, StateArg};

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
    #[command(flatten)]
    pub state: StateArg,
}

pub async fn run(args: DetachArgs) -> anyhow::Result<()> {
    run_with(args, &mut Processes).await
}

/// Stops the VM-side clients that `usbipd attach` started for `busid` (every one for `None`);
/// true when there was one. A failed stop is reported and its record kept, to be tried again.
fn stop_vm_clients(
    state: &StateArg,
    busid: Option<&str>,
    runner: &mut dyn Runner,
) -> anyhow::Result<bool> {
    let Ok(dir) = state.dir() else {
        return Ok(false);
    };
    let path = records::path(&dir);
    let mut all = Attachments::load(&path)?;
    let taken = all.take(busid);
    if taken.is_empty() {
        return Ok(false);
    }
    let mut failed = Vec::new();
    for a in taken {
        match detach_plan(&a)
            .map_err(anyhow::Error::from)
            .and_then(|steps| run_plan(runner, &steps).map_err(anyhow::Error::from))
        {
            Ok(()) => println!("stopped the client of {} in its VM", a.busid),
            Err(e) => {
                eprintln!(
                    "usbipd: stopping the client of {} in its VM: {e:#}",
                    a.busid
                );
                failed.push(a);
            }
        }
    }
    let failures = failed.len();
    all.entries.extend(failed);
    all.save(&path)?;
    if failures > 0 {
        anyhow::bail!("{failures} VM-side client(s) not stopped (see above); run the detach again");
    }
    Ok(true)
}

/// `usbipd detach` with the VM-side commands run by `runner`.
pub async fn run_with(args: DetachArgs, runner: &mut dyn Runner) -> anyhow::Result<()> {
    let busid = if args.all { None } else { args.busid.clone() };
    let vm_stopped = stop_vm_clients(&args.state, busid.as_deref(), runner)?;
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
    // The VM's client was the attachment: with it stopped there is nothing more to end (a
    // one-shot client's detach closed its session; a server that is gone has none).
    if vm_stopped && (!reached || ended.is_empty()) {
        return Ok(());
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
