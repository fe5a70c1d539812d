//! The daemon's TCP limits as they ride with an import to the extension, and back: the one place
//! that knows both the IPC message ([`SessionLimits`]) and the server's [`ServerConfig`].

use crate::ipc::SessionLimits;
use crate::server::ServerConfig;

/// The limits of a configured server, as an import carries them. The server-wide budget is
/// left out at its default, for an older extension that refuses unknown fields.
pub fn session_limits(config: &ServerConfig) -> SessionLimits {
    let total = config.max_total_buffered_bytes;
    SessionLimits {
        max_transfer_length: config.limits.max_transfer_length,
        max_iso_packets: config.limits.max_iso_packets,
        max_in_flight: u32::try_from(config.max_in_flight).unwrap_or(u32::MAX),
        max_buffered_bytes: config.max_buffered_bytes as u64,
        max_total_buffered_bytes: (total != ServerConfig::default().max_total_buffered_bytes)
            .then_some(total as u64),
    }
}

/// `config` with `limits` (validated) in place of its own. The count against the server-wide
/// budget stays `config`'s: every session applied to one config shares it.
pub fn apply(limits: &SessionLimits, config: &ServerConfig) -> ServerConfig {
    let mut config = config.clone();
    config.limits.max_transfer_length = limits.max_transfer_length;
    config.limits.max_iso_packets = limits.max_iso_packets;
    config.max_in_flight = limits.max_in_flight as usize;
    config.max_buffered_bytes = usize::try_from(limits.max_buffered_bytes).unwrap_or(usize::MAX);
    if let Some(total) = limits.max_total_buffered_bytes {
        config.max_total_buffered_bytes = usize::try_from(total).unwrap_or(usize::MAX);
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipc::{ErrorCode, Request};

    #[test]
    fn session_limits_ride_with_an_import_within_ceilings() {
        let limits = session_limits(&ServerConfig::default());
        assert_eq!(limits.validate(), Ok(()));
        let smaller = SessionLimits {
            max_transfer_length: 4096,
            ..limits
        };
        let applied = apply(&smaller, &ServerConfig::default());
        assert_eq!(applied.limits.max_transfer_length, 4096);
        assert_eq!(applied.max_in_flight, ServerConfig::default().max_in_flight);

        for bad in [
            SessionLimits {
                max_transfer_length: 0,
                ..limits
            },
            SessionLimits {
                max_in_flight: 1 << 20,
                ..limits
            },
            SessionLimits {
                max_buffered_bytes: u64::MAX,
                ..limits
            },
        ] {
            assert_eq!(bad.validate().unwrap_err().code, ErrorCode::InvalidRequest);
        }

        // An older daemon's import has no limits; it still parses.
        let old = r#"{"import":{"busid":"1-2","peer":"10.0.0.1:5000","leftover":""}}"#;
        match serde_json::from_str::<Request>(old).unwrap() {
            Request::Import { limits, .. } => assert_eq!(limits, None),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_server_wide_budget_rides_with_the_limits_and_defaults_when_absent() {
        let config = ServerConfig {
            max_total_buffered_bytes: 8 << 20,
            ..ServerConfig::default()
        };
        let limits = session_limits(&config);
        assert_eq!(limits.max_total_buffered_bytes, Some(8 << 20));
        let json = serde_json::to_string(&limits).unwrap();
        let back: SessionLimits = serde_json::from_str(&json).unwrap();
        assert_eq!(back, limits);

        // Applied over the extension's config: the daemon's budget, the extension's one count.
        let host = ServerConfig::default();
        let applied = apply(&back, &host);
        assert_eq!(applied.max_total_buffered_bytes, 8 << 20);
        assert!(applied.total_buffered.same_count(&host.total_buffered));

        // An older daemon's limits have no budget: the default applies.
        let older = r#"{"max_transfer_length":1048576,"max_iso_packets":1024,"max_in_flight":4096,"max_buffered_bytes":134217728}"#;
        let older: SessionLimits = serde_json::from_str(older).unwrap();
        assert_eq!(older.max_total_buffered_bytes, None);
        let default = ServerConfig::default().max_total_buffered_bytes;
        assert_eq!(apply(&older, &host).max_total_buffered_bytes, default);
        assert_eq!(
            session_limits(&ServerConfig::default()).max_total_buffered_bytes,
            None
        );
        assert_eq!(older.validate(), Ok(()));
        // A daemon at the default leaves the field out, for an older extension to take.
        let json = serde_json::to_string(&older).unwrap();
        assert!(!json.contains("max_total_buffered_bytes"), "{json}");

        let zero = SessionLimits {
            max_total_buffered_bytes: Some(0),
            ..limits
        };
        assert_eq!(zero.validate().unwrap_err().code, ErrorCode::InvalidRequest);
    }
}
