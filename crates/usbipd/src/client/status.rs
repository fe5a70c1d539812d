//! vhci-hcd's sysfs `status` files as data: parse them, pick a free port for a device's speed,
//! and format what is written to `attach` and `detach`. Pure functions; the I/O is in `sysfs.rs`.
//!
//! A `status` line (Linux >= 4.13) is `hub port sta spd dev sockfd local_busid`, e.g.
//! `hs  0000 006 003 00010002 000003 1-1`: hub `hs` (USB 2 ports) or `ss` (USB 3 ports), the
//! port number used by `attach`/`detach` (counted over all controllers), the port's state, the
//! device's speed and devid, and the busid of the device on the VM's side.

use serde::Serialize;
use usbip_proto::Speed;

/// The kernel's `enum usbip_device_status` values for a vhci port.
const PORT_FREE: u32 = 4;
const PORT_NOT_ASSIGNED: u32 = 5;
const PORT_USED: u32 = 6;
const PORT_ERROR: u32 = 7;

/// Which root hub of a vhci controller a port belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Hub {
    /// USB 2 (low, full, high speed devices).
    Hs,
    /// USB 3 (super speed devices).
    Ss,
}

impl Hub {
    /// The hub a device of this speed must be attached to.
    pub fn for_speed(speed: Speed) -> Hub {
        match speed {
            Speed::Super | Speed::SuperPlus => Hub::Ss,
            _ => Hub::Hs,
        }
    }
}

/// What a port is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PortState {
    Free,
    /// Attach in progress.
    NotAssigned,
    Used,
    /// The connection failed; the kernel frees the port shortly.
    Error,
    Unknown(u32),
}

impl PortState {
    fn from_code(code: u32) -> PortState {
        match code {
            PORT_FREE => PortState::Free,
            PORT_NOT_ASSIGNED => PortState::NotAssigned,
            PORT_USED => PortState::Used,
            PORT_ERROR => PortState::Error,
            other => PortState::Unknown(other),
        }
    }
}

/// One line of a `status` file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Port {
    pub hub: Hub,
    pub port: u32,
    pub state: PortState,
    /// The kernel's speed code (`usb_device_speed`), 0 when the port is free.
    pub speed: u32,
    pub devid: u32,
    /// The device's busid in this VM (`0-0` when free).
    pub local_busid: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StatusError {
    #[error("vhci status line {line}: {why}: {text:?}")]
    Malformed {
        line: usize,
        why: &'static str,
        text: String,
    },
}

/// Parses one `status` file (header line first). Blank lines are skipped.
pub fn parse_status(text: &str) -> Result<Vec<Port>, StatusError> {
    let mut ports = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let malformed = |why| StatusError::Malformed {
            line: n + 1,
            why,
            text: line.to_string(),
        };
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.is_empty() || (n == 0 && fields[0] == "hub") {
            continue;
        }
        if n == 0 && fields[0] == "prt" {
            return Err(malformed(
                "the format of kernels before 4.13 (no hub column)",
            ));
        }
        if fields.len() < 7 {
            return Err(malformed("expected 7 fields"));
        }
        let hub = match fields[0] {
            "hs" => Hub::Hs,
            "ss" => Hub::Ss,
            _ => return Err(malformed("hub is neither hs nor ss")),
        };
        let number = |s: &str, radix| u32::from_str_radix(s, radix);
        ports.push(Port {
            hub,
            port: number(fields[1], 10).map_err(|_| malformed("bad port number"))?,
            state: PortState::from_code(number(fields[2], 10).map_err(|_| malformed("bad state"))?),
            speed: number(fields[3], 10).map_err(|_| malformed("bad speed"))?,
            devid: number(fields[4], 16).map_err(|_| malformed("bad devid"))?,
            local_busid: fields[6].to_string(),
        });
    }
    Ok(ports)
}

/// The lowest free port on the hub a device of `speed` needs.
pub fn free_port(ports: &[Port], speed: Speed) -> Option<u32> {
    let hub = Hub::for_speed(speed);
    ports
        .iter()
        .filter(|p| p.hub == hub && p.state == PortState::Free)
        .map(|p| p.port)
        .min()
}

/// The ports with a device on them (attached, being attached, or failing).
pub fn attached(ports: &[Port]) -> Vec<&Port> {
    ports
        .iter()
        .filter(|p| p.state != PortState::Free)
        .collect()
}

/// The line written to `attach`: `<port> <sockfd> <devid> <speed>`.
pub fn attach_line(port: u32, sockfd: i32, devid: u32, speed: Speed) -> String {
    format!("{port} {sockfd} {devid} {}", speed as u32)
}

/// The line written to `detach`.
pub fn detach_line(port: u32) -> String {
    port.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `status` of a 6.1 kernel with 2 ports per hub: a high-speed keyboard on port 0 (devid
    /// 0x00000001, busid 3-1), a super-speed disk on port 2 (the first ss port).
    const RECORDED: &str = "\
hub port sta spd dev      sockfd local_busid
hs  0000 006 003 00000001 000003 3-1
hs  0001 004 000 00000000 000000 0-0
ss  0002 006 005 00000004 000004 4-1
ss  0003 004 000 00000000 000000 0-0
";

    #[test]
    fn parses_used_and_free_ports() {
        let ports = parse_status(RECORDED).unwrap();
        assert_eq!(ports.len(), 4);
        assert_eq!(
            ports[0],
            Port {
                hub: Hub::Hs,
                port: 0,
                state: PortState::Used,
                speed: 3,
                devid: 1,
                local_busid: "3-1".into()
            }
        );
        assert_eq!(ports[1].state, PortState::Free);
        assert_eq!(ports[2].hub, Hub::Ss);
        assert_eq!(ports[2].port, 2);
        assert_eq!(ports[2].devid, 4);
    }

    #[test]
    fn the_free_port_matches_the_speed() {
        let ports = parse_status(RECORDED).unwrap();
        assert_eq!(free_port(&ports, Speed::High), Some(1));
        assert_eq!(free_port(&ports, Speed::Full), Some(1));
        assert_eq!(free_port(&ports, Speed::Super), Some(3));
        let full = RECORDED.replace("hs  0001 004", "hs  0001 006");
        assert_eq!(free_port(&parse_status(&full).unwrap(), Speed::High), None);
    }

    #[test]
    fn the_second_controllers_ports_count_on() {
        // status.1 of the same machine: its ports are numbered after controller 0's
        let second = "hub port sta spd dev      sockfd local_busid\n\
                      hs  0004 004 000 00000000 000000 0-0\n\
                      ss  0006 004 000 00000000 000000 0-0\n";
        let mut ports = parse_status(RECORDED).unwrap();
        ports.extend(parse_status(second).unwrap());
        let ports: Vec<Port> = ports.into_iter().filter(|p| p.port != 1).collect();
        assert_eq!(free_port(&ports, Speed::High), Some(4));
    }

    #[test]
    fn attached_lists_what_is_not_free() {
        let ports = parse_status(RECORDED).unwrap();
        let used: Vec<u32> = attached(&ports).iter().map(|p| p.port).collect();
        assert_eq!(used, vec![0, 2]);
    }

    #[test]
    fn an_old_or_garbled_status_is_an_error_naming_the_line() {
        let old = "prt sta spd bus dev socket           local_busid\n\
                   000 004 000 000 000 0000000000000000 0-0\n";
        assert!(matches!(
            parse_status(old),
            Err(StatusError::Malformed { line: 1, .. })
        ));
        let garbled = RECORDED.replace("hs  0001 004", "hs  00x1 004");
        assert!(matches!(
            parse_status(&garbled),
            Err(StatusError::Malformed { line: 3, .. })
        ));
        let short = RECORDED.replace("ss  0003 004 000 00000000 000000 0-0", "ss  0003 004");
        assert!(matches!(
            parse_status(&short),
            Err(StatusError::Malformed { line: 5, .. })
        ));
    }

    #[test]
    fn the_lines_written_to_the_kernel() {
        assert_eq!(attach_line(9, 3, 0x0001_0002, Speed::Super), "9 3 65538 5");
        assert_eq!(attach_line(0, 7, 4, Speed::High), "0 7 4 3");
        assert_eq!(detach_line(12), "12");
    }
}
