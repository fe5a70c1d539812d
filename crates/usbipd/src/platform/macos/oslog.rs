//! The unified log as a tracing layer (tracing-oslog: `os_log` under subsystem `dev.usbipd`),
//! for the launchd jobs; `crate::logging` decides when.

use crate::activation::service_files::OSLOG_SUBSYSTEM;
use crate::platform::SystemLog;

pub fn layer(category: &str) -> SystemLog {
    Box::new(tracing_oslog::OsLogger::new(OSLOG_SUBSYSTEM, category))
}
