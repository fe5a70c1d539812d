//! The extension's health for `usbipd status`: who and what it is, since when, and a bounded
//! ring of recent errors.
//!
//! The ring never holds more than [`MAX_ERRORS`] entries, nor anything but ids and codes.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::ipc::{ErrorCode, ErrorEntry, Health, OsCode, PROTOCOL_VERSION};

pub const MAX_ERRORS: usize = 32;

pub struct HealthState {
    started: Instant,
    mode: String,
    bus: &'static str,
    missing: Vec<String>,
    errors: Mutex<VecDeque<ErrorEntry>>,
}

impl HealthState {
    pub fn new(mode: &str, bus: &'static str, missing: Vec<String>) -> HealthState {
        HealthState {
            started: Instant::now(),
            mode: mode.into(),
            bus,
            missing,
            errors: Mutex::new(VecDeque::with_capacity(MAX_ERRORS)),
        }
    }

    pub fn record_error(
        &self,
        busid: Option<&str>,
        code: ErrorCode,
        os: Option<OsCode>,
        message: &str,
    ) {
        let mut errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        if errors.len() == MAX_ERRORS {
            errors.pop_front();
        }
        errors.push_back(ErrorEntry {
            at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            busid: busid.map(Into::into),
            code,
            os,
            message: message.into(),
        });
    }

    pub fn errors(&self) -> Vec<ErrorEntry> {
        self.errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    pub fn health(&self) -> Health {
        Health {
            running: true,
            pid: std::process::id(),
            uptime_secs: self.started.elapsed().as_secs(),
            version: env!("CARGO_PKG_VERSION").into(),
            protocol: PROTOCOL_VERSION,
            mode: self.mode.clone(),
            bus: self.bus.into(),
            missing_privileges: self.missing.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_ring_keeps_the_most_recent_only() {
        let h = HealthState::new("embedded", "virtual", vec![]);
        for i in 0..(MAX_ERRORS + 5) {
            h.record_error(Some(&format!("1-{i}")), ErrorCode::DeviceBusy, None, "busy");
        }
        let errors = h.errors();
        assert_eq!(errors.len(), MAX_ERRORS);
        assert_eq!(errors[0].busid.as_deref(), Some("1-5"));
        assert_eq!(
            errors.last().unwrap().busid.as_deref(),
            Some(format!("1-{}", MAX_ERRORS + 4).as_str())
        );
    }
}
