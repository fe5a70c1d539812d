//! Kernel TLS on the client's socket, so that vhci-hcd reads and writes TLS records itself and
//! this process can leave: TCP_ULP "tls", then the traffic secrets and record sequence numbers
//! rustls negotiated (`dangerous_extract_secrets`) given to the kernel with TLS_TX and TLS_RX
//! (`platform::kernel_tls`, where the kernel has it). Only after the import
//! reply, when neither side has anything buffered; the server sends no tickets or key
//! updates, so the kernel's receive path only ever meets application data.

use super::ClientConn;
use crate::platform::kernel_tls;

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
    {
        let (tcp, conn) = stream.get_ref();
        if conn.wants_write() || conn.is_handshaking() {
            return Ok(Outcome::Unavailable {
                stream: Box::new(stream),
                why: "the TLS session has data in flight".into(),
            });
        }
        if let Err(why) = kernel_tls::start_ulp(tcp) {
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
    kernel_tls::set_keys(&tcp, secrets.tx, secrets.rx)?;
    let std = tokio::net::TcpStream::into_std(tcp)?;
    std.set_nonblocking(false)?;
    Ok(Outcome::Enabled(std))
}
