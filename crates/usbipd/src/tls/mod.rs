//! USB/IP inside TLS 1.3 between our two ends (issue 17), with identities as SSH has them.
//!
//! `identity` (key pairs, key lines, fingerprints), `trust` (the server's trusted client keys),
//! `pairing` (one-time codes that register a client key), `known_servers` (the client's pinned
//! server keys), `config` (rustls configurations and the verifiers that compare keys), `relay`
//! (a socket pair relayed through TLS for vhci-hcd) and `ktls` (kernel TLS on the socket, where
//! the kernel has it).

pub mod config;
pub mod identity;
pub mod known_servers;
pub mod ktls;
pub mod pairing;
pub mod relay;
pub mod trust;

pub use identity::{Fingerprint, Identity, PublicKey};

/// A client's TLS connection to a server, as the relay and kernel TLS take it over.
pub type ClientConn = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// The TLS listener's port when `--listen-tls` names an address only.
pub const DEFAULT_TLS_PORT: u16 = 3241;

/// File names of the keys in a state directory.
pub const SERVER_KEY: &str = "server.key";
pub const CLIENT_KEY: &str = "client.key";
