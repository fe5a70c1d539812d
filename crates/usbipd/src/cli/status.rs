//! `usbipd status`: the extension's health, its claimed devices and recent errors (`--json` for
//! the same as fields). An extension that does not answer is a status, not a failure.

use super::binding::explain;
use super::extension::ExtensionSocketArg;
use crate::ipc::{client, ErrorCode, HostDeviceInfo, Request, Response, StatusReport};

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
}

pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    let path = args.socket.path();
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
    if args.json {
        let v = match &status {
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
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
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
pub fn render(s: &StatusReport, host: &[HostDeviceInfo]) -> String {
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
