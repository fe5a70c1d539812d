//! Which server and which of its devices: `HOST[:PORT]` to a socket address target, and a
//! `--busid` or `--hardware-id` to the busid to import.

use usbip_proto::ExportedDevice;

/// `HOST`, `HOST:PORT`, `IPV6`, `[IPV6]:PORT` to what `lookup_host` takes (the USB/IP port,
/// 3240, when none is given).
pub fn socket_target(host: &str) -> String {
    socket_target_on(host, usbip_proto::USBIP_PORT)
}

/// As [`socket_target`], with `port` when none is given (3241 for TLS).
pub fn socket_target_on(host: &str, port: u16) -> String {
    let bare_v6 = host.parse::<std::net::Ipv6Addr>().is_ok();
    if bare_v6 {
        format!("[{host}]:{port}")
    } else if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:{port}")
    }
}

/// What to import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    Busid(String),
    HardwareId { vid: u16, pid: u16 },
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Selector::Busid(b) => write!(f, "busid {b}"),
            Selector::HardwareId { vid, pid } => write!(f, "hardware id {vid:04x}:{pid:04x}"),
        }
    }
}

/// The busid of the first exported device `selector` names, if the server exports one.
pub fn pick<'a>(devices: &'a [ExportedDevice], selector: &'a Selector) -> Option<&'a str> {
    match selector {
        Selector::Busid(b) => devices
            .iter()
            .any(|d| d.record.busid == *b)
            .then_some(b.as_str()),
        Selector::HardwareId { vid, pid } => devices
            .iter()
            .find(|d| d.record.id_vendor == *vid && d.record.id_product == *pid)
            .map(|d| d.record.busid.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use usbip_proto::{DeviceRecord, Speed};

    fn device(busid: &str, vid: u16, pid: u16) -> ExportedDevice {
        ExportedDevice {
            record: DeviceRecord {
                path: String::new(),
                busid: busid.into(),
                busnum: 1,
                devnum: 2,
                speed: Speed::High,
                id_vendor: vid,
                id_product: pid,
                bcd_device: 0,
                device_class: 0,
                device_subclass: 0,
                device_protocol: 0,
                configuration_value: 1,
                num_configurations: 1,
                num_interfaces: 1,
            },
            interfaces: vec![],
        }
    }

    #[test]
    fn targets_get_the_usbip_port_unless_given() {
        assert_eq!(socket_target("10.0.2.2"), "10.0.2.2:3240");
        assert_eq!(
            socket_target("host.lima.internal"),
            "host.lima.internal:3240"
        );
        assert_eq!(socket_target("10.0.2.2:4000"), "10.0.2.2:4000");
        assert_eq!(socket_target("fe80::1"), "[fe80::1]:3240");
        assert_eq!(socket_target("[fe80::1]:4000"), "[fe80::1]:4000");
    }

    #[test]
    fn a_hardware_id_picks_the_device_wherever_it_is() {
        let list = vec![device("1-1", 0x1209, 1), device("1-4.2", 0x0525, 0xa4a0)];
        let by_id = Selector::HardwareId {
            vid: 0x0525,
            pid: 0xa4a0,
        };
        assert_eq!(pick(&list, &by_id), Some("1-4.2"));
        assert_eq!(pick(&list, &Selector::Busid("1-1".into())), Some("1-1"));
        assert_eq!(pick(&list, &Selector::Busid("2-1".into())), None);
        let absent = Selector::HardwareId { vid: 1, pid: 2 };
        assert_eq!(pick(&list, &absent), None);
    }
}
