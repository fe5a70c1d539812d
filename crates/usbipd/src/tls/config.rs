//! The rustls configurations of both ends and the verifiers that compare pinned keys.
//!
//! TLS 1.3 only, on ring, with raw public keys (RFC 7250) on both sides: the server admits a
//! client key that its trust store holds (or, on a pairing connection, any key that proves
//! possession, to be trusted once the code checks out); the client admits the server key it
//! pinned or recorded. Signatures are checked by rustls/webpki; we only compare fingerprints.
//! The server sends no session tickets, and neither side asks for key updates, so after the
//! handshake the stream carries application data records only (what kernel TLS needs).

use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls13_signature_with_raw_key, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, SubjectPublicKeyInfoDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, PeerIncompatible,
    SignatureScheme,
};

use super::identity::{Fingerprint, Identity};
use super::known_servers::Expect;
use super::trust::Trust;

/// ALPN of an ordinary connection: USB/IP inside.
pub const ALPN: &[u8] = b"usbip/1";
/// ALPN of a pairing connection: one line with the code first, then USB/IP.
pub const ALPN_PAIR: &[u8] = b"usbip-pair/1";
/// The name the client asks for; identity comes from the pinned key, not from names.
pub const SERVER_NAME: &str = "usbipd";

/// ring's provider with TLS_AES_128_GCM_SHA256 first (the client's order decides): the
/// cheapest suite for the kernel's AES-GCM (10 rounds, not 14), and as strong as the threat
/// model needs. The others stay for peers that lack it.
fn provider() -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .sort_by_key(|s| s.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    Arc::new(provider)
}

/// Which client keys a server connection admits.
#[derive(Debug)]
pub enum Admit {
    /// Those in the trust store (read at the handshake).
    Trusted(Arc<Trust>),
    /// Any key (a pairing connection: trusted only once its code is accepted).
    AnyForPairing,
}

/// The server's verifier of a client's raw public key; remembers the fingerprint it saw.
#[derive(Debug)]
pub struct ClientKeyVerifier {
    admit: Admit,
    provider: Arc<CryptoProvider>,
    seen: Mutex<Option<(Fingerprint, bool)>>,
}

impl ClientKeyVerifier {
    pub fn new(admit: Admit) -> Arc<ClientKeyVerifier> {
        Arc::new(ClientKeyVerifier {
            admit,
            provider: provider(),
            seen: Mutex::new(None),
        })
    }

    /// The client key presented, and whether it was admitted.
    pub fn seen(&self) -> Option<(Fingerprint, bool)> {
        *self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ClientCertVerifier for ClientKeyVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let fingerprint = Fingerprint::of(end_entity.as_ref());
        let admitted = match &self.admit {
            Admit::AnyForPairing => true,
            Admit::Trusted(trust) => match trust.contains(&fingerprint) {
                Ok(admitted) => admitted,
                Err(e) => {
                    tracing::error!(error = %e, "trust store unreadable: refusing TLS clients");
                    false
                }
            },
        };
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some((fingerprint, admitted));
        if admitted {
            Ok(ClientCertVerified::assertion())
        } else {
            Err(Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        tls12_refused()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_raw_key_tls13(&self.provider, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        raw_key_schemes(&self.provider)
    }

    fn requires_raw_public_keys(&self) -> bool {
        true
    }
}

/// The client's verifier of the server's raw public key against what it expects.
#[derive(Debug)]
pub struct ServerKeyVerifier {
    expect: Expect,
    provider: Arc<CryptoProvider>,
    seen: Mutex<Option<Fingerprint>>,
}

impl ServerKeyVerifier {
    pub fn new(expect: Expect) -> Arc<ServerKeyVerifier> {
        Arc::new(ServerKeyVerifier {
            expect,
            provider: provider(),
            seen: Mutex::new(None),
        })
    }

    /// The server key presented.
    pub fn seen(&self) -> Option<Fingerprint> {
        *self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ServerCertVerifier for ServerKeyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let fingerprint = Fingerprint::of(end_entity.as_ref());
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(fingerprint);
        if self.expect.admits(&fingerprint) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        tls12_refused()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_raw_key_tls13(&self.provider, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        raw_key_schemes(&self.provider)
    }

    fn requires_raw_public_keys(&self) -> bool {
        true
    }
}

/// Both verifiers refuse TLS 1.2: raw public keys are TLS 1.3 only here.
fn tls12_refused() -> Result<HandshakeSignatureValid, Error> {
    Err(Error::PeerIncompatible(PeerIncompatible::Tls12NotOffered))
}

/// Both verifiers check a TLS 1.3 signature against the peer's raw public key.
fn verify_raw_key_tls13(
    provider: &CryptoProvider,
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, Error> {
    verify_tls13_signature_with_raw_key(
        message,
        &SubjectPublicKeyInfoDer::from(cert.as_ref()),
        dss,
        &provider.signature_verification_algorithms,
    )
}

/// The signature schemes both verifiers accept: the provider's.
fn raw_key_schemes(provider: &CryptoProvider) -> Vec<SignatureScheme> {
    provider
        .signature_verification_algorithms
        .supported_schemes()
}

/// The server's configuration for one connection.
pub fn server_config(
    identity: &Identity,
    verifier: Arc<ClientKeyVerifier>,
) -> Result<rustls::ServerConfig, Error> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(
            rustls::server::AlwaysResolvesServerRawPublicKeys::new(identity.certified_key()),
        ));
    // Only application data after the handshake: a kernel-TLS client cannot take tickets.
    config.send_tls13_tickets = 0;
    config.alpn_protocols = vec![ALPN.to_vec(), ALPN_PAIR.to_vec()];
    Ok(config)
}

/// The client's configuration; `pairing` offers the pairing ALPN.
pub fn client_config(
    identity: &Identity,
    verifier: Arc<ServerKeyVerifier>,
    pairing: bool,
) -> Result<rustls::ClientConfig, Error> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(Arc::new(
            rustls::client::AlwaysResolvesClientRawPublicKeys::new(identity.certified_key()),
        ));
    config.alpn_protocols = vec![if pairing { ALPN_PAIR } else { ALPN }.to_vec()];
    config.resumption = rustls::client::Resumption::disabled();
    // Kernel TLS takes over the keys after the handshake.
    config.enable_secret_extraction = true;
    Ok(config)
}

/// The server name the client sends.
pub fn server_name() -> ServerName<'static> {
    ServerName::try_from(SERVER_NAME)
        .unwrap_or(ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()))
}
