//! `usbipd status`: one "System Extension: ..." headline with its guidance (from the running
//! daemon's activation, or from the state file when no daemon runs), then the extension's
//! health, its claimed devices and recent errors (`--json` for the same as fields). An
//! extension or daemon that does not answer is a status, not a failure.

use super::binding::explain;
use super::extension::ExtensionSocketArg;
use super::{ControlArg, StateArg};
use crate::activation::installer::{self, Platform};
use crate::activation::state::InstallerKind;
use crate::activation::state_file::StateFile;
use crate::activation::status::{self as activation_status, Facts, Os};
use crate::activation::{manual, Mode};
use crate::control;
use crate::ipc::{client, BusDeviceReport, ErrorCode, Request, Response, StatusReport};

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Print JSON
    #[arg(long)]
    pub json: bool,
    /// Also list the host's USB devices and their kernel drivers
    #[arg(long)]
    pub host: bool,
    #[command(flatten)]
    pub socket: ExtensionSocketArg,
    #[command(flatten)]
    pub control: ControlArg,
    #[command(flatten)]
    pub state: StateArg,
}

/// The activation part: the daemon's (`--extension auto`), or the state file and a probe.
pub async fn activation_report(
    control: &ControlArg,
    state: &StateArg,
    extension_answers: bool,
) -> anyhow::Result<activation_status::StatusReport> {
    let answer = match control.path() {
        Ok(path) => control::request(&path, &control::Request::Status)
            .await
            .ok(),
        Err(_) => None,
    };
    let platform = Platform::detect()?;
    let installer = installer::for_platform(&platform, None);
    // The service manager's word on the services, whoever renders the rest.
    let services = installer.as_ref().map(|i| i.services()).unwrap_or_default();
    if let Some(r) = answer {
        if let Some(mut report) = r.activation {
            report.services = services;
            return Ok(report);
        }
    }
    let file = StateFile::new(state.activation_path()?);
    let mut snapshot = manual::offline_snapshot(installer.as_deref(), &file);
    if extension_answers && !snapshot.mode.is_extension() {
        // Run by a daemon in embedded mode, or by hand: active all the same.
        snapshot.mode = Mode::Extension;
        snapshot.installer.get_or_insert(InstallerKind::Embedded);
    }
    let facts = Facts {
        os: Os::current(),
        exe: platform.exe,
        state_file: file.path().to_path_buf(),
    };
    let mut report = activation_status::report(&snapshot, &facts);
    report.services = services;
    Ok(report)
}

pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    let path = args.socket.path()?;
    let status = match client::call(&path, &Request::Status).await {
        Ok(Response::Status(s)) => Some(s),
        Ok(other) => anyhow::bail!("unexpected answer from the extension: {other:?}"),
        Err(e) if e.code == ErrorCode::Unavailable => None,
        Err(e) => return Err(explain(&e)),
    };
    let host = match (&status, args.host) {
        (Some(_), true) => match client::call(&path, &Request::HostDevices).await {
            Ok(Response::HostDevices(d)) => d,
            _ => Vec::new(),
        },
        _ => Vec::new(),
    };
    let activation = activation_report(&args.control, &args.state, status.is_some()).await?;
    if args.json {
        let mut v = match &status {
            Some(s) => serde_json::json!({
                "extension": s.health,
                "claims": s.claims,
                "errors": s.errors,
                "host_devices": host,
            }),
            None => serde_json::json!({
                "extension": { "running": false, "socket": path },
                "claims": [], "errors": [], "host_devices": [],
            }),
        };
        v["activation"] = serde_json::to_value(&activation)?;
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    print!("{}", activation_status::render_text(&activation));
    match &status {
        Some(s) => print!("{}", render(s, &host)),
        None => println!(
            "Extension: not running (no answer on {})\n  {}",
            path.display(),
            ErrorCode::Unavailable.advice()
        ),
    }
    Ok(())
}

/// The human-readable status.
pub fn render(s: &StatusReport, host: &[BusDeviceReport]) -> String {
    let h = &s.health;
    let mut out = format!(
        "Extension: running (pid {}, up {}s, version {}, protocol {}, mode {}, bus {})\n",
        h.pid, h.uptime_secs, h.version, h.protocol, h.mode, h.bus
    );
    for m in &h.missing_privileges {
        out += &format!("  missing: {m}\n");
    }
    if s.claims.is_empty() {
        out += "Claimed devices: none (usbipd bind --busid <busid>)\n";
    } else {
        out += "Claimed devices:\n";
        out += &format!(
            "  {:<10} {:<10} {:<10} CLIENT\n",
            "BUSID", "VID:PID", "STATE"
        );
        for c in &s.claims {
            out += &format!(
                "  {:<10} {:04x}:{:04x}  {:<10} {}\n",
                c.busid,
                c.vid,
                c.pid,
                c.state,
                c.client.as_deref().unwrap_or("-")
            );
        }
    }
    if !host.is_empty() {
        out += "Host devices:\n";
        for d in host {
            out += &format!(
                "  {:<10} {:04x}:{:04x}  driver {:<10} {}\n",
                d.busid,
                d.vid,
                d.pid,
                d.driver.as_deref().unwrap_or("-"),
                if d.bound { "bound" } else { "" }
            );
        }
    }
    if !s.errors.is_empty() {
        out += "Recent errors:\n";
        for e in &s.errors {
            out += &format!(
                "  t={} {} {}: {}{}\n",
                e.at,
                e.busid.as_deref().unwrap_or("-"),
                e.code,
                e.message,
                e.os.map(|o| format!(" ({o})")).unwrap_or_default()
            );
        }
    }
    out
}
