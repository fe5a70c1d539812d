//! `usbipd service-file systemd|launchd|launchd-daemon [--exe PATH]` (hidden): prints the service definition
//! generated for an executable, so packaging uses exactly what the installer would write.
//!
//! It only prints: it never installs anything.

use std::path::PathBuf;

use crate::activation::service_files::{launchd, systemd};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Kind {
    /// The systemd unit (usbipd-extension.service)
    Systemd,
    /// The extension's launchd daemon plist (dev.usbipd.extension.plist)
    Launchd,
    /// The daemon's launchd daemon plist (homebrew.mxcl.usbipd.plist, as `brew services`
    /// installs it)
    LaunchdDaemon,
}

#[derive(Debug, clap::Args)]
pub struct ServiceFileArgs {
    pub kind: Kind,
    /// The executable the service runs [default: this executable]
    #[arg(long, value_name = "PATH")]
    pub exe: Option<PathBuf>,
}

pub fn run(args: ServiceFileArgs) -> anyhow::Result<()> {
    let exe = match args.exe {
        Some(p) => p,
        None => std::env::current_exe()?,
    };
    anyhow::ensure!(
        exe.is_absolute(),
        "--exe must be an absolute path: {}",
        exe.display()
    );
    let text = match args.kind {
        Kind::Systemd => systemd::unit(&exe),
        Kind::Launchd => launchd::plist(&exe),
        Kind::LaunchdDaemon => launchd::daemon_plist(&exe),
    };
    print!("{text}");
    Ok(())
}
