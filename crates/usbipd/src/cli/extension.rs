//! `usbipd extension run`: run the extension process (started by the daemon in embedded mode,
//! or by systemd/launchd as a service).

use std::path::PathBuf;

use crate::extension::{self, RunOptions};

/// Where the extension listens and keeps its claims; shared by the commands that talk to it.
#[derive(Debug, Clone, clap::Args)]
pub struct ExtensionSocketArg {
    /// The extension's IPC socket [default: /run/usbipd/extension.sock as root]
    #[arg(long = "extension-socket", value_name = "PATH")]
    pub extension_socket: Option<PathBuf>,
}

impl ExtensionSocketArg {
    pub fn path(&self) -> PathBuf {
        self.extension_socket
            .clone()
            .unwrap_or_else(extension::default_socket)
    }
}

#[derive(Debug, clap::Subcommand)]
pub enum ExtensionCommand {
    /// Run the extension in the foreground
    Run(RunArgs),
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub socket: ExtensionSocketArg,
    /// The claim registry file [default: /var/lib/usbipd/claims.json as root]
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,
    /// Tests only: use a virtual host bus described by this JSON spec file
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

pub async fn run(cmd: ExtensionCommand) -> anyhow::Result<()> {
    match cmd {
        ExtensionCommand::Run(args) => {
            extension::run(RunOptions {
                socket: args.socket.path(),
                state: args.state.unwrap_or_else(extension::default_state),
                virtual_bus: args.virtual_bus,
                allow_uids: args.allow_uid,
                allow_gids: args.allow_gid,
                mode: args.mode,
            })
            .await
        }
    }
}
