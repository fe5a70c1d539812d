//! The relay path to vhci-hcd: the kernel gets one end of a Unix stream socket pair (it takes
//! any SOCK_STREAM socket) and this process copies between the other end and the TLS stream,
//! both ways, until either side closes. Used where kernel TLS is not available.

use std::os::unix::net::UnixStream as StdUnixStream;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::UnixStream;

/// Bytes per direction the copy moves at once: a whole 64 KiB URB and then some.
const BUFFER: usize = 256 * 1024;

/// A connected pair: the kernel's end (blocking, as vhci-hcd's receive thread wants it) and
/// ours (for the runtime).
pub fn socket_pair() -> std::io::Result<(StdUnixStream, UnixStream)> {
    let (kernel, ours) = StdUnixStream::pair()?;
    kernel.set_nonblocking(false)?;
    ours.set_nonblocking(true)?;
    Ok((kernel, UnixStream::from_std(ours)?))
}

/// Copies between `tls` and `ours` until both directions are done (one side's end is passed
/// on to the other as a shutdown). Returns the bytes moved to the kernel and from it.
pub async fn relay<S: AsyncRead + AsyncWrite + Unpin>(
    mut tls: S,
    mut ours: UnixStream,
) -> std::io::Result<(u64, u64)> {
    // (from the TLS side to ours, from ours to the TLS side)
    tokio::io::copy_bidirectional_with_sizes(&mut tls, &mut ours, BUFFER, BUFFER).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn bytes_cross_both_ways_and_a_close_ends_the_relay() {
        let (kernel, ours) = socket_pair().unwrap();
        let (server_side, mut server) = tokio::io::duplex(1024);
        let relay = tokio::spawn(relay(server_side, ours));
        let mut kernel = UnixStream::from_std({
            kernel.set_nonblocking(true).unwrap();
            kernel
        })
        .unwrap();
        kernel.write_all(b"to server").await.unwrap();
        let mut buf = [0u8; 9];
        server.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"to server");
        server.write_all(b"to kernel").await.unwrap();
        kernel.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"to kernel");
        drop(server);
        assert_eq!(
            kernel.read(&mut buf).await.unwrap(),
            0,
            "server's close reaches the kernel"
        );
        drop(kernel);
        let (down, up) = relay.await.unwrap().unwrap();
        assert_eq!((down, up), (9, 9));
    }
}
