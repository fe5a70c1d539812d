//! The first step of a connection on the TLS listener: the TLS 1.3 handshake, in which the
//! client's key must be one the trust store holds (else it is refused with an alert, and
//! logged, before any USB/IP byte), or, on a pairing connection, one line with a pairing code
//! that registers the key. What comes out is a stream the handshake and session code serve as
//! they serve TCP.
//!
//! An import over TLS of a device the extension holds: the extension takes a TCP socket and
//! the TLS session cannot leave this process, so the extension gets one end of a loopback TCP
//! connection and this process relays the session's plaintext through the other end
//! ([`hand_over_relayed`]).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::LazyConfigAcceptor;
use tracing::{info, warn};

use super::stream::{Conn, TlsConn};
use super::External;
use crate::tls::config::{self, Admit, ClientKeyVerifier, ALPN_PAIR};
use crate::tls::identity::IdentityError;
use crate::tls::pairing::{Pairing, Redeemed};
use crate::tls::relay;
use crate::tls::trust::Trust;
use crate::tls::{Fingerprint, Identity, SERVER_KEY};

/// What the TLS listener needs: the server's key, its trusted clients, its pairing codes.
pub struct TlsServer {
    identity: Identity,
    trust: Arc<Trust>,
    pairing: Pairing,
}

/// The pairing reply lines.
pub const PAIR_OK: &[u8] = b"ok\n";
pub const PAIR_REFUSED: &[u8] = b"refused\n";
/// A pairing line is a code and a newline: anything longer is not one.
const MAX_PAIR_LINE: usize = 64;

impl TlsServer {
    /// The server's identity from `state_dir` (created on first start, 0600), and its trust
    /// store and pairing codes there.
    pub fn open(state_dir: &Path) -> Result<TlsServer, IdentityError> {
        let (identity, created) = Identity::load_or_create(&state_dir.join(SERVER_KEY))?;
        if created {
            info!(fingerprint = %identity.fingerprint(), path = %state_dir.join(SERVER_KEY).display(), "created the server's TLS key");
        }
        Ok(TlsServer {
            identity,
            trust: Arc::new(Trust::new(state_dir)),
            pairing: Pairing::new(state_dir),
        })
    }

    pub fn fingerprint(&self) -> Fingerprint {
        self.identity.fingerprint()
    }

    /// Runs the TLS handshake (and the pairing line) within `timeout`; `None` when the client
    /// was refused or failed, which is logged here.
    pub(super) async fn accept(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
        timeout: Duration,
    ) -> Option<TlsConn> {
        match tokio::time::timeout(timeout, self.handshake(tcp, peer)).await {
            Ok(stream) => stream,
            Err(_) => {
                warn!(%peer, ?timeout, "closing TLS connection: handshake_timeout exceeded");
                None
            }
        }
    }

    async fn handshake(&self, tcp: TcpStream, peer: SocketAddr) -> Option<TlsConn> {
        let start = match LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp).await {
            Ok(start) => start,
            Err(e) => {
                warn!(%peer, error = %e, "closing TLS connection: bad ClientHello");
                return None;
            }
        };
        let pairing = start
            .client_hello()
            .alpn()
            .is_some_and(|mut protocols| protocols.any(|p| p == ALPN_PAIR));
        let verifier = ClientKeyVerifier::new(if pairing {
            Admit::AnyForPairing
        } else {
            Admit::Trusted(self.trust.clone())
        });
        let server_config = match config::server_config(&self.identity, verifier.clone()) {
            Ok(c) => Arc::new(c),
            Err(e) => {
                warn!(%peer, error = %e, "closing TLS connection: no TLS configuration");
                return None;
            }
        };
        let mut stream = match start.into_stream(server_config).await {
            Ok(stream) => stream,
            Err(e) => {
                match verifier.seen() {
                    Some((key, false)) => {
                        warn!(%peer, client_key = %key, "TLS connection refused: client key not trusted (usbipd trust add {key}, or pair it with usbipd pair)")
                    }
                    // The client's verifier refused this server's key (changed, or not the
                    // pinned one): the client tells its user both fingerprints.
                    _ if e.to_string().contains("received fatal alert") => {
                        warn!(%peer, error = %e, "closing TLS connection: the client refused the handshake (does it know another key for this server?)")
                    }
                    _ => warn!(%peer, error = %e, "closing TLS connection: handshake failed"),
                }
                return None;
            }
        };
        let Some((key, _)) = verifier.seen() else {
            warn!(%peer, "closing TLS connection: the client presented no key");
            return None;
        };
        if pairing && !self.pair(&mut stream, peer, key).await {
            return None;
        }
        info!(%peer, client_key = %key, "TLS client admitted");
        Some(stream)
    }

    /// Reads the pairing line, trusts `key` when the code is valid (or it is trusted already)
    /// and answers; false when the client is refused.
    async fn pair(&self, stream: &mut TlsConn, peer: SocketAddr, key: Fingerprint) -> bool {
        let code = match read_line(stream).await {
            Ok(code) => code,
            Err(e) => {
                warn!(%peer, client_key = %key, error = %e, "closing TLS connection: no pairing line");
                return false;
            }
        };
        let admitted = match self.trust.contains(&key) {
            Ok(true) => true,
            Ok(false) => match self.pairing.redeem(&code) {
                Ok(Redeemed::Accepted) => {
                    match self.trust.add(key, &format!("paired from {}", peer.ip())) {
                        Ok(_) => {
                            info!(%peer, client_key = %key, "client key trusted: pairing code accepted");
                            true
                        }
                        Err(e) => {
                            warn!(%peer, client_key = %key, error = %e, "pairing: cannot save the trusted key");
                            false
                        }
                    }
                }
                Ok(Redeemed::Refused { voided }) => {
                    warn!(%peer, client_key = %key, voided_pending_codes = voided, "TLS connection refused: wrong or expired pairing code");
                    false
                }
                Err(e) => {
                    warn!(%peer, error = %e, "pairing: cannot read the pairing codes");
                    false
                }
            },
            Err(e) => {
                warn!(%peer, error = %e, "pairing: cannot read the trust store");
                false
            }
        };
        let reply = if admitted { PAIR_OK } else { PAIR_REFUSED };
        let sent = async {
            stream.write_all(reply).await?;
            stream.flush().await
        };
        if let Err(e) = sent.await {
            warn!(%peer, error = %e, "pairing reply not sent");
            return false;
        }
        admitted
    }
}

/// One line of at most [`MAX_PAIR_LINE`] bytes, read byte by byte so that nothing after it
/// is consumed.
async fn read_line(stream: &mut (impl AsyncRead + Unpin)) -> std::io::Result<String> {
    let mut line = Vec::new();
    loop {
        let byte = stream.read_u8().await?;
        if byte == b'\n' {
            break;
        }
        if line.len() == MAX_PAIR_LINE {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "pairing line too long",
            ));
        }
        line.push(byte);
    }
    String::from_utf8(line)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "pairing line not UTF-8"))
}

/// Hands the import of `busid` (a device `external` holds) to the extension through a loopback
/// relay of `stream`'s plaintext, and relays until either side closes (then closes the other); `refusal` is the reply
/// sent when the extension does not take it.
pub(super) async fn hand_over_relayed<S: Conn>(
    mut stream: S,
    peer: SocketAddr,
    busid: String,
    leftover: BytesMut,
    external: &Arc<dyn External>,
    refusal: &[u8],
) {
    let (ours, theirs) = match relay::tcp_loopback_pair().await {
        Ok(pair) => pair,
        Err(e) => {
            warn!(%peer, %busid, error = %e, "import refused: no loopback relay to the extension");
            let _ = super::handshake::send(&mut stream, refusal).await;
            return;
        }
    };
    if external
        .import(theirs, peer, busid.clone(), leftover)
        .await
        .is_err()
    {
        info!(%peer, %busid, "import refused: no such device");
        let _ = super::handshake::send(&mut stream, refusal).await;
        return;
    }
    info!(%peer, %busid, "TLS import handed to the extension; relaying its plaintext");
    let closed_first = match relay::relay_until_either_ends(stream, ours).await {
        relay::Ended::Tls => "the client",
        relay::Ended::Ours => "the extension's session",
    };
    info!(%peer, %busid, closed_first, "TLS relay to the extension ended");
}
