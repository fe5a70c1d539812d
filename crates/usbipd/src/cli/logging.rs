//! Where the program's logs go: standard error (text, or JSON lines for collectors), or, when
//! it runs as a launchd job (the extension's or the daemon's LaunchDaemon), the system's own
//! log (the unified log on macOS: subsystem `dev.usbipd`, category `extension` or `server`),
//! read with `log show --predicate 'subsystem == "dev.usbipd"'`. The log layer itself is the
//! platform leaf's (`platform::system_log`); the choice is here, as pure functions.

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::activation::service_files::{DAEMON_LABEL, LAUNCHD_LABEL};
use crate::cli::LogArgs;

/// The launchd job this process runs as, from `XPC_SERVICE_NAME`, which launchd sets to the
/// job's label. A Terminal session has it too, set to `0`: that is no job.
pub fn launchd_job(xpc_service_name: Option<&str>) -> Option<&str> {
    xpc_service_name.filter(|name| !name.is_empty() && *name != "0")
}

/// The unified log's category for a job: what the job is.
pub fn category(job: &str) -> &str {
    match job {
        LAUNCHD_LABEL => "extension",
        DAEMON_LABEL => "server",
        other => other,
    }
}

fn filter(log: &LogArgs) -> EnvFilter {
    match &log.log_level {
        Some(level) => EnvFilter::new(level),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    }
}

/// Sets the process's logger: `--log-level`, else `RUST_LOG`, else info.
pub fn init(log: &LogArgs) {
    let job = std::env::var("XPC_SERVICE_NAME").ok();
    if let Some(layer) =
        launchd_job(job.as_deref()).and_then(|job| crate::platform::system_log(category(job)))
    {
        tracing_subscriber::registry()
            .with(layer.with_filter(filter(log)))
            .init();
        return;
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter(log))
        .with_writer(std::io::stderr);
    if log.log_format == "json" {
        builder.json().init();
    } else {
        builder.with_ansi(std::io::stderr().is_terminal()).init();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_launchd_label_is_a_job() {
        assert_eq!(launchd_job(None), None);
        assert_eq!(launchd_job(Some("0")), None);
        assert_eq!(launchd_job(Some("")), None);
        assert_eq!(
            launchd_job(Some("dev.usbipd.extension")),
            Some("dev.usbipd.extension")
        );
    }

    #[test]
    fn each_job_logs_under_its_own_category() {
        assert_eq!(category("dev.usbipd.extension"), "extension");
        assert_eq!(category("homebrew.mxcl.usbipd"), "server");
        assert_eq!(category("local.my-usbipd"), "local.my-usbipd");
    }
}
