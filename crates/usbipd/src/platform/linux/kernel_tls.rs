//! Kernel TLS on a TCP socket (Linux TCP_ULP "tls"): the upper-layer protocol, then the traffic
//! secrets and record sequence numbers of each direction (TLS_TX, TLS_RX), through nix's socket
//! options and libc's `linux/tls.h` structures. What to hand over and when is `tls::ktls`'s.

use std::os::fd::AsFd;

use nix::sys::socket::setsockopt;
use nix::sys::socket::sockopt::{TcpTlsRx, TcpTlsTx, TcpUlp, TlsCryptoInfo};
use rustls::ConnectionTrafficSecrets;

/// Puts the TLS upper-layer protocol on `socket`. Until the keys are set it passes bytes
/// through, so a failure here leaves the socket as it was; the error says why in words.
pub fn start_ulp(socket: &impl AsFd) -> Result<(), String> {
    setsockopt(socket, TcpUlp::default(), b"tls").map_err(|e| match e {
        nix::errno::Errno::ENOENT => "no tls module in this kernel (CONFIG_TLS)".to_string(),
        e => format!("TCP_ULP tls: {e}"),
    })
}

/// Gives the kernel both directions' keys (`(next record number, secrets)`, as rustls's
/// `dangerous_extract_secrets` returns them): from here on the kernel encrypts and decrypts.
pub fn set_keys(
    socket: &impl AsFd,
    tx: (u64, ConnectionTrafficSecrets),
    rx: (u64, ConnectionTrafficSecrets),
) -> anyhow::Result<()> {
    setsockopt(socket, TcpTlsTx, &crypto_info(tx.0, tx.1)?)
        .map_err(|e| anyhow::anyhow!("kernel TLS: TLS_TX: {e}"))?;
    setsockopt(socket, TcpTlsRx, &crypto_info(rx.0, rx.1)?)
        .map_err(|e| anyhow::anyhow!("kernel TLS: TLS_RX: {e}"))?;
    Ok(())
}

/// The kernel's view of one direction: TLS 1.3, the cipher, key, the IV split into salt (its
/// first 4 bytes) and explicit IV (the rest) for AES-GCM, and the next record number.
fn crypto_info(seq: u64, secrets: ConnectionTrafficSecrets) -> anyhow::Result<TlsCryptoInfo> {
    let info = |cipher_type| libc::tls_crypto_info {
        version: libc::TLS_1_3_VERSION,
        cipher_type,
    };
    let rec_seq = seq.to_be_bytes();
    Ok(match secrets {
        ConnectionTrafficSecrets::Aes128Gcm { key, iv } => {
            let (salt, iv) = iv.as_ref().split_at(4);
            TlsCryptoInfo::Aes128Gcm(libc::tls12_crypto_info_aes_gcm_128 {
                info: info(libc::TLS_CIPHER_AES_GCM_128),
                iv: iv.try_into()?,
                key: key.as_ref().try_into()?,
                salt: salt.try_into()?,
                rec_seq,
            })
        }
        ConnectionTrafficSecrets::Aes256Gcm { key, iv } => {
            let (salt, iv) = iv.as_ref().split_at(4);
            TlsCryptoInfo::Aes256Gcm(libc::tls12_crypto_info_aes_gcm_256 {
                info: info(libc::TLS_CIPHER_AES_GCM_256),
                iv: iv.try_into()?,
                key: key.as_ref().try_into()?,
                salt: salt.try_into()?,
                rec_seq,
            })
        }
        ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
            TlsCryptoInfo::Chacha20Poly1305(libc::tls12_crypto_info_chacha20_poly1305 {
                info: info(libc::TLS_CIPHER_CHACHA20_POLY1305),
                iv: iv.as_ref().try_into()?,
                key: key.as_ref().try_into()?,
                salt: [],
                rec_seq,
            })
        }
        _ => anyhow::bail!("kernel TLS: the negotiated cipher is not one the kernel takes"),
    })
}
