//! The configuration file (TOML): where to listen, limits, and which virtual devices to serve.
//!
//! Parsing only; building devices from it is `devices::build`. Unknown keys are errors, so a
//! typo never silently does nothing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::Deserialize;

use crate::server::ServerConfig;

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Addresses to listen on; default `127.0.0.1:3240` (loopback only).
    #[serde(default)]
    pub listen: Vec<SocketAddr>,
    /// Client networks (CIDR) allowed to connect; empty: everyone who reaches the port.
    #[serde(default)]
    pub allow: Vec<IpNet>,
    #[serde(default)]
    pub limits: LimitsConfig,
    /// pcapng file recording every URB (as `--capture`, which wins).
    pub capture: Option<PathBuf>,
    /// Bytes of each URB's data kept in the capture (as `--capture-snaplen`).
    pub capture_snaplen: Option<u32>,
    #[serde(default, rename = "device")]
    pub devices: Vec<DeviceConfig>,
}

/// Overrides of [`ServerConfig`]'s limits; absent keys keep the defaults.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    pub max_transfer_length: Option<u32>,
    pub max_iso_packets: Option<u32>,
    pub max_in_flight: Option<usize>,
    pub max_buffered_bytes: Option<usize>,
    pub max_total_buffered_bytes: Option<usize>,
    pub max_connections: Option<usize>,
    pub max_connections_per_address: Option<usize>,
    pub handshake_timeout_secs: Option<u64>,
}

impl LimitsConfig {
    pub fn apply(&self, config: &mut ServerConfig) {
        if let Some(v) = self.max_transfer_length {
            config.limits.max_transfer_length = v;
        }
        if let Some(v) = self.max_iso_packets {
            config.limits.max_iso_packets = v;
        }
        if let Some(v) = self.max_in_flight {
            config.max_in_flight = v;
        }
        if let Some(v) = self.max_buffered_bytes {
            config.max_buffered_bytes = v;
        }
        if let Some(v) = self.max_total_buffered_bytes {
            config.max_total_buffered_bytes = v;
        }
        if let Some(v) = self.max_connections {
            config.max_connections = v;
        }
        if let Some(v) = self.max_connections_per_address {
            config.max_connections_per_address = v;
        }
        if let Some(v) = self.handshake_timeout_secs {
            config.handshake_timeout = std::time::Duration::from_secs(v);
        }
    }
}

/// One virtual device. `busid` defaults to `0-<position in the list, from 1>`; `allow`
/// restricts it to some client networks (CIDR) on top of the server-wide list.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum DeviceConfig {
    /// HID boot keyboard; type into it with `usbipd virtual type`.
    Keyboard {
        busid: Option<String>,
        #[serde(default)]
        allow: Vec<IpNet>,
    },
    /// CDC-ACM serial port whose host side is a TCP listener.
    Serial {
        busid: Option<String>,
        #[serde(default)]
        allow: Vec<IpNet>,
        tcp: SocketAddr,
    },
    /// USB mass storage on an image file.
    Storage {
        busid: Option<String>,
        #[serde(default)]
        allow: Vec<IpNet>,
        image: PathBuf,
        #[serde(default)]
        read_only: bool,
    },
    /// Gadget-zero compatible source/sink and loopback device (0525:a4a0).
    Loopback {
        busid: Option<String>,
        #[serde(default)]
        allow: Vec<IpNet>,
    },
}

impl DeviceConfig {
    pub fn busid(&self) -> Option<&str> {
        match self {
            DeviceConfig::Keyboard { busid, .. }
            | DeviceConfig::Serial { busid, .. }
            | DeviceConfig::Storage { busid, .. }
            | DeviceConfig::Loopback { busid, .. } => busid.as_deref(),
        }
    }

    pub fn allow(&self) -> &[IpNet] {
        match self {
            DeviceConfig::Keyboard { allow, .. }
            | DeviceConfig::Serial { allow, .. }
            | DeviceConfig::Storage { allow, .. }
            | DeviceConfig::Loopback { allow, .. } => allow,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid configuration in {path}: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("invalid configuration in {path}: [limits] {key} = {value} is out of range ({range})")]
    Limit {
        path: PathBuf,
        key: &'static str,
        value: u64,
        range: String,
    },
}

/// The most connections a server may be configured for: far above what one process can serve
/// (each is a task and a socket), and far below what would make the connection semaphore panic.
pub const MAX_CONNECTIONS_CEILING: usize = 1 << 20;

impl LimitsConfig {
    /// Refuses values that would stop the server at start or make it unusable, naming the key.
    fn check(&self, path: &Path) -> Result<(), ConfigError> {
        let counts = [
            ("max_connections", self.max_connections),
            (
                "max_connections_per_address",
                self.max_connections_per_address,
            ),
            ("max_in_flight", self.max_in_flight),
        ];
        for (key, value) in counts {
            if let Some(v) = value {
                if v == 0 || v > MAX_CONNECTIONS_CEILING {
                    return Err(ConfigError::Limit {
                        path: path.to_owned(),
                        key,
                        value: v as u64,
                        range: format!("1..={MAX_CONNECTIONS_CEILING}"),
                    });
                }
            }
        }
        // A zero byte budget would close every client at its first byte.
        for (key, value) in [
            ("max_buffered_bytes", self.max_buffered_bytes),
            ("max_total_buffered_bytes", self.max_total_buffered_bytes),
        ] {
            if value == Some(0) {
                return Err(ConfigError::Limit {
                    path: path.to_owned(),
                    key,
                    value: 0,
                    range: "at least 1".into(),
                });
            }
        }
        Ok(())
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config: Config = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })?;
        config.limits.check(path)?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_out_of_range_are_refused_by_the_check_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        for (text, key) in [
            (
                "[limits]\nmax_connections = 9223372036854775807\n",
                "max_connections",
            ),
            ("[limits]\nmax_connections = 0\n", "max_connections"),
            (
                "[limits]\nmax_connections_per_address = 0\n",
                "max_connections_per_address",
            ),
            ("[limits]\nmax_in_flight = 0\n", "max_in_flight"),
            (
                "[limits]\nmax_total_buffered_bytes = 0\n",
                "max_total_buffered_bytes",
            ),
        ] {
            let path = dir.path().join("usbipd.toml");
            std::fs::write(&path, text).unwrap();
            let err = Config::load(&path).unwrap_err();
            assert!(
                matches!(err, ConfigError::Limit { key: k, .. } if k == key),
                "{err}"
            );
            assert!(err.to_string().contains(key), "{err}");
        }
        let path = dir.path().join("ok.toml");
        std::fs::write(&path, "[limits]\nmax_connections = 1048576\n").unwrap();
        assert!(Config::load(&path).is_ok());
    }

    #[test]
    fn parses_every_device_kind() {
        let c: Config = toml::from_str(
            r#"
            listen = ["127.0.0.1:3240", "[::1]:3240"]
            capture = "/tmp/usb.pcapng"
            capture_snaplen = 512
            [limits]
            max_in_flight = 64
            max_buffered_bytes = 1048576
            max_total_buffered_bytes = 4194304
            [[device]]
            kind = "keyboard"
            [[device]]
            kind = "serial"
            busid = "0-7"
            tcp = "127.0.0.1:3250"
            [[device]]
            kind = "storage"
            image = "/tmp/x.img"
            read_only = true
            [[device]]
            kind = "loopback"
            allow = ["10.0.0.0/8"]
            "#,
        )
        .unwrap();
        assert_eq!(c.listen.len(), 2);
        assert_eq!(c.capture, Some(PathBuf::from("/tmp/usb.pcapng")));
        assert_eq!(c.capture_snaplen, Some(512));
        assert_eq!(c.devices.len(), 4);
        assert_eq!(c.devices[1].busid(), Some("0-7"));
        assert_eq!(c.devices[3].allow().len(), 1);
        assert!(matches!(
            c.devices[2],
            DeviceConfig::Storage {
                read_only: true,
                ..
            }
        ));
        let mut sc = ServerConfig::default();
        c.limits.apply(&mut sc);
        assert_eq!(sc.max_in_flight, 64);
        assert_eq!(sc.max_buffered_bytes, 1 << 20);
        assert_eq!(sc.max_total_buffered_bytes, 4 << 20);
    }

    #[test]
    fn unknown_keys_and_kinds_are_errors() {
        assert!(toml::from_str::<Config>("[[device]]\nkind = \"mouse\"").is_err());
        assert!(
            toml::from_str::<Config>("[[device]]\nkind = \"keyboard\"\nbusid_typo = \"x\"")
                .is_err()
        );
        assert!(toml::from_str::<Config>("listn = []").is_err());
    }
}
