//! The command line: one module per command; `main.rs` only parses and dispatches.

pub mod attach;
pub mod binding;
pub mod client;
pub mod detach;
pub mod docs;
pub mod extension;
pub mod list;
pub mod logging;
pub mod server;
pub mod service_files;
pub mod status;
pub mod trust;
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
    #[command(flatten)]
    pub log: LogArgs,
}

/// How much to log, and how: the same for every command (the server and the extension log
/// the most). `RUST_LOG` still works, for per-module filters; `--log-level` wins over it.
#[derive(Debug, clap::Args)]
pub struct LogArgs {
    /// Log level: error, warn, info, debug or trace [default: $RUST_LOG, else info]
    #[arg(long, global = true, value_name = "LEVEL", value_parser = ["error", "warn", "info", "debug", "trace"])]
    pub log_level: Option<String>,
    /// Log format: text for people, json (one object per line) for log collectors.
    #[arg(long, global = true, value_name = "FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

impl LogArgs {
    /// The same flags, for a child process (the embedded extension).
    pub fn to_args(&self) -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> =
            vec!["--log-format".into(), (&self.log_format).into()];
        if let Some(level) = &self.log_level {
            args.extend(["--log-level".into(), level.into()]);
        }
        args
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve devices to USB/IP clients (TCP 3240).
    Server(server::ServerArgs),
    /// List the devices of the running server, or of a remote USB/IP server with --remote.
    List(list::ListArgs),
    /// Share a host device (persistent; the running server picks it up at once).
    Bind(binding::BindArgs),
    /// Stop sharing host devices.
    Unbind(binding::UnbindArgs),
    /// Attach a device inside a Lima/Colima VM or Docker Desktop's VM (binds it if needed).
    Attach(attach::AttachArgs),
    /// End a client's session from the server side (and stop a `usbipd attach` client in its
    /// VM); the device stays shared.
    Detach(detach::DetachArgs),
    /// The extension's health, claimed devices and recent errors.
    Status(status::StatusArgs),
    /// The privileged extension process.
    #[command(subcommand)]
    Extension(extension::ExtensionCommand),
    /// The VM side (Linux, vhci-hcd): attach a remote server's device to this machine.
    #[command(subcommand)]
    Client(client::ClientCommand),
    /// Client keys the TLS listener admits (`--listen-tls`).
    #[command(subcommand)]
    Trust(trust::TrustCommand),
    /// Print a one-time code with which a client registers its key over TLS.
    Pair(trust::PairArgs),
    /// Control virtual devices of the running server.
    #[command(subcommand)]
    Virtual(virtual_device::VirtualCommand),
    /// Print the shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(docs::CompletionsArgs),
    /// Write the man pages into a directory (for packaging).
    #[command(hide = true)]
    Manpages(docs::ManpagesArgs),
    /// Print the generated systemd unit or launchd plist (for packaging).
    #[command(hide = true)]
    ServiceFile(service_files::ServiceFileArgs),
}

/// Where the commands that share a device find the bindings, the running server and the
/// extension (`bind`, `unbind`, `attach`).
#[derive(Debug, Clone, clap::Args)]
pub struct SharingPlaces {
    #[command(flatten)]
    pub state: StateArg,
    #[command(flatten)]
    pub control: ControlArg,
    #[command(flatten)]
    pub socket: extension::ExtensionSocketArg,
}

/// `--control PATH`, shared by the commands that talk to a running server.
#[derive(Debug, Clone, clap::Args)]
pub struct ControlArg {
    /// Control socket of the running server [default: /run/usbipd/control.sock as root, else $XDG_RUNTIME_DIR/usbipd/control.sock]
    #[arg(long, value_name = "PATH")]
    pub control: Option<PathBuf>,
}

/// `--state-dir DIR`, where the bindings live.
#[derive(Debug, Clone, clap::Args)]
pub struct StateArg {
    /// State directory [default: $USBIPD_STATE_DIR, /var/lib/usbipd as root, ~/.local/state/usbipd]
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

impl StateArg {
    pub fn dir(&self) -> Result<PathBuf, crate::persist::NoUserDirectory> {
        match &self.state_dir {
            Some(dir) => Ok(dir.clone()),
            None => crate::persist::state_dir(),
        }
    }

    pub fn bindings_path(&self) -> Result<PathBuf, crate::persist::NoUserDirectory> {
        Ok(self.dir()?.join("bindings.json"))
    }

    /// The activation state file (`activation.json`).
    pub fn activation_path(&self) -> Result<PathBuf, crate::persist::NoUserDirectory> {
        Ok(self.dir()?.join("activation.json"))
    }
}

impl ControlArg {
    pub fn path(&self) -> Result<PathBuf, crate::persist::NoUserDirectory> {
        match &self.control {
            Some(path) => Ok(path.clone()),
            None => crate::control::default_path(),
        }
    }
}
