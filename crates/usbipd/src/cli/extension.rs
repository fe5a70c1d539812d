//! `usbipd extension run`: run the extension process (started by the daemon in embedded mode,
//! or by systemd/launchd as a service); `install | uninstall | status`: the same installers
//! and state file the daemon's automatic activation uses, run by hand.

use std::path::PathBuf;
use std::sync::Arc;

use super::{ControlArg, StateArg};
use crate::activation::installer::{self, InstallError, Installer, Platform, ServiceLocation};
use crate::activation::state_file::StateFile;
use crate::activation::{manual, status};
use crate::extension::{self, RunOptions};

/// Where the extension listens and keeps its claims; shared by the commands that talk to it.
#[derive(Debug, Clone, clap::Args)]
pub struct ExtensionSocketArg {
    /// The extension's IPC socket [default: /run/usbipd/extension.sock as root]
    #[arg(long = "extension-socket", value_name = "PATH")]
    pub extension_socket: Option<PathBuf>,
}

impl ExtensionSocketArg {
    pub fn path(&self) -> Result<PathBuf, crate::persist::NoUserDirectory> {
        match &self.extension_socket {
            Some(path) => Ok(path.clone()),
            None => extension::default_socket(),
        }
    }
}

#[derive(Debug, clap::Subcommand)]
pub enum ExtensionCommand {
    /// Run the extension in the foreground
    Run(RunArgs),
    /// Install the extension as a service (systemd unit, launchd daemon) and start it
    Install(ManageArgs),
    /// Stop and remove the extension's service (the daemon installs it again on first use)
    Uninstall(ManageArgs),
    /// Whether the extension is installed and active, and what to do if not
    Status(StatusArgs),
}

#[derive(Debug, clap::Args)]
pub struct ManageArgs {
    #[command(flatten)]
    pub state: StateArg,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Print JSON
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub socket: ExtensionSocketArg,
    #[command(flatten)]
    pub control: ControlArg,
    #[command(flatten)]
    pub state: StateArg,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub socket: ExtensionSocketArg,
    /// The claim registry file [default: claims.json in the state directory, /var/lib/usbipd as root]
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,
    /// Tests only: use a virtual host bus described by this JSON spec file
    #[cfg(feature = "test-support")]
    #[arg(long, value_name = "SPEC")]
    pub virtual_bus: Option<PathBuf>,
    /// A user id besides root that may use the extension (the daemon's); repeatable
    #[arg(long, value_name = "UID")]
    pub allow_uid: Vec<u32>,
    /// A group id whose members may use the extension; repeatable
    #[arg(long, value_name = "GID")]
    pub allow_gid: Vec<u32>,
    /// How it was started: `service` (systemd, launchd, by hand) or `embedded` (by the daemon)
    #[arg(long, default_value = "service", value_parser = ["service", "embedded"])]
    pub mode: String,
}

/// This machine's installer, for the commands a person runs (no embedded supervisor: a CLI
/// process cannot keep a child running).
fn installer() -> anyhow::Result<(Arc<dyn Installer>, Platform)> {
    let platform = Platform::detect()?;
    match installer::for_platform(&platform, None) {
        Some(i) => Ok((i, platform)),
        None => anyhow::bail!(
            "no service manager to install the extension into here (systemd is not running); \
             `usbipd server --extension auto` (or `embedded`) runs it as the daemon's child instead"
        ),
    }
}

fn service_line(location: &ServiceLocation) -> String {
    format!(
        "{} {} ({})",
        location.kind.as_str(),
        location.identifier,
        location.path.display()
    )
}

pub async fn run(cmd: ExtensionCommand) -> anyhow::Result<()> {
    match cmd {
        ExtensionCommand::Install(args) => {
            let (installer, _) = installer()?;
            let file = StateFile::new(args.state.activation_path()?);
            let result =
                tokio::task::spawn_blocking(move || manual::install(installer.as_ref(), &file))
                    .await?;
            match result {
                Ok(done) => {
                    let signing = match done.signed {
                        Some(false) => ", unsigned (development mode)",
                        Some(true) => ", signed",
                        None => "",
                    };
                    println!("installed: {}{signing}", service_line(&done.location));
                    Ok(())
                }
                Err(InstallError::NeedsApproval(step)) => {
                    anyhow::bail!("{}", status::approval_message(&step))
                }
                Err(InstallError::Failed(reason)) => anyhow::bail!("installation failed: {reason}"),
            }
        }
        ExtensionCommand::Uninstall(args) => {
            let (installer, _) = installer()?;
            let file = StateFile::new(args.state.activation_path()?);
            tokio::task::spawn_blocking(move || manual::uninstall(installer.as_ref(), &file))
                .await?
                .map_err(|e| anyhow::anyhow!("uninstall failed: {e}"))?;
            println!("uninstalled");
            Ok(())
        }
        ExtensionCommand::Status(args) => {
            let answers =
                crate::ipc::client::call(&args.socket.path()?, &crate::ipc::Request::Status)
                    .await
                    .is_ok();
            let report =
                super::status::activation_report(&args.control, &args.state, answers).await?;
            if args.json {
                println!("{}", status::render_json(&report));
            } else {
                print!("{}", status::render_text(&report));
            }
            Ok(())
        }
        ExtensionCommand::Run(args) => {
            extension::run(RunOptions {
                socket: args.socket.path()?,
                state: match args.state {
                    Some(state) => state,
                    None => extension::default_state()?,
                },
                #[cfg(feature = "test-support")]
                virtual_bus: args.virtual_bus,
                allow_uids: args.allow_uid,
                allow_gids: args.allow_gid,
                mode: args.mode,
            })
            .await
        }
    }
}
