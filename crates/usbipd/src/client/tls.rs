//! The client's side of a TLS connection to a server's `--listen-tls`: its own key (created
//! in its state directory on first use), the server key it expects (pinned with
//! `--fingerprint`, recorded at first contact, or refused when it changed, with the old and
//! new fingerprints), and the pairing line when `--pair` was given.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::tls::config::{self, ServerKeyVerifier};
use crate::tls::known_servers::{Expect, KnownServers};
use crate::tls::{Fingerprint, Identity, CLIENT_KEY};

/// A TLS connection to a server, ready for USB/IP.
pub use crate::tls::ClientConn;

pub struct ClientTls {
    identity: Identity,
    known: KnownServers,
    pin: Option<Fingerprint>,
}

impl ClientTls {
    /// The client's key and known servers from `state_dir`; `pin` is `--fingerprint`.
    pub fn open(state_dir: &Path, pin: Option<Fingerprint>) -> anyhow::Result<ClientTls> {
        let (identity, created) = Identity::load_or_create(&state_dir.join(CLIENT_KEY))?;
        if created {
            eprintln!(
                "usbipd: created this client's key {} in {}",
                identity.fingerprint(),
                state_dir.join(CLIENT_KEY).display()
            );
        }
        Ok(ClientTls {
            identity,
            known: KnownServers::new(state_dir),
            pin,
        })
    }

    pub fn fingerprint(&self) -> Fingerprint {
        self.identity.fingerprint()
    }

    /// Connects to `addr` (known as `name`, `HOST:PORT`), checks the server's key and, with
    /// `pair`, registers this client's key with the code.
    pub async fn connect(
        &self,
        name: &str,
        addr: SocketAddr,
        pair: Option<&str>,
    ) -> anyhow::Result<ClientConn> {
        let expect = self.known.expect(name, self.pin)?;
        let verifier = ServerKeyVerifier::new(expect);
        let tls_config = config::client_config(&self.identity, verifier.clone(), pair.is_some())?;
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| anyhow::anyhow!("{addr}: cannot connect: {e}"))?;
        tcp.set_nodelay(true)?;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(tls_config));
        let mut stream = match connector.connect(config::server_name(), tcp).await {
            Ok(s) => s,
            Err(e) => {
                return Err(match (verifier.seen(), expect) {
                    (Some(seen), Expect::Known(old)) if seen != old => anyhow::anyhow!(
                        "{name}: THE SERVER'S KEY CHANGED: known {old}, now {seen}. Someone may be \
                         intercepting the connection; if the server's key was replaced on purpose, \
                         check the new one on the server (usbipd pair prints it) and pass \
                         --fingerprint {seen}"
                    ),
                    (Some(seen), Expect::Pinned(pin)) if seen != pin => anyhow::anyhow!(
                        "{name}: the server's key {seen} is not the one given with --fingerprint ({pin})"
                    ),
                    _ => anyhow::anyhow!("{addr}: TLS handshake failed: {e}"),
                })
            }
        };
        let Some(seen) = verifier.seen() else {
            anyhow::bail!("{addr}: the server presented no key");
        };
        match expect {
            Expect::FirstUse => {
                self.known.record(name, seen)?;
                eprintln!(
                    "usbipd: first connection to {name}: its key {seen} is now pinned in {}",
                    self.known.path().display()
                );
            }
            Expect::Pinned(_) => self.known.record(name, seen)?,
            Expect::Known(_) => {}
        }
        if let Some(code) = pair {
            self.pair(&mut stream, name, code).await?;
        }
        Ok(stream)
    }

    async fn pair(&self, stream: &mut ClientConn, name: &str, code: &str) -> anyhow::Result<()> {
        let sent = async {
            stream
                .write_all(format!("{}\n", code.trim()).as_bytes())
                .await?;
            stream.flush().await
        };
        sent.await.map_err(|e| self.explain(name, e))?;
        let mut reply = Vec::new();
        loop {
            let byte = stream.read_u8().await.map_err(|e| self.explain(name, e))?;
            if byte == b'\n' || reply.len() > 16 {
                break;
            }
            reply.push(byte);
        }
        if reply == b"ok" {
            eprintln!(
                "usbipd: paired: {name} now trusts this client's key {}",
                self.fingerprint()
            );
            Ok(())
        } else {
            anyhow::bail!(
                "{name} refused the pairing code (wrong, used or expired: run `usbipd pair` on the server again)"
            )
        }
    }

    /// An error from the first exchange after the handshake, said plainly: a server that does
    /// not trust this client's key ends the handshake with an access-denied alert.
    pub fn explain(&self, name: &str, e: impl std::fmt::Display) -> anyhow::Error {
        let text = e.to_string();
        if text.contains("AccessDenied") || text.contains("CertificateUnknown") {
            anyhow::anyhow!(
                "{name} does not trust this client's key {key}: on the server run `usbipd trust add {key}`, \
                 or attach once with --pair CODE (from `usbipd pair` on the server)",
                key = self.fingerprint()
            )
        } else {
            anyhow::anyhow!("{name}: {text}")
        }
    }
}
