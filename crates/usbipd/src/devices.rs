//! Builds the virtual devices a configuration asks for, with their host-side handles.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{Config, DeviceConfig};
use crate::control::TypeText;
use crate::device::Device;

/// The devices to export, and the handles the control socket needs.
#[derive(Default)]
pub struct BuiltDevices {
    pub devices: Vec<Arc<dyn Device>>,
    pub keyboards: HashMap<String, Arc<dyn TypeText>>,
    /// Temporary files that must live as long as the server (the demo disk image).
    pub keep_alive: Vec<Box<dyn std::any::Any + Send>>,
}

/// The configuration `--demo` serves: one device of each kind; the disk on a temporary image.
pub fn demo_config() -> Config {
    Config {
        devices: vec![
            DeviceConfig::Keyboard { busid: None },
            DeviceConfig::Serial {
                busid: None,
                tcp: ([127, 0, 0, 1], 3250).into(),
            },
            DeviceConfig::Storage {
                busid: None,
                image: "".into(),
                read_only: false,
            },
            DeviceConfig::Loopback { busid: None },
        ],
        ..Config::default()
    }
}

pub async fn build(config: &Config) -> anyhow::Result<BuiltDevices> {
    if let Some(dev) = config.devices.first() {
        anyhow::bail!("device kind {dev:?} is not available yet");
    }
    Ok(BuiltDevices::default())
}
