use clap::Parser;
use usbipd::cli::{self, Cli, Command};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    usbipd::cli::logging::init(&cli.log);
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
        Command::Trust(cmd) => cli::trust::run(cmd),
        Command::Pair(args) => cli::trust::pair(args),
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
