//! `usbipd virtual ...`: act on the running server's virtual devices.

use super::ControlArg;
use crate::control::{self, Request};

#[derive(Debug, clap::Subcommand)]
pub enum VirtualCommand {
    /// Type text on a virtual keyboard (a key press and release per character)
    Type {
        /// Busid of the virtual keyboard
        #[arg(long, default_value = "0-1")]
        busid: String,
        /// The text; a newline character presses Enter
        text: String,
        #[command(flatten)]
        control: ControlArg,
    },
}

pub async fn run(cmd: VirtualCommand) -> anyhow::Result<()> {
    match cmd {
        VirtualCommand::Type {
            busid,
            text,
            control,
        } => {
            let response =
                control::request(&control.path()?, &Request::Type { busid, text }).await?;
            match response.error {
                Some(e) => anyhow::bail!(e),
                None => Ok(()),
            }
        }
    }
}
