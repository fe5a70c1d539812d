use std::io::IsTerminal;

use clap::Parser;
use tracing_subscriber::EnvFilter;
use usbipd::cli::{self, Cli, Command};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Server(args) => cli::server::run(args).await,
        Command::List(args) => cli::list::run(args).await,
        Command::Bind(args) => cli::binding::bind(args).await,
        Command::Unbind(args) => cli::binding::unbind(args).await,
        Command::Client(cmd) => cli::client::run(cmd).await,
        Command::Virtual(cmd) => cli::virtual_device::run(cmd).await,
        Command::ServiceFile(args) => cli::service_files::run(args),
        Command::Status(args) => cli::status::run(args).await,
        Command::Extension(cmd) => cli::extension::run(cmd).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("usbipd: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
