//! The command line: one module per command; `main.rs` only parses and dispatches.

pub mod bind;
pub mod extension;
pub mod list;
pub mod server;
pub mod status;
pub mod virtual_device;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "usbipd",
    version,
    about = "Share USB devices over the network with USB/IP clients"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve devices to USB/IP clients (TCP 3240).
    Server(server::ServerArgs),
    /// List the devices of the running server, or of a remote USB/IP server with --remote.
    List(list::ListArgs),
    /// Claim a host device exclusively (through the extension) so that it can be shared.
    Bind(bind::BindArgs),
    /// Release a claimed device; it goes back to its kernel driver.
    Unbind(bind::UnbindArgs),
    /// The extension's health, claimed devices and recent errors.
    Status(status::StatusArgs),
    /// The privileged extension process.
    #[command(subcommand)]
    Extension(extension::ExtensionCommand),
    /// Control virtual devices of the running server.
    #[command(subcommand)]
    Virtual(virtual_device::VirtualCommand),
}

/// `--control PATH`, shared by the commands that talk to a running server.
#[derive(Debug, clap::Args)]
pub struct ControlArg {
    /// Control socket of the running server [default: $XDG_RUNTIME_DIR/usbipd/control.sock]
    #[arg(long, value_name = "PATH")]
    pub control: Option<PathBuf>,
}

impl ControlArg {
    pub fn path(&self) -> PathBuf {
        self.control
            .clone()
            .unwrap_or_else(crate::control::default_path)
    }
}
