use std::io::IsTerminal;

use clap::Parser;
use tracing_subscriber::EnvFilter;
use usbipd::cli::{self, Cli, Command, LogArgs};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log);
    let result = match cli.command {
        Command::Server(mut args) => {
            args.log_args = cli.log.to_args();
            cli::server::run(args).await
        }
        Command::List(args) => cli::list::run(args).await,
        Command::Bind(args) => cli::binding::bind(args).await,
        Command::Unbind(args) => cli::binding::unbind(args).await,
        Command::Attach(args) => cli::attach::run(args).await,
        Command::Detach(args) => cli::detach::run(args).await,
        Command::Client(cmd) => cli::client::run(cmd).await,
        Command::Virtual(cmd) => cli::virtual_device::run(cmd).await,
        Command::ServiceFile(args) => cli::service_files::run(args),
        Command::Completions(args) => cli::docs::completions(args),
        Command::Manpages(args) => cli::docs::manpages(args),
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

/// Logs go to stderr: `--log-level`, else `RUST_LOG`, else info; text or JSON lines.
fn init_logging(log: &LogArgs) {
    let filter = match &log.log_level {
        Some(level) => EnvFilter::new(level),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if log.log_format == "json" {
        builder.json().init();
    } else {
        builder.with_ansi(std::io::stderr().is_terminal()).init();
    }
}
