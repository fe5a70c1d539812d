//! The extension's IPC protocol: versioned JSON messages on a Unix stream socket, one
//! request and one response per message, the client's TCP socket riding along (SCM_RIGHTS)
//! with an import. `peer` authenticates, `server` validates and dispatches, `client` asks.
//!
//! Every message is at most [`MAX_MESSAGE`] bytes; every field a peer sends is checked here
//! before anything acts on it.

pub mod client;
pub mod codes;
pub mod peer;
pub mod server;
pub mod signature;
pub mod socket;

use serde::{Deserialize, Serialize};

pub use codes::{ErrorCode, OsCode};

/// The protocol version this build speaks. A peer with another one gets `UnsupportedVersion`.
pub const PROTOCOL_VERSION: u32 = 1;
/// The largest message either side sends or accepts.
pub const MAX_MESSAGE: usize = 64 * 1024;
/// Bytes of a client's stream that may ride along with an import (what followed OP_REQ_IMPORT).
pub const MAX_LEFTOVER: usize = 4096;
/// The longest busid USB/IP can carry (32 bytes with the NUL).
pub const MAX_BUSID: usize = 31;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestMessage {
    pub version: u32,
    pub request: Request,
    /// The answer to a [`Response::Challenge`] of this connection (where signatures are
    /// checked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseMessage {
    pub version: u32,
    pub response: Response,
}

/// A connection's limits as the daemon is configured (`[limits]`), so that a session handed
/// to the extension is held to what the user set. Each is checked against a ceiling: the
/// extension never lets a peer make it hold more than that.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionLimits {
    pub max_transfer_length: u32,
    pub max_iso_packets: u32,
    pub max_in_flight: u32,
    pub max_buffered_bytes: u64,
    /// The daemon's server-wide budget: the extension counts all the sessions it hosts against
    /// it. `None` (left out) when the daemon keeps the default, so that an older extension,
    /// which refuses unknown fields, still takes imports from it; the extension's own default
    /// applies then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_total_buffered_bytes: Option<u64>,
}

impl SessionLimits {
    /// Ceilings: 64 MiB transfers (4x usbfs's default cap), 4096 iso packets (4x the kernel's
    /// USBIP_MAX_ISO_PACKETS), 65536 URBs, 4 GiB buffered per connection. The server-wide
    /// budget only ever closes sessions sooner, so any value from 1 up is safe to take.
    const CEILING: SessionLimits = SessionLimits {
        max_transfer_length: 64 << 20,
        max_iso_packets: 4096,
        max_in_flight: 65536,
        max_buffered_bytes: 4 << 30,
        max_total_buffered_bytes: Some(usize::MAX as u64),
    };

    pub fn validate(&self) -> Result<(), IpcError> {
        let c = SessionLimits::CEILING;
        let fields = [
            (
                "max_transfer_length",
                u64::from(self.max_transfer_length),
                u64::from(c.max_transfer_length),
            ),
            (
                "max_iso_packets",
                u64::from(self.max_iso_packets),
                u64::from(c.max_iso_packets),
            ),
            (
                "max_in_flight",
                u64::from(self.max_in_flight),
                u64::from(c.max_in_flight),
            ),
            (
                "max_buffered_bytes",
                self.max_buffered_bytes,
                c.max_buffered_bytes,
            ),
            (
                "max_total_buffered_bytes",
                self.max_total_buffered_bytes.unwrap_or(1),
                c.max_total_buffered_bytes.unwrap_or(u64::MAX),
            ),
        ];
        for (name, value, ceiling) in fields {
            if value == 0 || value > ceiling {
                return Err(IpcError::new(
                    ErrorCode::InvalidRequest,
                    format!("{name} {value} is outside 1..={ceiling}"),
                ));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Health, claims, recent errors.
    Status,
    /// The devices plugged into the host (ids and kernel driver only).
    HostDevices,
    Bind {
        busid: String,
    },
    Unbind {
        busid: String,
    },
    UnbindAll,
    /// The bound devices as an encoded OP_REP_DEVLIST, for the daemon's device list.
    Exported,
    /// A client asked to import `busid`; its TCP socket is attached to this message. The
    /// extension answers the client (OP_REP_IMPORT) and runs the session.
    Import {
        busid: String,
        peer: String,
        /// Hex of the bytes that followed the import request.
        leftover: String,
        /// The daemon's per-connection limits, for the session the extension runs; absent
        /// from older daemons (the extension's defaults apply).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limits: Option<SessionLimits>,
    },
    /// Turns this connection into a stream of [`Event`]s.
    Subscribe,
    /// Ends the client session of `busid` (of every imported device when `None`); the devices
    /// stay bound and claimed.
    Detach {
        busid: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Response {
    /// Not answered yet: send the request again with this nonce. Where peers' code signatures
    /// are checked, only a request written after the check is served: one written before (and
    /// its writer then replaced by a signed program through exec) cannot know the nonce.
    Challenge {
        nonce: String,
    },
    Status(StatusReport),
    HostDevices(Vec<BusDeviceReport>),
    Bound(ClaimInfo),
    Unbound {
        busids: Vec<String>,
    },
    /// Hex of an OP_REP_DEVLIST message.
    Exported {
        devlist: String,
    },
    /// The import was handed over; the client has been (or is being) answered.
    Accepted,
    /// The sessions ended by a detach: busid and client address of each.
    Detached {
        sessions: Vec<DetachedSession>,
    },
    Subscribed,
    Event(Event),
    Error(IpcError),
}

/// One client session that a detach ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DetachedSession {
    pub busid: String,
    pub client: String,
}

impl DetachedSession {
    pub fn new(busid: impl Into<String>, client: std::net::SocketAddr) -> DetachedSession {
        DetachedSession {
            busid: busid.into(),
            client: client.to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}{}", os.map(|o| format!(" ({o})")).unwrap_or_default())]
pub struct IpcError {
    pub code: ErrorCode,
    pub message: String,
    pub os: Option<OsCode>,
}

impl IpcError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> IpcError {
        IpcError {
            code,
            message: message.into(),
            os: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    pub health: Health,
    pub claims: Vec<ClaimInfo>,
    pub errors: Vec<ErrorEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    pub running: bool,
    pub pid: u32,
    pub uptime_secs: u64,
    pub version: String,
    pub protocol: u32,
    /// `embedded` (child of the daemon) or `service` (systemd, launchd, by hand).
    pub mode: String,
    /// `usbfs`, `iokit` or `virtual`.
    pub bus: String,
    /// What the start-up self-check found missing; empty when all is well.
    pub missing_privileges: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClaimInfo {
    pub busid: String,
    pub vid: u16,
    pub pid: u16,
    pub serial: Option<String>,
    /// `claiming`, `claimed`, `in use`, `absent` (unplugged, waiting) or `releasing`.
    pub state: String,
    pub client: Option<String>,
    /// The kernel driver that held the device when it was claimed.
    pub detached_driver: Option<String>,
}

/// A device on the extension's host bus as `Request::HostDevices` reports it: what the bus
/// knows without opening it, and whether it is bound. (The host backend's own description of
/// a device is `device::host::HostDeviceInfo`.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BusDeviceReport {
    pub busid: String,
    pub vid: u16,
    pub pid: u16,
    pub serial: Option<String>,
    pub driver: Option<String>,
    pub bound: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorEntry {
    /// Seconds since the Unix epoch.
    pub at: u64,
    pub busid: Option<String>,
    pub code: ErrorCode,
    pub os: Option<OsCode>,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A bind succeeded, or a claim was restored at start.
    Claimed,
    /// A bound device came back and was claimed again without user action.
    Reclaimed,
    /// A bound device disappeared; its claim was released and waits for it.
    Gone,
    /// Unbound: the device went back to its kernel driver.
    Released,
    /// A claim attempt failed.
    ClaimFailed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventKind,
    pub busid: String,
    pub vid: u16,
    pub pid: u16,
}

/// `1-2`, `1-2.3`, `12-1.4.2`: a bus number, a dash, dot-separated port numbers.
pub fn validate_busid(busid: &str) -> Result<(), IpcError> {
    let bad = || {
        IpcError::new(
            ErrorCode::InvalidBusid,
            format!("not a busid: {:?}", truncate(busid, 40)),
        )
    };
    if busid.is_empty() || busid.len() > MAX_BUSID {
        return Err(bad());
    }
    let (bus, ports) = busid.split_once('-').ok_or_else(bad)?;
    let number = |s: &str| !s.is_empty() && s.len() <= 3 && s.bytes().all(|b| b.is_ascii_digit());
    // USB allows at most five hubs between the root port and a device: six port numbers.
    if !number(bus) || ports.split('.').count() > 6 || !ports.split('.').all(number) {
        return Err(bad());
    }
    Ok(())
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn from_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busids_are_validated() {
        for ok in ["1-2", "1-2.3", "12-1.4.2", "0-1"] {
            assert!(validate_busid(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "1",
            "-2",
            "1-",
            "1-2.",
            "1-.2",
            "a-b",
            "1-2 ",
            "../1-2",
            "1-2;rm",
            "1-1.1.1.1.1.1.1.1.1",
        ] {
            let e = validate_busid(bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidBusid, "{bad}");
        }
    }

    #[test]
    fn hex_round_trip_and_rejects_junk() {
        assert_eq!(
            from_hex(&to_hex(&[0, 1, 0xab, 0xff])).unwrap(),
            vec![0, 1, 0xab, 0xff]
        );
        assert!(from_hex("abc").is_none());
        assert!(from_hex("zz").is_none());
    }

    #[test]
    fn messages_refuse_unknown_fields() {
        let ok = r#"{"version":1,"request":{"bind":{"busid":"1-2"}}}"#;
        assert!(serde_json::from_str::<RequestMessage>(ok).is_ok());
        let extra = r#"{"version":1,"request":{"bind":{"busid":"1-2","force":true}}}"#;
        assert!(serde_json::from_str::<RequestMessage>(extra).is_err());
    }
}
