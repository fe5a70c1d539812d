//! Kernel TLS on the client's socket, so that vhci-hcd reads and writes TLS records itself and
//! this process can leave: TCP_ULP "tls", then the traffic secrets and record sequence numbers
//! rustls negotiated (`dangerous_extract_secrets`) given to the kernel with TLS_TX and TLS_RX
//! (through nix's socket options and libc's `linux/tls.h` structures). Only after the import
//! reply, when neither side has anything buffered; the server sends no tickets or key
//! updates, so the kernel's receive path only ever meets application data.

use super::ClientConn;

/// What [`try_enable`] did.
pub enum Outcome {
    /// The socket now does TLS in the kernel (blocking mode, ready for vhci-hcd).
    Enabled(std::net::TcpStream),
    /// The kernel has no TLS here (the socket is untouched): relay instead.
    Unavailable {
        stream: Box<ClientConn>,
        why: String,
    },
}

/// Moves the TLS session of `stream` into the kernel when it can; an error after the kernel
/// took the socket leaves nothing usable (the attach fails).
pub fn try_enable(stream: ClientConn) -> anyhow::Result<Outcome> {
    #[cfg(target_os = "linux")]
    {
        linux::try_enable(stream)
    }
    #[cfg(not(target_os = "linux"))]
    {
        Ok(Outcome::Unavailable {
            stream: Box::new(stream),
            why: "kernel TLS is a Linux feature".into(),
        })
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use super::*;
    use nix::sys::socket::setsockopt;
    use nix::sys::socket::sockopt::{TcpTlsRx, TcpTlsTx, TcpUlp, TlsCryptoInfo};
    use rustls::ConnectionTrafficSecrets;
    use tokio::net::TcpStream;

    pub(super) fn try_enable(stream: ClientConn) -> anyhow::Result<Outcome> {
        {
            let (tcp, conn) = stream.get_ref();
            if conn.wants_write() || conn.is_handshaking() {
                return Ok(Outcome::Unavailable {
                    stream: Box::new(stream),
                    why: "the TLS session has data in flight".into(),
                });
            }
            // Until TLS_TX/TLS_RX are set the ULP passes bytes through: a failure here leaves
            // the socket as it was.
            if let Err(e) = setsockopt(tcp, TcpUlp::default(), b"tls") {
                let why = match e {
                    nix::errno::Errno::ENOENT => "no tls module in this kernel (CONFIG_TLS)".into(),
                    e => format!("TCP_ULP tls: {e}"),
                };
                return Ok(Outcome::Unavailable {
                    stream: Box::new(stream),
                    why,
                });
            }
        }
        let (tcp, conn) = stream.into_inner();
        let secrets = conn
            .dangerous_extract_secrets()
            .map_err(|e| anyhow::anyhow!("kernel TLS: cannot take the session's keys: {e}"))?;
        let (tx_seq, tx) = secrets.tx;
        let (rx_seq, rx) = secrets.rx;
        setsockopt(&tcp, TcpTlsTx, &crypto_info(tx_seq, tx)?)
            .map_err(|e| anyhow::anyhow!("kernel TLS: TLS_TX: {e}"))?;
        setsockopt(&tcp, TcpTlsRx, &crypto_info(rx_seq, rx)?)
            .map_err(|e| anyhow::anyhow!("kernel TLS: TLS_RX: {e}"))?;
        let std = TcpStream::into_std(tcp)?;
        std.set_nonblocking(false)?;
        Ok(Outcome::Enabled(std))
    }

    /// The kernel's view of one direction: TLS 1.3, the cipher, key, the IV split into salt
    /// (its first 4 bytes) and explicit IV (the rest) for AES-GCM, and the next record number.
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
}
