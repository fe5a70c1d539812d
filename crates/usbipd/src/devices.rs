//! Builds the virtual devices a configuration asks for, with their host-side handles.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::config::{Config, DeviceConfig};
use anyhow::Context;
use tracing::{info, warn};
use usbip_proto::Speed;

use crate::device::r#virtual::gadget_zero;
use crate::device::r#virtual::keyboard::{Keyboard, KeyboardHandle};
use crate::device::r#virtual::mass_storage::{self, MassStorage};
use crate::device::r#virtual::serial::Serial;
use crate::device::r#virtual::BusPosition;
use crate::device::Device;

/// Something text can be typed into (the virtual keyboard).
pub trait TypeText: Send + Sync {
    fn type_text(&self, text: &str) -> Result<(), String>;
}

/// The devices to export, and the handles the control socket needs.
#[derive(Default)]
pub struct BuiltDevices {
    pub devices: Vec<Arc<dyn Device>>,
    pub keyboards: HashMap<String, Arc<dyn TypeText>>,
    /// Temporary files that must live as long as the server (the demo disk image).
    pub keep_alive: Vec<Box<dyn std::any::Any + Send>>,
    /// The virtual disks, to flush when the server stops.
    pub disks: Vec<Arc<MassStorage>>,
}

impl BuiltDevices {
    /// Makes every write the disks acknowledged durable, for a server that stops with clients
    /// still attached (a client that detached had its disk flushed then).
    pub async fn flush_disks(&self) {
        for disk in &self.disks {
            let disk = disk.clone();
            let flushed = tokio::task::spawn_blocking(move || {
                let result = disk.flush();
                (disk, result)
            })
            .await;
            match flushed {
                Ok((disk, Ok(true))) => info!(image = %disk.image_name(), "disk image flushed"),
                Ok((_, Ok(false))) => {}
                Ok((disk, Err(e))) => {
                    warn!(image = %disk.image_name(), error = %e, "disk image flush failed")
                }
                Err(e) => warn!(error = %e, "disk image flush did not run"),
            }
        }
    }
}

/// Size of the demo's temporary disk.
const DEMO_DISK_BYTES: u64 = 64 * 1024 * 1024;

/// The configuration `--demo` serves: one device of each kind; the disk on a temporary image.
pub fn demo_config() -> Config {
    Config {
        devices: vec![
            DeviceConfig::Keyboard {
                busid: None,
                allow: vec![],
            },
            DeviceConfig::Serial {
                busid: None,
                allow: vec![],
                tcp: ([127, 0, 0, 1], 3250).into(),
            },
            DeviceConfig::Storage {
                busid: None,
                allow: vec![],
                image: PathBuf::new(), // empty: a temporary image
                read_only: false,
            },
            DeviceConfig::Loopback {
                busid: None,
                allow: vec![],
            },
        ],
        ..Config::default()
    }
}

impl TypeText for KeyboardHandle {
    fn type_text(&self, text: &str) -> Result<(), String> {
        KeyboardHandle::type_text(self, text).map_err(|e| e.to_string())
    }
}

/// Builds every configured device. Fails on the first that cannot be built (a TCP port in
/// use, an image that cannot be opened), naming it.
pub async fn build(config: &Config) -> anyhow::Result<BuiltDevices> {
    let mut built = BuiltDevices::default();
    for (i, dev) in config.devices.iter().enumerate() {
        let port = i as u32 + 1;
        let position = match dev.busid() {
            Some(busid) => parse_position(busid)?,
            None => BusPosition::virtual_port(port),
        };
        let busid = position.busid.clone();
        let serial = format!("USBIPD{:06X}", port);
        let device: Arc<dyn Device> = match dev {
            DeviceConfig::Keyboard { .. } => {
                let (device, handle) = Keyboard::new(Speed::Full, &serial, position)
                    .with_context(|| format!("virtual keyboard {busid}"))?;
                built.keyboards.insert(busid.clone(), Arc::new(handle));
                Arc::new(device)
            }
            DeviceConfig::Serial { tcp, .. } => Arc::new(
                Serial::bind(*tcp, Speed::High, &serial, position)
                    .await
                    .with_context(|| format!("virtual serial port {busid}"))?,
            ),
            DeviceConfig::Storage {
                image, read_only, ..
            } => {
                let path = if image.as_os_str().is_empty() {
                    // The demo disk: a sparse temporary image that lives as long as the server.
                    let temp = mass_storage::temporary_image(DEMO_DISK_BYTES)
                        .context("temporary disk image for the demo")?;
                    let path = temp.path().to_owned();
                    built.keep_alive.push(Box::new(temp));
                    path
                } else {
                    image.clone()
                };
                let disk = mass_storage::new(&path, *read_only, position)
                    .with_context(|| format!("virtual disk {busid}"))?;
                built.disks.push(disk.function().clone());
                Arc::new(disk)
            }
            DeviceConfig::Loopback { .. } => Arc::new(gadget_zero::new(position)),
        };
        built.devices.push(device);
    }
    Ok(built)
}

/// A configured busid: `<bus>-<port>` with numbers, so that busnum/devnum follow from it.
fn parse_position(busid: &str) -> anyhow::Result<BusPosition> {
    let parsed = busid
        .split_once('-')
        .and_then(|(bus, port)| Some((bus.parse::<u32>().ok()?, port.parse::<u32>().ok()?)));
    match parsed {
        Some((busnum, devnum)) if busnum <= 0xffff && (1..=0xffff).contains(&devnum) => {
            Ok(BusPosition {
                busid: busid.to_string(),
                busnum,
                devnum,
            })
        }
        _ => anyhow::bail!(
            "busid {busid:?} of a virtual device must look like <bus>-<port> with numbers, e.g. 0-5"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_busids_must_be_numeric() {
        let p = parse_position("0-7").unwrap();
        assert_eq!((p.busnum, p.devnum), (0, 7));
        assert!(parse_position("x-1").is_err());
        assert!(parse_position("0-0").is_err());
        assert!(parse_position("1-2.3").is_err());
    }

    #[tokio::test]
    async fn builds_every_kind() {
        let config: Config = toml::from_str(
            r#"
            [[device]]
            kind = "keyboard"
            [[device]]
            kind = "serial"
            tcp = "127.0.0.1:0"
            [[device]]
            kind = "loopback"
            busid = "3-9"
            [[device]]
            kind = "storage"
            image = ""
            "#,
        )
        .unwrap();
        let built = build(&config).await.unwrap();
        let ids: Vec<(String, u16)> = built
            .devices
            .iter()
            .map(|d| {
                let r = d.describe().record;
                (r.busid, r.id_product)
            })
            .collect();
        assert_eq!(
            ids,
            vec![
                ("0-1".into(), 0x0001),
                ("0-2".into(), 0x0002),
                ("3-9".into(), 0xa4a0),
                ("0-4".into(), 0x0003),
            ]
        );
        assert!(built.keyboards.contains_key("0-1"));
    }
}
