//! `usbipd bind` and `usbipd unbind`. With the extension running, it claims the device (and
//! takes it from its kernel driver); without it (fallback mode) the binding goes to the
//! persistent bindings file and the running server, if any, applies it at once.

use crate::activation::Mode;
use crate::bindings::{parse_hardware_id, Binding, Bindings};
use crate::control::{self, Request};

use super::extension::ExtensionSocketArg;
use super::{ControlArg, SharingPlaces};
use crate::ipc::{self, ErrorCode, IpcError};

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["busid", "hardware_id"])))]
pub struct BindArgs {
    /// The device's port, as `usbipd list` shows it (e.g. 1-2.3). With the extension the
    /// device is remembered by VID:PID and serial number: one with a serial number stays bound
    /// when plugged into another port (listed under its new busid); one without stays bound to
    /// this port. An unplugged device stays bound and is shared again when it returns
    #[arg(long, short = 'b')]
    pub busid: Option<String>,
    /// Every device with this VID:PID, wherever it is plugged in (e.g. 0525:a4a0)
    #[arg(long, short = 'i', value_name = "VID:PID")]
    pub hardware_id: Option<String>,
    #[command(flatten)]
    pub places: SharingPlaces,
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["busid", "hardware_id", "all"])))]
pub struct UnbindArgs {
    #[arg(long, short = 'b')]
    pub busid: Option<String>,
    #[arg(long, short = 'i', value_name = "VID:PID")]
    pub hardware_id: Option<String>,
    /// Stop sharing every host device
    #[arg(long, short = 'a')]
    pub all: bool,
    #[command(flatten)]
    pub places: SharingPlaces,
}

/// The CLI's rendering of an extension error: message, code, advice, OS code.
pub fn explain(e: &IpcError) -> anyhow::Error {
    let os =
        e.os.map(|o| format!("\n  OS error: {o}"))
            .unwrap_or_default();
    anyhow::anyhow!("{} [{}]\n  {}{os}", e.message, e.code, e.code.advice())
}

/// Asks the extension; `None` when it is not running (fallback mode).
async fn via_extension(
    socket: &ExtensionSocketArg,
    request: ipc::Request,
) -> Option<Result<ipc::Response, IpcError>> {
    // No socket can even be named (no home directory): no extension to ask.
    let path = socket.path().ok()?;
    match ipc::client::call(&path, &request).await {
        Err(e) if e.code == ErrorCode::Unavailable => None,
        other => Some(other),
    }
}

fn binding_of(busid: &Option<String>, hardware_id: &Option<String>) -> anyhow::Result<Binding> {
    match (busid, hardware_id) {
        (Some(b), _) => {
            if !is_busid(b) {
                anyhow::bail!(
                    "{b:?} is not a busid: it looks like 1-2 or 1-2.3 (see `usbipd list`)"
                );
            }
            Ok(Binding::Busid(b.clone()))
        }
        (None, Some(h)) => parse_hardware_id(h).ok_or_else(|| {
            anyhow::anyhow!("{h:?} is not a hardware id: it looks like 0525:a4a0 (hex VID:PID)")
        }),
        (None, None) => anyhow::bail!("say which device: --busid or --hardware-id"),
    }
}

/// `<bus>-<port>[.<port>...]`, numbers only.
fn is_busid(s: &str) -> bool {
    let Some((bus, ports)) = s.split_once('-') else {
        return false;
    };
    let number = |p: &str| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit());
    number(bus) && ports.split('.').all(number) && s.len() < 32
}

/// Asks a daemon with automatic activation (`--extension auto`) which mode this operation
/// uses; on first use that starts installing the extension in the background. `None`: no
/// such daemon, so the extension is used if it answers.
async fn daemon_mode(control: &ControlArg) -> Option<Mode> {
    control::request(&control.path().ok()?, &Request::BeginOperation)
        .await
        .ok()
        .and_then(|r| r.mode)
}

pub async fn bind(args: BindArgs) -> anyhow::Result<()> {
    bind_with(args, false).await
}

/// Shares `busid` unless it is shared already (`usbipd attach`): the same path as `usbipd bind`,
/// through the extension when it answers, else the bindings file.
pub async fn ensure_shared(busid: &str, places: &SharingPlaces) -> anyhow::Result<()> {
    let args = BindArgs {
        busid: Some(busid.to_string()),
        hardware_id: None,
        places: places.clone(),
    };
    bind_with(args, true).await
}

async fn bind_with(args: BindArgs, already_ok: bool) -> anyhow::Result<()> {
    let binding = binding_of(&args.busid, &args.hardware_id)?;
    let mode = daemon_mode(&args.places.control).await;
    if let Some(Mode::Fallback { .. }) = mode {
        eprintln!("compatibility mode: the extension is not active yet, so usbipd opens the device itself");
    }
    let extension = !matches!(mode, Some(Mode::Fallback { .. }));
    if let (true, Binding::Busid(busid)) = (extension, &binding) {
        let request = ipc::Request::Bind {
            busid: busid.clone(),
        };
        if let Some(answer) = via_extension(&args.places.socket, request).await {
            return match answer {
                Ok(ipc::Response::Bound(c)) => {
                    let driver = c
                        .detached_driver
                        .map(|d| format!(" (taken from kernel driver {d})"))
                        .unwrap_or_default();
                    println!("bound {} {:04x}:{:04x}{driver}", c.busid, c.vid, c.pid);
                    Ok(())
                }
                Ok(other) => anyhow::bail!("unexpected answer from the extension: {other:?}"),
                Err(e) if already_ok && e.code == ErrorCode::AlreadyBound => {
                    println!("{busid} is shared already");
                    Ok(())
                }
                Err(e) => Err(explain(&e)),
            };
        }
    }
    if let Binding::Busid(busid) = &binding {
        ensure_present(busid)?;
    }
    let path = args.places.state.bindings_path()?;
    let added = Bindings::update(&path, |bindings| {
        let added = bindings.add(binding.clone());
        (added, added)
    })?;
    if !added {
        println!("already shared");
        return Ok(());
    }
    apply(&args.places.control).await;
    Ok(())
}

pub async fn unbind(args: UnbindArgs) -> anyhow::Result<()> {
    let request = match (&args.busid, args.all) {
        (_, true) => Some(ipc::Request::UnbindAll),
        (Some(busid), false) => Some(ipc::Request::Unbind {
            busid: busid.clone(),
        }),
        (None, false) => None,
    };
    let mut extension_done = false;
    if let Some(request) = request {
        if let Some(answer) = via_extension(&args.places.socket, request).await {
            match answer {
                Ok(ipc::Response::Unbound { busids }) => {
                    extension_done = true;
                    for b in busids {
                        println!("unbound {b}");
                    }
                    // A device shared in compatibility mode (before the extension was active)
                    // is in the bindings file: --all stops sharing those too.
                    if !args.all {
                        return Ok(());
                    }
                }
                Ok(other) => anyhow::bail!("unexpected answer from the extension: {other:?}"),
                // Not the extension's: maybe bound in compatibility mode.
                Err(e) if e.code == ErrorCode::NotBound => {}
                Err(e) => return Err(explain(&e)),
            }
        }
    }
    let path = args.places.state.bindings_path()?;
    let binding = if args.all {
        None
    } else {
        Some(binding_of(&args.busid, &args.hardware_id)?)
    };
    let outcome = Bindings::update(&path, |bindings| match &binding {
        None => {
            let had = !bindings.entries.is_empty();
            bindings.entries.clear();
            (had, Ok(had))
        }
        Some(binding) if bindings.remove(binding) => (true, Ok(true)),
        Some(_) => (false, Err(())),
    })?;
    match outcome {
        Ok(false) if extension_done => return Ok(()),
        Ok(_) => {}
        Err(()) => anyhow::bail!("that device is not bound (see `usbipd list`)"),
    }
    apply(&args.places.control).await;
    Ok(())
}

/// A busid binding names a port: refuse one where nothing is plugged in (a hardware id may
/// name a device that is not there yet).
#[cfg(host_usb)]
fn ensure_present(busid: &str) -> anyhow::Result<()> {
    use crate::device::host::{HostBackend, NusbBackend};
    let present = NusbBackend.list().unwrap_or_default();
    if present.iter().any(|d| d.busid == busid) {
        Ok(())
    } else {
        anyhow::bail!(
            "no USB device at busid {busid} (see `usbipd list`; to share a device before it is plugged in, use --hardware-id VID:PID)"
        )
    }
}

#[cfg(not(host_usb))]
fn ensure_present(_: &str) -> anyhow::Result<()> {
    anyhow::bail!("host devices are not supported on this platform")
}

/// Tells a running server to re-read the bindings; without one, they apply at its next start.
async fn apply(control: &ControlArg) {
    let answer = match control.path() {
        Ok(path) => control::request(&path, &Request::Reload).await,
        Err(e) => Err(e.into()),
    };
    match answer {
        Ok(r) if r.ok => println!("done; the running server applied it"),
        _ => println!("saved; it applies when `usbipd server` starts"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busids_are_validated() {
        assert!(is_busid("1-2"));
        assert!(is_busid("12-2.3.4"));
        assert!(!is_busid("1-"));
        assert!(!is_busid("0-1a"));
        assert!(!is_busid("../1-1"));
        assert!(!is_busid("1-2..3"));
    }

    #[test]
    fn bind_help_says_a_busid_binding_follows_the_serial_number_to_another_port() {
        use clap::CommandFactory;
        let mut cli = crate::cli::Cli::command();
        let help = cli
            .find_subcommand_mut("bind")
            .unwrap()
            .render_long_help()
            .to_string();
        assert!(help.contains("serial number"), "{help}");
        assert!(help.contains("another port"), "{help}");
    }
}
