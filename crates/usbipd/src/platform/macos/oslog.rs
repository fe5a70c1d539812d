//! The unified log as a tracing layer (tracing-oslog: `os_log` under subsystem `dev.usbipd`),
//! for the launchd jobs; `cli::logging` decides when.

use crate::platform::SystemLog;
use crate::platform::OSLOG_SUBSYSTEM;

pub fn layer(category: &str) -> SystemLog {
    Box::new(tracing_oslog::OsLogger::new(OSLOG_SUBSYSTEM, category))
}
